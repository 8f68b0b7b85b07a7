"""Quantization error of our K-quants vs llama.cpp's (a benchmark, not a test).

Two 4096 x 4096 weights (N(0, 0.02) and a heavy-tailed Student-t(3) * 0.02, as LLM weights are)
are quantized to Q4_K / Q5_K / Q6_K
  - by llama.cpp: llama_cpp.llama_model_quantize on a tiny but complete qwen2-layout f16 GGUF
    written with gguf-py (llama_model_quantize loads the architecture and hyper-parameters, so the
    file carries the qwen2 keys and one layer's attention tensors; `pure` keeps every 2-D tensor at
    the requested type), read back with gguf-py;
  - by us: minicpmv_edge._core.quantize on the same f16-rounded weights;
and the RMSE of each reconstruction (gguf-py's dequantizer for both) against the float weights is
printed, with the ratio ours / theirs (issue target: within 2%), the number of bytes that differ
(both implement llama.cpp's reference algorithm: expect 0) and seconds per tensor ("llama s" is
the whole llama_model_quantize call / 2: it also writes the small tensors).

    python bench/quant_rmse.py [--n 4096] [--threads 2] [--types q4_K,q6_K,q5_K] 2>/dev/null
    (llama.cpp logs to stderr)
"""
import argparse
import ctypes
import os
import tempfile
import time

import numpy as np
from gguf import GGMLQuantizationType as GT
from gguf import GGUFReader, GGUFWriter
from gguf.quants import dequantize

from minicpmv_edge import _core

FTYPE = {"q4_K": 14, "q5_K": 16, "q6_K": 18}  # LLAMA_FTYPE_MOSTLY_Q4_K_S / Q5_K_S / Q6_K
GT_OF = {"q4_K": GT.Q4_K, "q5_K": GT.Q5_K, "q6_K": GT.Q6_K}
WEIGHTS = {"normal": "blk.0.attn_q.weight", "heavy": "blk.0.attn_output.weight"}


def make_weights(n, seed=0):
    rng = np.random.default_rng(seed)
    normal = (rng.standard_normal((n, n)) * 0.02).astype(np.float32)
    heavy = (rng.standard_t(3, size=(n, n)) * 0.02).astype(np.float32)
    return {"normal": normal, "heavy": heavy}


def write_tiny_qwen2(path, weights, n):
    """A loadable qwen2 GGUF: hyper-parameters for one layer of width n, our two test matrices
    as that layer's attn_q / attn_output (f16), and the small tensors a layer has."""
    w = GGUFWriter(path, "qwen2")
    w.add_name("quant-rmse-bench")
    w.add_context_length(256)
    w.add_embedding_length(n)
    w.add_block_count(1)
    w.add_feed_forward_length(256)
    w.add_head_count(n // 128)
    w.add_head_count_kv(n // 128)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(1e6)
    w.add_file_type(1)  # MOSTLY_F16
    for key, name in WEIGHTS.items():
        w.add_tensor(name, weights[key].astype(np.float16))
    rng = np.random.default_rng(1)
    w.add_tensor("blk.0.attn_v.weight", (rng.standard_normal((n, n // 16)) * 0.02).astype(np.float16).T.copy())
    w.add_tensor("blk.0.attn_k.weight", (rng.standard_normal((n, n // 16)) * 0.02).astype(np.float16).T.copy())
    w.add_tensor("blk.0.attn_norm.weight", np.ones(n, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def llama_quantize(src, dst, type_name, threads):
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = threads
    params.ftype = FTYPE[type_name]
    params.pure = True
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize to {type_name} failed with {rc}")
    out = {}
    for t in GGUFReader(dst).tensors:
        if t.name in WEIGHTS.values():
            if t.tensor_type != GT_OF[type_name]:
                raise RuntimeError(f"{t.name} came out as {t.tensor_type.name}, not {type_name}")
            out[t.name] = np.array(t.data, dtype=np.uint8).reshape(-1)
    return out


def rmse(q, type_name, x):
    back = dequantize(q.reshape(x.shape[0], -1), GT_OF[type_name]).astype(np.float64)
    return float(np.sqrt(np.mean((back - x) ** 2)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--types", default="q4_K,q6_K,q5_K")
    args = ap.parse_args()
    n = args.n
    weights = make_weights(n)
    rounded = {k: v.astype(np.float16).astype(np.float32) for k, v in weights.items()}  # what both see
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "tiny-f16.gguf")
        write_tiny_qwen2(src, weights, n)
        print(f"{n}x{n} weights; RMSE vs the float32 weights (x 1e-4), threads={args.threads}")
        print(f"{'type':5} {'weight':7} {'ours':>9} {'llama.cpp':>10} {'ratio':>7} {'bytes diff':>11}"
              f" {'ours s':>7} {'llama s':>8}")
        for type_name in args.types.split(","):
            t0 = time.perf_counter()
            theirs = llama_quantize(src, os.path.join(tmp, f"{type_name}.gguf"), type_name, args.threads)
            t_theirs = time.perf_counter() - t0
            for key, name in WEIGHTS.items():
                t0 = time.perf_counter()
                ours = _core.quantize(type_name, rounded[key], n_threads=args.threads).reshape(-1)
                t_ours = time.perf_counter() - t0
                e_ours = rmse(ours, type_name, weights[key])
                e_theirs = rmse(theirs[name], type_name, weights[key])
                diff = int(np.count_nonzero(ours != theirs[name])) if ours.size == theirs[name].size else -1
                print(f"{type_name:5} {key:7} {e_ours * 1e4:9.4f} {e_theirs * 1e4:10.4f} "
                      f"{e_ours / e_theirs:7.4f} {diff:11d} {t_ours:7.1f} {t_theirs / 2:8.1f}")


if __name__ == "__main__":
    main()
