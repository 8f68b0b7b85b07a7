"""Prefill / decode kernel speed of minicpmv-edge vs llama.cpp (llama-cpp-python) on the same
Qwen2-7B-shaped layer (hidden 3584, ffn 18944, 28 / 4 heads), single thread, CPU time.

    python bench/bench_kernels.py [--types q4_0 q4_K] [--keep DIR] [--threads 1 2] [--no-llama]

With --threads 2 the time is wall-clock (CPU time would count both cores); with 1 it is the
thread's CPU time. --no-llama times only ours (with a per-matrix breakdown) and prints the fraction
of the vpdpbusd peak measured by bench/cpp/peak_vnni when --peak GOP/s is given.

llama.cpp side: synthetic GGUFs (random blocks with small scales; timing only) with 1 and 3
layers. llama.cpp skips the FFN of unused tokens in the LAST layer, so the cost of one full layer
is (t(3 layers) - t(1 layer)) / 2. Process CPU time (getrusage) so that other processes on a
shared machine do not count. Ours: _core.matmul on the layer's 7 weight matrices with the same
512 tokens (the attention itself, norms, rope are not included: < 2% of the layer's ops).
Decode: one token through the 3-layer model vs our 7 matvecs x 3 layers, as weight GB/s.
Not a test: prints a table.
"""
import argparse
import os
import resource
import sys
import tempfile
import time

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T

H, F, NH, NKV, V, N = 3584, 18944, 28, 4, 1024, 512
SHAPES = [(H, H), (512, H), (512, H), (H, H), (F, H), (F, H), (H, F)]  # q k v o gate up down (rows, cols)


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def random_blocks(qt, rows, cols, rng):
    bs, ts = gguf.GGML_QUANT_SIZES[qt]
    raw = rng.integers(0, 256, (rows, cols // bs, ts), dtype=np.uint8)
    s = np.full(raw.shape[:2], 0.01, np.float16).view(np.uint8).reshape(*raw.shape[:2], 2)
    off = 208 if qt == T.Q6_K else 0
    raw[:, :, off:off + 2] = s
    if qt in (T.Q4_K, T.Q5_K):
        raw[:, :, 2:4] = s
    return raw.reshape(rows, -1)


def write_model(path, qt, layers, rng):
    w = gguf.GGUFWriter(path, "qwen2")
    w.add_context_length(4096); w.add_embedding_length(H); w.add_block_count(layers)
    w.add_feed_forward_length(F); w.add_head_count(NH); w.add_head_count_kv(NKV)
    w.add_rope_freq_base(1e6); w.add_layer_norm_rms_eps(1e-6)
    w.add_tokenizer_model("llama")
    w.add_token_list([b"<unk>", b"<s>", b"</s>"] + [f"t{i}".encode() for i in range(V - 3)])
    w.add_token_scores([0.0] * V); w.add_token_types([2, 3, 3] + [1] * (V - 3))
    w.add_bos_token_id(1); w.add_eos_token_id(2)
    f32 = lambda name, *shape: w.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(np.float32))
    f32("token_embd.weight", V, H); f32("output_norm.weight", H); f32("output.weight", V, H)
    names = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]
    for l in range(layers):
        f32(f"blk.{l}.attn_norm.weight", H); f32(f"blk.{l}.ffn_norm.weight", H)
        for b in ("attn_q", "attn_k", "attn_v"):
            f32(f"blk.{l}.{b}.bias", H if b == "attn_q" else 512)
        for name, (rows, cols) in zip(names, SHAPES):
            w.add_tensor(f"blk.{l}.{name}.weight", random_blocks(qt, rows, cols, rng), raw_dtype=qt)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()


def llama_times(path, threads=1):
    from llama_cpp import Llama
    llm = Llama(model_path=path, n_ctx=1024, n_batch=N, n_ubatch=N, n_threads=threads, n_threads_batch=threads,
                verbose=False)
    clock = cpu_seconds if threads == 1 else time.perf_counter
    toks = [3 + (i * 7) % (V - 3) for i in range(N)]
    pp = []
    for _ in range(3):
        llm.reset()
        c0 = clock(); llm.eval(toks); pp.append(clock() - c0)
    llm.reset(); llm.eval(toks[:8])
    tg = []
    for i in range(8):
        c0 = clock(); llm.eval([5 + i]); tg.append(clock() - c0)
    return min(pp), min(tg)


def ours(qt_name, rng, threads=1, reps=1, per_matrix=None):
    from minicpmv_edge import _core
    qt = T[qt_name.upper()]
    ws = [random_blocks(qt, r, c, rng) for r, c in SHAPES]
    x = {c: rng.standard_normal((N, c)).astype(np.float32) for c in (H, F)}
    clock = time.thread_time if threads == 1 else time.perf_counter
    mm = lambda w, r, c, xx: _core.matmul(qt_name, w, r, c, xx, n_threads=threads)
    pp = tg = 0.0
    for (r, c), w in zip(SHAPES, ws):
        mm(w, r, c, x[c][:4])
        best = 1e9
        for _ in range(reps):
            t0 = clock(); mm(w, r, c, x[c]); best = min(best, clock() - t0)
        pp += best
        if per_matrix is not None:
            per_matrix.append((r, c, best))
        best = 1e9
        for _ in range(5):
            t0 = clock(); mm(w, r, c, x[c][:1]); best = min(best, clock() - t0)
        tg += best
    layer_bytes = sum(w.nbytes for w in ws)
    return pp, tg, layer_bytes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--types", nargs="+", default=["q4_0", "q4_K"])
    ap.add_argument("--keep", default=None, help="directory for the synthetic GGUFs")
    ap.add_argument("--threads", nargs="+", type=int, default=[1])
    ap.add_argument("--no-llama", action="store_true", help="time ours only, per matrix")
    ap.add_argument("--reps", type=int, default=1, help="best of this many prefill calls per matrix (ours)")
    ap.add_argument("--peak", type=float, default=None, help="vpdpbusd peak GOP/s of one core (peak_vnni)")
    a = ap.parse_args()
    ops = 2.0 * N * sum(r * c for r, c in SHAPES)
    tmp = a.keep or tempfile.mkdtemp(prefix="mcv-bench-")
    print(f"one Qwen2-7B layer, {N} tokens; {ops / 1e9:.0f} GOP of matmul per layer; load {os.getloadavg()[0]:.1f}")
    names = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]
    if a.no_llama:
        for name in a.types:
            for th in a.threads:
                rng = np.random.default_rng(0)
                pm = []
                o_pp, _, _ = ours(name, rng, th, a.reps, pm)
                frac = lambda g: f"  {g / (a.peak * th):4.0%} of peak" if a.peak else ""
                g = ops / o_pp / 1e9
                print(f"{name:5s} prefill ours, {th} thread{'s' if th > 1 else ''} "
                      f"({'CPU' if th == 1 else 'wall'} time): {g:6.1f} GOP/s{frac(g)}")
                for nm, (r, c, t) in zip(names, pm):
                    gm = 2.0 * N * r * c / t / 1e9
                    print(f"      {nm:12s} {r:5d} x {c:5d}  {t * 1e3:8.1f} ms  {gm:6.1f} GOP/s{frac(gm)}")
        return 0
    for name, th in [(n, t) for n in a.types for t in a.threads]:
        rng = np.random.default_rng(0)
        qt = T[name.upper()]
        paths = {}
        for L in (1, 3):
            paths[L] = os.path.join(tmp, f"qwen2_{name}_{L}l.gguf")
            if not os.path.exists(paths[L]):
                write_model(paths[L], qt, L, rng)
        pp1, _ = llama_times(paths[1], th)
        pp3, tg3 = llama_times(paths[3], th)
        layer_bytes = sum(r * c for r, c in SHAPES) // gguf.GGML_QUANT_SIZES[qt][0] * gguf.GGML_QUANT_SIZES[qt][1]
        l_pp = (pp3 - pp1) / 2
        o_pp, o_tg, _ = ours(name, rng, th, a.reps)
        print(f"{th} thread{'s' if th > 1 else ' '} ({'CPU' if th == 1 else 'wall'})")
        print(f"{name:5s} prefill  llama.cpp {ops / l_pp / 1e9:6.1f} GOP/s   ours {ops / o_pp / 1e9:6.1f} GOP/s"
              f"   ours/llama.cpp {l_pp / o_pp:4.2f}x")
        print(f"{name:5s} decode   llama.cpp {3 * layer_bytes / tg3 / 1e9:6.1f} GB/s (3 layers + head, whole token)"
              f"   ours {layer_bytes / o_tg / 1e9:6.1f} GB/s (7 matvecs)")
    if not a.keep:
        for p in os.listdir(tmp):
            os.remove(os.path.join(tmp, p))


if __name__ == "__main__":
    sys.exit(main())
