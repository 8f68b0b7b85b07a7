"""Random-weight MiniCPM-V 2.6 checkpoints in the real Hugging Face file layout.

`make_random_checkpoint(dir)` writes a directory laid out like `openbmb/MiniCPM-V-2_6`:
config.json, generation_config.json, preprocessor_config.json, tokenizer files, and sharded
safetensors with model.safetensors.index.json, using the real tensor names (`llm.*`, `vpm.*`,
`resampler.*`; spec sections 2-4, 8). The sizes are parameters. With the real Qwen2 vocabulary
(`vocab=<dir of vocab.json + merges.txt>`) token ids are the real ones; `vocab="synthetic"` makes
a small byte-level vocabulary so that `minicpmv-edge demo` needs no download. Used by the demo,
the benchmarks (full-size shapes) and the tests (tests/tiny_checkpoint.py).

Resampler heads follow the real rule embed_dim // 128, so `hidden` should be a multiple of 128
whenever the vision path is exercised. Weights are seeded normal noise with transformer-like
scales (std 0.02 for matrices, norm weights 1 + 0.1 noise, biases std 0.02) so activations stay
well-conditioned. Needs only numpy (HF `tokenizers`, if installed, adds a tokenizer.json).

Deliberate differences from the real files: no `auto_map` entries (the real ones point at remote
code that is not shipped here), and tokenizer_class is the plain Qwen2 one.
"""
import json
import shutil
from pathlib import Path

import numpy as np

from .tokenizer import DEFAULT_CHAT_TEMPLATE


VOCAB_SIZE = 151666     # the real vocabulary: 151643 regular BPE tokens + 23 added ones
N_BASE_VOCAB = 151643

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
CHAT_TEMPLATE = DEFAULT_CHAT_TEMPLATE

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
            vision_ffn, query_num, dtype, vocab_size=VOCAB_SIZE, eos_id=151645, bos_id=151643):
    return {
        "_name_or_path": "openbmb/MiniCPM-V-2_6",
        "architectures": ["MiniCPMV"],
        "model_type": "minicpmv",
        "attention_dropout": 0.0,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
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
        "vocab_size": vocab_size,
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


def write_tokenizer(out_dir, bpe_dir):
    """vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json (and tokenizer.json
    when HF `tokenizers` is installed) from a byte-level BPE vocabulary in `bpe_dir`. MiniCPM-V's
    added tokens follow the regular ones. Returns (vocab_size, unk_id)."""
    out_dir = Path(out_dir)
    bpe_dir = Path(bpe_dir)
    for name in ("vocab.json", "merges.txt"):
        if not (bpe_dir / name).is_file():
            raise FileNotFoundError(f"{bpe_dir / name}: BPE vocabulary file is missing")
        if (out_dir / name).resolve() != (bpe_dir / name).resolve():
            shutil.copyfile(bpe_dir / name, out_dir / name)
    vocab = json.loads((bpe_dir / "vocab.json").read_text(encoding="utf-8"))
    n_base = len(vocab)
    if "<unk>" not in vocab:
        raise ValueError(f"{bpe_dir / 'vocab.json'}: no regular token '<unk>' (MiniCPM-V's placeholder)")
    unk_id = vocab["<unk>"]

    # "<unk>" (a regular BPE token) is listed as an added special token too: otherwise the
    # pre-tokenizer would split "<unk>" into "<", "unk", ">" and the image placeholders would
    # not be single tokens.
    decoder = {str(unk_id): _added_token_entry("<unk>")}
    for k, tok in enumerate(ADDED_TOKENS):
        decoder[str(n_base + k)] = _added_token_entry(tok)
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

    try:
        from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    except ImportError:  # tokenizer.json is a convenience for HF loaders; our converter does not need it
        return n_base + len(ADDED_TOKENS), unk_id

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
        if tok.token_to_id(t) != n_base + k:
            raise RuntimeError(f"tokenizer.json: {t} got id {tok.token_to_id(t)}, want {n_base + k}")
    if tok.token_to_id("<unk>") != unk_id:
        raise RuntimeError(f"tokenizer.json: <unk> is not {unk_id}")
    tok.save(str(out_dir / "tokenizer.json"))
    return n_base + len(ADDED_TOKENS), unk_id


# A small corpus for the synthetic vocabulary of demo models (no real vocabulary is shipped).
_SYNTH_CORPUS = (
    "the quick brown fox jumps over the lazy dog. what is in the image? a receipt with a total, "
    "a table of numbers, a document with text. describe the picture in detail. the answer is "
    "on the left side of the page; the date is 2024-08-06 and the price is 16.50. "
    "MiniCPM-V runs on the device where the data is: phones, tablets and laptops. "
    "图片里有什么？这是一张收据。 reading tables, charts and handwriting is what it does best."
)


def write_synthetic_bpe(out_dir, n_merges=400):
    """A small byte-level BPE vocabulary (256 byte tokens + merges learned on a built-in text +
    the regular token '<unk>'), written as vocab.json / merges.txt in GPT-2's byte mapping."""
    import re

    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    byte_char = {b: chr(c) for b, c in zip(bs, cs)}
    vocab = {byte_char[b]: i for i, b in enumerate(range(256))}
    words = {}
    for w in re.findall(r" ?[^\W\d_]+| ?\d| ?[^\s\w]+|\s+", _SYNTH_CORPUS):
        key = tuple(byte_char[b] for b in w.encode("utf-8"))
        words[key] = words.get(key, 0) + 1
    merges = []
    for _ in range(n_merges):
        pairs = {}
        for w, c in words.items():
            for a, b2 in zip(w, w[1:]):
                pairs[(a, b2)] = pairs.get((a, b2), 0) + c
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merged = best[0] + best[1]
        merges.append(f"{best[0]} {best[1]}")
        vocab.setdefault(merged, len(vocab))
        new_words = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(merged)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_words[tuple(out)] = new_words.get(tuple(out), 0) + c
        words = new_words
    vocab.setdefault("<unk>", len(vocab))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return out_dir


def make_random_checkpoint(dir, *, vocab="synthetic", hidden=128, layers=2, heads=4, kv_heads=2, ffn=128,
                           vision_hidden=32, vision_layers=2, vision_heads=4, vision_ffn=64,
                           query_num=64, seed=0, dtype="bfloat16", n_shards=2):
    """Write a random-weight MiniCPM-V 2.6 checkpoint to `dir` (created if needed); return its Path.

    vocab: "synthetic" (a small byte-level BPE vocabulary made here, for demos) or a directory
    holding a byte-level BPE vocab.json + merges.txt (the real Qwen2 one gives the real 151666 ids).
    dtype: "bfloat16" (as the real checkpoint), "float16" or "float32" (also accepts torch
    dtypes / "bf16"). The same seed gives the same weights whatever the dtype.
    """
    dtype = _norm_dtype(dtype)
    out = Path(dir)
    out.mkdir(parents=True, exist_ok=True)
    bpe_dir = write_synthetic_bpe(out) if str(vocab) == "synthetic" else Path(vocab)
    vocab_size, _ = write_tokenizer(out, bpe_dir)
    n_base = vocab_size - len(ADDED_TOKENS)
    tensors = tiny_tensors(hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads, ffn=ffn,
                           vision_hidden=vision_hidden, vision_layers=vision_layers,
                           vision_heads=vision_heads, vision_ffn=vision_ffn,
                           query_num=query_num, seed=seed, vocab_size=vocab_size)

    cfg = _config(hidden, layers, heads, kv_heads, ffn, vision_hidden, vision_layers, vision_heads,
                  vision_ffn, query_num, dtype, vocab_size=vocab_size, bos_id=n_base, eos_id=n_base + 2)
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    gen_cfg = {"_from_model_config": True, "bos_token_id": n_base, "eos_token_id": n_base + 2,
               "pad_token_id": 0, "transformers_version": "4.40.0"}
    (out / "generation_config.json").write_text(json.dumps(gen_cfg, indent=2))
    (out / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR_CONFIG, indent=2))

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
