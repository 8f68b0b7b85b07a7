"""Tiny random MiniCPM-V 2.6 checkpoints in the real Hugging Face file layout (test fixtures).

`make_tiny_checkpoint(dir)` writes a directory laid out like `openbmb/MiniCPM-V-2_6`: config.json,
generation_config.json, preprocessor_config.json, the Qwen2 tokenizer files (built from the shared
real vocabulary, so token ids are the real ones), and sharded safetensors with
model.safetensors.index.json, using the real tensor names (`llm.*`, `vpm.*`, `resampler.*`; spec
sections 2-4, 8). Only the sizes are tiny; the vocabulary is the real 151666 ids, so most of the
bytes are the embedding and lm_head.

Tiny-size choice: the real resampler uses `embed_dim // 128` heads (head_dim 128). The default
`hidden=128` keeps that rule faithful (1 resampler head of 128). `hidden` that is not a multiple
of 128 still gives a valid language model, but its resampler has 0 heads by the real rule, so
use a multiple of 128 whenever the vision path is exercised.

Weights are seeded normal noise with transformer-like scales (std 0.02 for matrices, norm weights
1 + 0.1 noise, biases std 0.02) so activations stay well-conditioned.

This module needs only numpy and `tokenizers` (no torch): bf16 is written by rounding float32 to
nearest-even bf16 bit patterns by hand.

Deliberate differences from the real files: no `auto_map` entries (the real ones point at
remote code that is not shipped here, and would make AutoTokenizer ask to trust it), and
tokenizer_class is the plain Qwen2 one.
"""
import json
import shutil
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BPE_DIR = ROOT.parent / "shared" / "data" / "qwen2-bpe"

VOCAB_SIZE = 151666
N_BASE_VOCAB = 151643  # regular BPE tokens 0..151642
UNK_ID = 128244  # the regular token "<unk>", MiniCPM-V's image placeholder (spec 8.2)

# Added tokens 151643..151665 (spec 8.2), in id order.
ADDED_TOKENS = (["<|endoftext|>", "<|im_start|>", "<|im_end|>",
                 "<image>", "</image>", "<ref>", "</ref>", "<box>", "</box>",
                 "<quad>", "</quad>", "<point>", "</point>", "<slice>", "</slice>",
                 "<image_id>", "</image_id>"]
                + [f"<|reserved_special_token_{k}|>" for k in range(6)])
assert N_BASE_VOCAB + len(ADDED_TOKENS) == VOCAB_SIZE

# Qwen2's pre-tokenizer split (digits one by one); see shared/data/qwen2-bpe/README.md.
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
               r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# ChatML with Qwen2's default-system rule (spec 8.3).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_ST_DTYPES = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}


def _norm_dtype(dtype):
    name = str(dtype).replace("torch.", "").lower()
    name = {"bf16": "bfloat16", "f16": "float16", "fp16": "float16", "half": "float16",
            "f32": "float32", "fp32": "float32", "float": "float32"}.get(name, name)
    if name not in _ST_DTYPES:
        raise ValueError(f"dtype must be one of bfloat16/float16/float32, got {dtype!r}")
    return name


def f32_to_bf16_bits(x):
    """float32 -> bf16 bit patterns (uint16), round to nearest even (as torch's .to(bfloat16))."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    return rounded.astype(np.uint16)


def _encode(x, dtype):
    if dtype == "bfloat16":
        return f32_to_bf16_bits(x).tobytes()
    if dtype == "float16":
        return np.ascontiguousarray(x, dtype=np.float16).tobytes()
    return np.ascontiguousarray(x, dtype=np.float32).tobytes()


def write_safetensors(path, tensors, dtype, metadata=None):
    """Write {name: float32 array} as one safetensors file in `dtype` (the format: u64 header
    length, JSON header with dtype/shape/data_offsets, 8-byte aligned, then raw row-major data)."""
    header = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    blobs = []
    for name, arr in tensors.items():
        blob = _encode(arr, dtype)
        header[name] = {"dtype": _ST_DTYPES[dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    hjson = json.dumps(header, separators=(",", ":")).encode()
    hjson += b" " * ((8 - len(hjson) % 8) % 8)
    with open(path, "wb") as f:
        f.write(len(hjson).to_bytes(8, "little"))
        f.write(hjson)
        for blob in blobs:
            f.write(blob)
    return offset


def tiny_tensors(*, hidden=128, layers=2, heads=4, kv_heads=2, ffn=128, vision_hidden=32,
                 vision_layers=2, vision_heads=4, vision_ffn=64, query_num=64, seed=0,
                 vocab_size=VOCAB_SIZE):
    """The random weights as {real HF name: float32 array} (before the dtype cast)."""
    if hidden % heads or heads % kv_heads or vision_hidden % vision_heads:
        raise ValueError("hidden must divide into heads, heads into kv_heads, vision_hidden into vision_heads")
    rng = np.random.default_rng(seed)
    head_dim = hidden // heads

    def mat(*shape, std=0.02):
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(std))

    def norm(n):
        return 1.0 + mat(n, std=0.1)

    def bias(n):
        return mat(n, std=0.02)

    t = {}
    t["llm.model.embed_tokens.weight"] = mat(vocab_size, hidden)
    for i in range(layers):
        p = f"llm.model.layers.{i}."
        t[p + "input_layernorm.weight"] = norm(hidden)
        t[p + "self_attn.q_proj.weight"] = mat(hidden, hidden)
        t[p + "self_attn.q_proj.bias"] = bias(hidden)
        t[p + "self_attn.k_proj.weight"] = mat(kv_heads * head_dim, hidden)
        t[p + "self_attn.k_proj.bias"] = bias(kv_heads * head_dim)
        t[p + "self_attn.v_proj.weight"] = mat(kv_heads * head_dim, hidden)
        t[p + "self_attn.v_proj.bias"] = bias(kv_heads * head_dim)
        t[p + "self_attn.o_proj.weight"] = mat(hidden, hidden)
        t[p + "post_attention_layernorm.weight"] = norm(hidden)
        t[p + "mlp.gate_proj.weight"] = mat(ffn, hidden)
        t[p + "mlp.up_proj.weight"] = mat(ffn, hidden)
        t[p + "mlp.down_proj.weight"] = mat(hidden, ffn)
    t["llm.model.norm.weight"] = norm(hidden)
    t["llm.lm_head.weight"] = mat(vocab_size, hidden)

    vh = vision_hidden
    t["vpm.embeddings.patch_embedding.weight"] = mat(vh, 3, 14, 14)
    t["vpm.embeddings.patch_embedding.bias"] = bias(vh)
    t["vpm.embeddings.position_embedding.weight"] = mat(70 * 70, vh)
    for i in range(vision_layers):
        p = f"vpm.encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            t[p + f"self_attn.{proj}.weight"] = mat(vh, vh)
            t[p + f"self_attn.{proj}.bias"] = bias(vh)
        t[p + "layer_norm1.weight"] = norm(vh)
        t[p + "layer_norm1.bias"] = bias(vh)
        t[p + "mlp.fc1.weight"] = mat(vision_ffn, vh)
        t[p + "mlp.fc1.bias"] = bias(vision_ffn)
        t[p + "mlp.fc2.weight"] = mat(vh, vision_ffn)
        t[p + "mlp.fc2.bias"] = bias(vh)
        t[p + "layer_norm2.weight"] = norm(vh)
        t[p + "layer_norm2.bias"] = bias(vh)
    t["vpm.post_layernorm.weight"] = norm(vh)
    t["vpm.post_layernorm.bias"] = bias(vh)

    t["resampler.query"] = mat(query_num, hidden)
    t["resampler.kv_proj.weight"] = mat(hidden, vh)
    t["resampler.attn.in_proj_weight"] = mat(3 * hidden, hidden)
    t["resampler.attn.in_proj_bias"] = bias(3 * hidden)
    t["resampler.attn.out_proj.weight"] = mat(hidden, hidden)
    t["resampler.attn.out_proj.bias"] = bias(hidden)
    for ln in ("ln_q", "ln_kv", "ln_post"):
        t[f"resampler.{ln}.weight"] = norm(hidden)
        t[f"resampler.{ln}.bias"] = bias(hidden)
    t["resampler.proj"] = mat(hidden, hidden)
    return t


def _config(hidden, layers, heads, kv_heads, ffn, vision_hidden, vision_layers, vision_heads,
            vision_ffn, query_num, dtype):
    return {
        "_name_or_path": "openbmb/MiniCPM-V-2_6",
        "architectures": ["MiniCPMV"],
        "model_type": "minicpmv",
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "hidden_act": "silu",
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": ffn,
        "max_position_embeddings": 32768,
        "max_window_layers": layers,
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "num_key_value_heads": kv_heads,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "sliding_window": 131072,
        "tie_word_embeddings": False,
        "torch_dtype": dtype,
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": VOCAB_SIZE,
        "batch_vision_input": True,
        "drop_vision_last_layer": False,
        "image_size": 448,
        "patch_size": 14,
        "query_num": query_num,
        "slice_config": {"max_slice_nums": 9, "patch_size": 14, "model_type": "minicpmv",
                         "scale_resolution": 448},
        "slice_mode": True,
        "use_image_id": True,
        "version": 2.6,
        "vision_batch_size": 16,
        "vision_config": {
            "hidden_size": vision_hidden,
            "image_size": 980,
            "intermediate_size": vision_ffn,
            "model_type": "siglip_vision_model",
            "num_attention_heads": vision_heads,
            "num_hidden_layers": vision_layers,
            "patch_size": 14,
            "num_channels": 3,
            "hidden_act": "gelu_pytorch_tanh",
            "layer_norm_eps": 1e-06,
            "attention_dropout": 0.0,
        },
        "transformers_version": "4.40.0",
    }


PREPROCESSOR_CONFIG = {
    "image_processor_type": "MiniCPMVImageProcessor",
    "processor_class": "MiniCPMVProcessor",
    "max_slice_nums": 9,
    "scale_resolution": 448,
    "patch_size": 14,
    "use_image_id": True,
    "image_feature_size": 64,
    "im_start": "<image>",
    "im_end": "</image>",
    "slice_start": "<slice>",
    "slice_end": "</slice>",
    "unk": "<unk>",
    "im_id_start": "<image_id>",
    "im_id_end": "</image_id>",
    "slice_mode": True,
    "norm_mean": [0.5, 0.5, 0.5],
    "norm_std": [0.5, 0.5, 0.5],
    "version": 2.6,
}


def _added_token_entry(content):
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": True}


def write_tokenizer(out_dir, bpe_dir=BPE_DIR):
    """vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json, tokenizer.json."""
    out_dir = Path(out_dir)
    bpe_dir = Path(bpe_dir)
    for name in ("vocab.json", "merges.txt"):
        if not (bpe_dir / name).is_file():
            raise FileNotFoundError(f"{bpe_dir / name}: the shared Qwen2 vocabulary is missing")
        shutil.copyfile(bpe_dir / name, out_dir / name)

    # "<unk>" (a regular BPE token) is listed as an added special token too: otherwise the
    # pre-tokenizer would split "<unk>" into "<", "unk", ">" and the image placeholders would
    # not be single tokens.
    decoder = {str(UNK_ID): _added_token_entry("<unk>")}
    for k, tok in enumerate(ADDED_TOKENS):
        decoder[str(N_BASE_VOCAB + k)] = _added_token_entry(tok)
    tok_cfg = {
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": ADDED_TOKENS[1:3] + ADDED_TOKENS[3:17],
        "bos_token": "<|im_start|>",
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": "!",
        "split_special_tokens": False,
        # The real checkpoint names its remote-code MiniCPMVTokenizerFast (a Qwen2TokenizerFast
        # subclass); the plain Qwen2 class keeps the fixture loadable without remote code.
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": "<unk>",
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2, ensure_ascii=False))
    special_map = {k: tok_cfg[k] for k in ("additional_special_tokens", "bos_token", "eos_token",
                                          "pad_token", "unk_token")}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2))

    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    tok = Tokenizer(models.BPE.from_file(str(bpe_dir / "vocab.json"), str(bpe_dir / "merges.txt"),
                                         byte_fallback=False, fuse_unk=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken("<unk>", special=True, normalized=False)])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ADDED_TOKENS])
    for k, t in enumerate(ADDED_TOKENS):
        if tok.token_to_id(t) != N_BASE_VOCAB + k:
            raise RuntimeError(f"tokenizer.json: {t} got id {tok.token_to_id(t)}, want {N_BASE_VOCAB + k}")
    if tok.token_to_id("<unk>") != UNK_ID:
        raise RuntimeError("tokenizer.json: <unk> is not 128244")
    tok.save(str(out_dir / "tokenizer.json"))


def make_tiny_checkpoint(dir, *, hidden=128, layers=2, heads=4, kv_heads=2, ffn=128,
                         vision_hidden=32, vision_layers=2, vision_heads=4, vision_ffn=64,
                         query_num=64, seed=0, dtype="bfloat16", n_shards=2, bpe_dir=BPE_DIR):
    """Write a tiny random MiniCPM-V 2.6 checkpoint to `dir` (created if needed); return its Path.

    dtype: "bfloat16" (as the real checkpoint), "float16" or "float32" (also accepts torch
    dtypes / "bf16"). The same seed gives the same weights whatever the dtype.
    """
    dtype = _norm_dtype(dtype)
    out = Path(dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = tiny_tensors(hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads, ffn=ffn,
                           vision_hidden=vision_hidden, vision_layers=vision_layers,
                           vision_heads=vision_heads, vision_ffn=vision_ffn,
                           query_num=query_num, seed=seed)

    cfg = _config(hidden, layers, heads, kv_heads, ffn, vision_hidden, vision_layers, vision_heads,
                  vision_ffn, query_num, dtype)
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    gen_cfg = {"_from_model_config": True, "bos_token_id": 151643, "eos_token_id": 151645,
               "pad_token_id": 0, "transformers_version": "4.40.0"}
    (out / "generation_config.json").write_text(json.dumps(gen_cfg, indent=2))
    (out / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR_CONFIG, indent=2))
    write_tokenizer(out, bpe_dir)

    # Shards: split the tensors (in order) into n_shards contiguous groups of about equal bytes.
    itemsize = 4 if dtype == "float32" else 2
    names = list(tensors)
    sizes = [tensors[n].size * itemsize for n in names]
    total = sum(sizes)
    n_shards = max(1, min(n_shards, len(names)))
    groups = [[] for _ in range(n_shards)]
    acc = 0
    for n, s in zip(names, sizes):
        g = min(n_shards - 1, int(acc * n_shards // total))
        groups[g].append(n)
        acc += s
    groups = [g for g in groups if g]
    weight_map = {}
    for k, g in enumerate(groups):
        fname = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
        write_safetensors(out / fname, {n: tensors[n] for n in g}, dtype)
        weight_map.update({n: fname for n in g})
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return out


if __name__ == "__main__":
    import sys
    print(make_tiny_checkpoint(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tiny-minicpmv"))
