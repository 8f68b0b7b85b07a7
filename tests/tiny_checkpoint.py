"""Tiny random MiniCPM-V 2.6 checkpoints in the real Hugging Face file layout (test fixtures).

A thin layer over the package's generator (convert/random_checkpoint.py, installed as
minicpmv_edge.convert.random_checkpoint) that uses the real Qwen2 vocabulary from
../shared/data/qwen2-bpe, so token ids are the real 151666 ones. `make_tiny_checkpoint(dir)`
defaults to hidden=128: the real resampler has embed_dim // 128 heads.
"""
from pathlib import Path

from minicpmv_edge.convert.random_checkpoint import (  # noqa: F401  (re-exported for tests and bench)
    ADDED_TOKENS, CHAT_TEMPLATE, N_BASE_VOCAB, PREPROCESSOR_CONFIG, QWEN2_SPLIT, VOCAB_SIZE, _config,
    f32_to_bf16_bits, make_random_checkpoint, tiny_tensors, write_safetensors)
from minicpmv_edge.convert.random_checkpoint import write_tokenizer as _write_tokenizer

ROOT = Path(__file__).resolve().parent.parent
BPE_DIR = ROOT.parent / "shared" / "data" / "qwen2-bpe"
UNK_ID = 128244  # the regular token "<unk>" of the real vocabulary: MiniCPM-V's image placeholder


def write_tokenizer(out_dir, bpe_dir=BPE_DIR):
    return _write_tokenizer(out_dir, bpe_dir)


def make_tiny_checkpoint(dir, *, hidden=128, layers=2, heads=4, kv_heads=2, ffn=128,
                         vision_hidden=32, vision_layers=2, vision_heads=4, vision_ffn=64,
                         query_num=64, seed=0, dtype="bfloat16", n_shards=2, bpe_dir=BPE_DIR):
    """Write a tiny random MiniCPM-V 2.6 checkpoint with the real vocabulary to `dir`."""
    return make_random_checkpoint(dir, vocab=bpe_dir, hidden=hidden, layers=layers, heads=heads,
                                  kv_heads=kv_heads, ffn=ffn, vision_hidden=vision_hidden,
                                  vision_layers=vision_layers, vision_heads=vision_heads,
                                  vision_ffn=vision_ffn, query_num=query_num, seed=seed, dtype=dtype,
                                  n_shards=n_shards)


if __name__ == "__main__":
    import sys

    print(make_tiny_checkpoint(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tiny-minicpmv"))
