"""GGUF compatibility with llama.cpp: load a qwen2 GGUF in llama.cpp (llama-cpp-python) and in our
engine, evaluate the same token ids, and compare the logits of every position.

    python bench/llama_compat.py                      # tiny random model, written here
    python bench/llama_compat.py --gguf model.gguf    # any qwen2 GGUF (e.g. our converter's output)
    python bench/llama_compat.py --hf-dir DIR --quant q8_0   # convert an HF checkpoint first

Without --gguf, a tiny random Qwen2 is written with gguf-py (f32 / f16 / q8_0 / q4_0) with a small
byte-level BPE vocabulary, enough for llama.cpp to load it. Not a test (peer numerics differ by
design: llama.cpp may use f16 activations for f16 weights, flash attention, other reductions);
prints max abs diffs for the lead to judge.
"""
import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def byte_level_vocab(n_vocab):
    """GPT-2 byte-level token strings: the 256 byte symbols, then merged pairs of letters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    k = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + k)
            k += 1
    byte_tokens = [chr(c) for c in cs]
    letters = "abcdefghijklmnopqrstuvwxyz"
    tokens, merges = list(byte_tokens), []
    words = list(letters)  # merged tokens by length: "aa".."zz", then "aaa".., each from prefix + letter
    while len(tokens) < n_vocab - 1:
        longer = []
        for prefix in words:
            for c in letters:
                if len(tokens) >= n_vocab - 1:
                    break
                tokens.append(prefix + c)
                merges.append(f"{prefix} {c}")
                longer.append(prefix + c)
        words = longer
    tokens.append("<|endoftext|>")
    return tokens, merges


def write_tiny(path, quant, seed=0):
    sys.path.insert(0, str(ROOT / "tests"))
    import gguf
    from gguf import GGMLQuantizationType as QT
    from test_qwen2 import CFG, add_qwen2_hparams, gguf_name, random_state_dict

    qtype = {"f32": QT.F32, "f16": QT.F16, "q8_0": QT.Q8_0, "q4_0": QT.Q4_0}[quant]
    sd = random_state_dict(seed)
    w = gguf.GGUFWriter(str(path), "qwen2")
    c = CFG
    add_qwen2_hparams(w, c)
    tokens, merges = byte_level_vocab(c["vocab_size"])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types([1] * (len(tokens) - 1) + [3])
    w.add_token_merges(merges)
    w.add_eos_token_id(len(tokens) - 1)
    w.add_bos_token_id(len(tokens) - 1)
    for k, v in sd.items():
        a = v.numpy().astype(np.float32)
        name = gguf_name(k)
        if a.ndim == 1 or qtype == QT.F32:
            w.add_tensor(name, a)
        elif qtype == QT.F16:
            w.add_tensor(name, a.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(a, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def convert(hf_dir, quant, out_dir):
    from minicpmv_edge.convert.converter import llm_output_name

    subprocess.run([sys.executable, "-m", "minicpmv_edge", "convert", str(hf_dir), "-o", str(out_dir),
                    "--quant", quant, "--skip-mmproj", "--no-progress"], check=True)
    return Path(out_dir) / llm_output_name(quant)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", help="a qwen2 GGUF to compare (default: write a tiny random one)")
    ap.add_argument("--hf-dir", help="convert this HF checkpoint with our converter first")
    ap.add_argument("--quant", default="f32", help="f32 | f16 | q8_0 | q4_0 (| q4_k_m with --hf-dir)")
    ap.add_argument("--n-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import llama_cpp
    from minicpmv_edge import _core

    with tempfile.TemporaryDirectory() as tmp:
        if args.gguf:
            path = Path(args.gguf)
        elif args.hf_dir:
            path = convert(args.hf_dir, args.quant, tmp)
        else:
            path = write_tiny(Path(tmp) / f"tiny-{args.quant}.gguf", args.quant)

        n = args.n_tokens
        ours_f16 = _core.LLM(str(path), n_ctx=max(64, n), n_threads=args.threads)
        ids = np.random.default_rng(0).integers(0, ours_f16.n_vocab, n).astype(np.int32)
        a = ours_f16.eval(ids, all_logits=True)
        ours_f32 = _core.LLM(str(path), n_ctx=max(64, n), n_threads=args.threads, kv_type="f32")
        b = ours_f32.eval(ids, all_logits=True)

        def llama_logits(**kv):
            llm = llama_cpp.Llama(model_path=str(path), n_ctx=max(64, n), n_batch=max(64, n), logits_all=True,
                                  n_threads=args.threads, verbose=False, **kv)
            llm.eval(ids.tolist())
            return np.array(llm.scores[:n], dtype=np.float32)

        # llama.cpp's defaults (f16 KV cache, flash attention when it chooses), and its float32 KV
        # cache without flash attention: the configuration closest to ours with kv_type="f32".
        lc_default = llama_logits()
        lc_f32 = llama_logits(type_k=0, type_v=0, flash_attn=False)  # 0 = GGML_TYPE_F32

        print(f"{path.name}: {n} tokens, vocab {lc_default.shape[1]}, |logits| max {np.abs(lc_default).max():.3f}")
        for name, ours, ref in (("ours kv f16 vs llama.cpp default", a, lc_default),
                                ("ours kv f32 vs llama.cpp kv f32 ", b, lc_f32)):
            d = np.abs(ours - ref)
            first = d.max(1)
            agree = np.mean(ours.argmax(1) == ref.argmax(1))
            print(f"  {name}: max abs diff {d.max():.3e} (position 0: {first[0]:.3e}, last: {first[-1]:.3e}), "
                  f"mean {d.mean():.3e}, argmax agreement {agree:.3f}")


if __name__ == "__main__":
    main()
