"""Vision encoder speed: SigLIP tower + resampler per slice (not a pass/fail test).

    python bench/bench_vision.py --mmproj mmproj-model-f16.gguf --grid 32x32
    python bench/bench_vision.py --layers 2 --wtype f16        # random weights at the real widths

Without --mmproj a random mmproj with the real widths (hidden 1152, 16 heads, ffn 4304, resampler
3584 wide, 64 queries) but only --layers encoder blocks is written to a temp dir; the time of the
27-block tower is extrapolated from the per-block time (every block costs the same).

MINICPMV_ATTENTION_BF16=0 keeps the attention f32 in the approximate options (compare --accuracy
with and without it); bench/cpp/bench_vision_ops <threads> <mmproj> <option> breakdown times every
step of a block and of the resampler.
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REAL = dict(hidden=1152, intermediate=4304, heads=16, embed_dim=3584, query_num=64, layers=27)


def write_random_mmproj(path, layers, wtype, seed=0):
    import gguf

    rng = np.random.default_rng(seed)
    H, I, D, Q = REAL["hidden"], REAL["intermediate"], REAL["embed_dim"], REAL["query_num"]
    q8 = gguf.GGMLQuantizationType.Q8_0
    wr = gguf.GGUFWriter(str(path), "clip")
    for k, v in [("clip.has_text_encoder", False), ("clip.has_vision_encoder", True),
                 ("clip.has_minicpmv_projector", True), ("clip.use_gelu", True)]:
        wr.add_bool(k, v)
    wr.add_string("clip.projector_type", "resampler")
    wr.add_int32("clip.minicpmv_version", 3)
    wr.add_uint32("clip.minicpmv_query_num", Q)
    for k, v in [("image_size", 448), ("patch_size", 14), ("embedding_length", H),
                 ("feed_forward_length", I), ("projection_dim", 0), ("attention.head_count", REAL["heads"]),
                 ("block_count", layers)]:
        wr.add_uint32("clip.vision." + k, v)
    wr.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    wr.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    wr.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])

    def mat(name, rows, cols, shape=None):
        a = (rng.standard_normal((rows, cols), dtype=np.float32) / np.sqrt(cols)).astype(np.float32)
        if wtype == "q8_0" and cols % 32 == 0:
            wr.add_tensor(name, gguf.quants.quantize(a, q8), raw_dtype=q8)
        elif wtype == "f32":
            wr.add_tensor(name, a.reshape(shape or a.shape))
        else:
            wr.add_tensor(name, a.astype(np.float16).reshape(shape or a.shape))

    def vec(name, n, mean=0.0):
        wr.add_tensor(name, (mean + 0.05 * rng.standard_normal(n)).astype(np.float32))

    mat("v.patch_embd.weight", H, 588, (H, 3, 14, 14))
    vec("v.patch_embd.bias", H)
    mat("v.position_embd.weight", 4900, H)
    for i in range(layers):
        b = f"v.blk.{i}."
        for n in ("attn_q", "attn_k", "attn_v", "attn_out"):
            mat(b + n + ".weight", H, H)
            vec(b + n + ".bias", H)
        mat(b + "ffn_down.weight", I, H)  # fc1, named as llama.cpp's converter does
        vec(b + "ffn_down.bias", I)
        mat(b + "ffn_up.weight", H, I)
        vec(b + "ffn_up.bias", H)
        for n in ("ln1", "ln2"):
            vec(b + n + ".weight", H, 1.0)
            vec(b + n + ".bias", H)
    vec("v.post_ln.weight", H, 1.0)
    vec("v.post_ln.bias", H)
    wr.add_tensor("resampler.query", rng.standard_normal((Q, D), dtype=np.float32))
    mat("resampler.kv.weight", D, H)
    for n in ("q", "k", "v", "out"):
        mat(f"resampler.attn.{n}.weight", D, D)
        vec(f"resampler.attn.{n}.bias", D)
    for n in ("ln_q", "ln_kv", "ln_post"):
        vec(f"resampler.{n}.weight", D, 1.0)
        vec(f"resampler.{n}.bias", D)
    mat("resampler.proj.weight", D, D)
    # unused by both runtimes, but llama.cpp's loader requires it
    wr.add_tensor("resampler.pos_embed_k", np.zeros((4900, D), np.float32))
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mmproj", help="an mmproj GGUF (default: random weights at the real widths)")
    ap.add_argument("--layers", type=int, default=2, help="blocks of the random model (default 2)")
    ap.add_argument("--wtype", default="f16", choices=["f32", "f16", "q8_0"])
    ap.add_argument("--grid", default="32x32", help="patch grid h x w (32x32 = a 448x448 slice)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--weights", default="auto", choices=["auto", "native", "q8_0", "bf16"],
                    help="VisionEncoder weights option (auto: bf16 with AVX512_BF16, else q8_0 on int8 CPUs)")
    ap.add_argument("--accuracy", action="store_true",
                    help="instead of timing: rel. RMS of the [64, embed] output of f16 / q8_0 / bf16 paths vs "
                         "the f32 path on a random f32 file at the real widths")
    args = ap.parse_args()

    from minicpmv_edge import _core

    h, w = (int(v) for v in args.grid.lower().split("x"))
    if args.accuracy:
        return accuracy(args, h, w)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.mmproj
        if path is None:
            path = os.path.join(tmp, f"mmproj-random-{args.wtype}.gguf")
            t0 = time.perf_counter()
            write_random_mmproj(path, args.layers, args.wtype)
            print(f"wrote random mmproj ({args.layers} blocks, {args.wtype}) in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        enc = _core.VisionEncoder(path, n_threads=args.threads, weights=args.weights)
        print(f"loaded ({args.weights} -> {enc.weight_format}) in {time.perf_counter() - t0:.1f} s")
        cfg = enc.config
        patches = np.random.default_rng(0).uniform(-1, 1, (h * w, 588)).astype(np.float32)
        enc.encode_patches(patches, h, w)  # warm-up: page in the weights, size the buffers
        tower, total, cpu = [], [], []
        for _ in range(args.repeat):
            c0 = time.process_time()
            t0 = time.perf_counter()
            hidden = enc.vision_tower(patches, h, w)
            t1 = time.perf_counter()
            enc.resample(hidden, h, w)
            t2 = time.perf_counter()
            tower.append(t1 - t0)
            total.append(t2 - t0)
            cpu.append(time.process_time() - c0)
        t_tower, t_res = min(tower), min(total) - min(tower)
        per_block = t_tower / cfg["layers"]
        n = h * w
        flops_block = 2 * n * (4 * cfg["hidden"] ** 2 + 2 * cfg["hidden"] * cfg["intermediate"]) + 4 * n * n * cfg["hidden"]
        print(f"grid {h}x{w} ({n} tokens), {cfg['layers']} blocks, threads {args.threads or 'all'}")
        print(f"  tower     {t_tower * 1e3:8.1f} ms  ({per_block * 1e3:.1f} ms/block, "
              f"{flops_block / per_block / 1e9:.1f} GFLOP/s)")
        print(f"  resampler {t_res * 1e3:8.1f} ms")
        # On a shared machine wall time includes waiting for a core; CPU time (all threads, incl.
        # the pool's short spin-waits) / threads is what an idle machine's wall time would be.
        print(f"  CPU time of tower + resampler {min(cpu):.2f} s over all threads "
              f"(wall {min(total):.2f} s; load average {os.getloadavg()[0]:.1f})")
        if cfg["layers"] != REAL["layers"]:
            est = per_block * REAL["layers"] + t_res
            print(f"  estimated 27-block slice: {est:.2f} s")


def accuracy(args, h, w):
    """Final-output error of the f16 file and of the q8_0 conversion, relative to the f32 kernels."""
    from minicpmv_edge import _core

    patches = np.random.default_rng(0).uniform(-1, 1, (h * w, 588)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        outs = {}
        for wtype in ("f32", "f16"):
            path = os.path.join(tmp, f"mmproj-random-{wtype}.gguf")
            write_random_mmproj(path, args.layers, wtype)
            for weights in ("native", "q8_0", "bf16"):
                enc = _core.VisionEncoder(path, n_threads=args.threads, weights=weights)
                hidden = enc.vision_tower(patches, h, w)
                outs[(wtype, weights)] = (hidden, enc.resample(hidden, h, w))
                del enc
    ref_hidden, ref = outs[("f32", "native")]

    def rel_rms(a, b):
        return float(np.sqrt(np.mean((a - b) ** 2) / np.mean(b ** 2)))

    print(f"random real-width model, {args.layers} blocks, grid {h}x{w}: rel. RMS vs f32 native")
    for key, (hid, out) in outs.items():
        if key != ("f32", "native"):
            print(f"  {key[0]} file, weights={key[1]:6s}: tower {rel_rms(hid, ref_hidden):.2e}  "
                  f"final [64, embed] {rel_rms(out, ref):.2e}")


if __name__ == "__main__":
    sys.exit(main())
