"""Vision encoder side by side with llama.cpp (llama-cpp-python's mtmd): same mmproj, same image.

    python bench/peer_vision.py                         # tiny random mmproj (test sizes), numerics
    python bench/peer_vision.py --real --layers 2       # real widths, 2 blocks: speed
    python bench/peer_vision.py --mmproj mmproj-model-f16.gguf

A 448x448 image is not resized or sliced by either side (llama.cpp's mtmd resizes every MiniCPM-V
overview to 448x448; HF keeps it), so both encode the same 32x32 patch grid and the embeddings
can be compared. mtmd needs a text model whose width equals the resampler's, so a one-block
random qwen2 GGUF of that width is written next to it (only its width matters). Not a test: peer
numerics differ by design (llama.cpp runs f16 matmuls with f16 activations, its own GELU table,
and computes position ids with the closed form); prints the differences for the lead to judge.
"""
import argparse
import ctypes
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "reference"))
sys.path.insert(0, str(ROOT / "bench"))

SPECIAL = ["<unk>", "<image>", "</image>", "<slice>", "</slice>", "<image_id>", "</image_id>",
           "<|im_start|>", "<|im_end|>", "<|endoftext|>"]


def write_text_model(path, width, seed=0):
    """One-block qwen2 GGUF of the given width (mtmd checks it equals the projector's)."""
    import gguf
    from llama_compat import byte_level_vocab

    rng = np.random.default_rng(seed)
    tokens, merges = byte_level_vocab(400)
    tokens = tokens[:-1] + SPECIAL
    heads, ffn = max(1, width // 128), 128
    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_block_count(1)
    w.add_context_length(4096)
    w.add_embedding_length(width)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(heads)
    w.add_rope_freq_base(1e6)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types([1] * (len(tokens) - len(SPECIAL)) + [3] * len(SPECIAL))
    w.add_token_merges(merges)
    w.add_eos_token_id(tokens.index("<|im_end|>"))
    w.add_bos_token_id(tokens.index("<|im_start|>"))
    w.add_unk_token_id(tokens.index("<unk>"))

    def t(name, *shape):
        a = (rng.standard_normal(shape) * 0.02).astype(np.float32)
        w.add_tensor(name, a.astype(np.float16) if len(shape) == 2 else a)

    n = len(tokens)
    t("token_embd.weight", n, width)
    w.add_tensor("output_norm.weight", np.ones(width, np.float32))
    t("output.weight", n, width)
    w.add_tensor("blk.0.attn_norm.weight", np.ones(width, np.float32))
    w.add_tensor("blk.0.ffn_norm.weight", np.ones(width, np.float32))
    for p in ("q", "k", "v"):
        t(f"blk.0.attn_{p}.weight", width, width)
        t(f"blk.0.attn_{p}.bias", width)
    t("blk.0.attn_output.weight", width, width)
    t("blk.0.ffn_gate.weight", ffn, width)
    t("blk.0.ffn_up.weight", ffn, width)
    t("blk.0.ffn_down.weight", width, ffn)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def peer_encode(mmproj, text_model, img, threads):
    """llama.cpp (mtmd) embeddings of the image's first image chunk and the encode time."""
    import llama_cpp
    import llama_cpp.mtmd_cpp as M

    llama_cpp.llama_backend_init()
    mp = llama_cpp.llama_model_default_params()
    model = llama_cpp.llama_model_load_from_file(str(text_model).encode(), mp)
    if not model:
        raise RuntimeError("llama.cpp could not load the text model")
    cp = M.mtmd_context_params_default()
    cp.use_gpu = False
    cp.n_threads = threads
    cp.print_timings = False
    cp.warmup = False
    ctx = M.mtmd_init_from_file(str(mmproj).encode(), model, cp)
    if not ctx:
        raise RuntimeError("llama.cpp (mtmd) could not load the mmproj")
    h, w, _ = img.shape
    data = (ctypes.c_uint8 * img.size).from_buffer_copy(np.ascontiguousarray(img).tobytes())
    bmp = M.mtmd_bitmap_init(w, h, data)
    chunks = M.mtmd_input_chunks_init()
    text = M.mtmd_input_text()
    marker = M.mtmd_default_marker()
    text.text = marker
    text.text_len = len(marker)
    text.add_special = False
    text.parse_special = True
    bitmaps = (M.mtmd_bitmap_p_ctypes * 1)(bmp)
    if M.mtmd_tokenize(ctx, chunks, ctypes.byref(text), bitmaps, 1) != 0:
        raise RuntimeError("mtmd_tokenize failed")
    n_embd = llama_cpp.llama_model_n_embd(model)
    outs, seconds, cpu = [], 0.0, 0.0
    for i in range(M.mtmd_input_chunks_size(chunks)):
        ch = M.mtmd_input_chunks_get(chunks, i)
        if M.mtmd_input_chunk_get_type(ch) != M.MTMD_INPUT_CHUNK_TYPE_IMAGE:
            continue
        n = M.mtmd_input_chunk_get_n_tokens(ch)
        t0, c0 = time.perf_counter(), time.process_time()
        if M.mtmd_encode_chunk(ctx, ch) != 0:
            raise RuntimeError("mtmd_encode_chunk failed")
        seconds += time.perf_counter() - t0
        cpu += time.process_time() - c0
        e = M.mtmd_get_output_embd(ctx)
        outs.append(np.ctypeslib.as_array(e, shape=(n * n_embd,)).reshape(n, n_embd).copy())
    M.mtmd_input_chunks_free(chunks)
    M.mtmd_bitmap_free(bmp)
    M.mtmd_free(ctx)
    llama_cpp.llama_model_free(model)
    return outs, seconds, cpu


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mmproj")
    ap.add_argument("--real", action="store_true", help="random weights at the real widths (speed)")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--wtype", default="f16", choices=["f32", "f16", "q8_0"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--weights", default="native",
                    help="comma-separated VisionEncoder weights options to time (native,bf16,q8_0,auto)")
    ap.add_argument("--repeat", type=int, default=2, help="best of N runs each (after a warm-up)")
    ap.add_argument("--before", action="store_true",
                    help="also time each option as before the flash attention and the resampler fold "
                         "(MINICPMV_ATTENTION_FLASH=0 MINICPMV_RESAMPLER_FOLD=0)")
    args = ap.parse_args()

    from minicpmv_edge import _core

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:448, 0:448]
    img = np.stack([xx * 255 // 447, yy * 255 // 447, (xx + yy) % 256], -1) + rng.integers(-10, 11, (448, 448, 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        mmproj = args.mmproj
        if mmproj is None:
            mmproj = os.path.join(tmp, "mmproj.gguf")
            if args.real:
                from bench_vision import write_random_mmproj
                write_random_mmproj(mmproj, args.layers, args.wtype)
            else:
                import mmproj_fixture
                import vision_ref
                cfg = dict(hidden=96, intermediate=160, layers=args.layers, heads=8, embed_dim=256, query_num=64)
                tensors, _ = mmproj_fixture.mmproj_tensors(vision_ref.make_vision_weights(cfg, 1), cfg, args.wtype)
                mmproj_fixture.write_mmproj(mmproj, cfg, tensors, args.wtype, pos_embed_k=True)
        # wall and process CPU time (all threads): on a shared machine at 1 thread the CPU time is
        # what an idle machine's wall time would be
        t_ours, c_ours, fmt = {}, {}, {}
        runs = [(w, False) for w in args.weights.split(",")]
        if args.before:
            runs += [(w, True) for w in args.weights.split(",")]
        for weights, before in runs:
            for var in ("MINICPMV_ATTENTION_FLASH", "MINICPMV_RESAMPLER_FOLD"):
                if before:
                    os.environ[var] = "0"
                else:
                    os.environ.pop(var, None)
            key = weights + (" before" if before else "")
            enc = _core.VisionEncoder(mmproj, n_threads=args.threads, weights=weights)
            fmt[key] = enc.weight_format
            enc.encode_image(img)  # warm-up
            best, best_cpu = 1e30, 1e30
            for _ in range(args.repeat):
                t0, c0 = time.perf_counter(), time.process_time()
                out, layout = enc.encode_image(img)
                best = min(best, time.perf_counter() - t0)
                best_cpu = min(best_cpu, time.process_time() - c0)
            t_ours[key], c_ours[key] = best, best_cpu
            if key == args.weights.split(",")[0]:
                ours = out
            config = enc.config
            del enc
        width = config["embed_dim"]
        text_model = os.path.join(tmp, "text.gguf")
        write_text_model(text_model, width)
        peer_encode(mmproj, text_model, img, args.threads)  # warm-up (returns outs, wall, cpu)
        t_peer, c_peer = 1e30, 1e30
        for _ in range(args.repeat):
            theirs, t, c = peer_encode(mmproj, text_model, img, args.threads)
            t_peer, c_peer = min(t_peer, t), min(c_peer, c)

    print(f"mmproj {'(given)' if args.mmproj else ('random real-width' if args.real else 'tiny')}: "
          f"{config['layers']} blocks, {args.wtype}; image 448x448 -> grid {layout['tgt_sizes']}; "
          f"threads {args.threads}; best of {args.repeat}; load average {os.getloadavg()[0]:.1f}")
    for weights, t in t_ours.items():
        c = c_ours[weights]
        print(f"  minicpmv-edge weights={weights:13s} ({fmt[weights]:6s}): wall {t * 1e3:8.1f} ms ({t / t_peer:.2f}x), "
              f"cpu {c * 1e3:8.1f} ms ({c / c_peer:.2f}x llama.cpp)")
    print(f"  llama.cpp                        : wall {t_peer * 1e3:8.1f} ms,         cpu {c_peer * 1e3:8.1f} ms  "
          f"({len(theirs)} image chunk(s))")
    if theirs and theirs[0].shape == ours[0].shape:
        a, b = ours[0], theirs[0]
        rel = float(np.sqrt(np.mean((a - b) ** 2) / np.mean(b ** 2)))
        print(f"  max |ours - llama.cpp| = {np.abs(a - b).max():.3e}  (max |llama.cpp| {np.abs(b).max():.3f}), "
              f"relative RMS {rel:.2e}")
    else:
        print(f"  shapes differ: ours {ours.shape}, llama.cpp {[t.shape for t in theirs]}")


if __name__ == "__main__":
    sys.exit(main())
