"""The Hugging Face -> GGUF converter, checked against independent readers: gguf-py's GGUFReader
and dequantizers, the bf16 source read with safetensors + torch, HF `tokenizers`, transformers
model classes (for the fixture's layout), and llama.cpp (llama-cpp-python) where installed."""
import ctypes
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from conftest import require
from tiny_checkpoint import ADDED_TOKENS, N_BASE_VOCAB, UNK_ID, VOCAB_SIZE, make_tiny_checkpoint

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")

from minicpmv_edge.convert import convert_checkpoint  # noqa: E402

GT = gguf.GGMLQuantizationType
LAYERS_SMALL = 2
LAYERS_K = 4

# llama.cpp's use_more_bits(i, n) (src/llama-quant.cpp): i < n/8 || i >= 7n/8 || (i - n/8) % 3 == 2,
# written out by hand for the two layer counts used here.
MORE_BITS_LAYERS = {2: {1}, 4: {2, 3}}


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def ck_small(tmp_path_factory, bpe_dir):
    # hidden 128: the smallest size that keeps the real resampler rule (hidden // 128 heads);
    # rows of 128 are not whole Q4_K/Q6_K blocks, so this one exercises llama.cpp's fallbacks.
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ck_small"), layers=LAYERS_SMALL, seed=1)


@pytest.fixture(scope="module")
def ck_k(tmp_path_factory, bpe_dir):
    # rows of 256 / 512: real Q4_K and Q6_K blocks; 4 layers so that use_more_bits splits them.
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ck_k"), hidden=256, layers=LAYERS_K, heads=4,
                                kv_heads=2, ffn=512, seed=2)


def source(ck):
    """All source tensors as float32, read by safetensors + torch (independent of our reader)."""
    from safetensors import safe_open

    index = json.loads((ck / "model.safetensors.index.json").read_text())
    out = {}
    for shard in sorted(set(index["weight_map"].values())):
        with safe_open(str(ck / shard), framework="pt") as f:
            for k in f.keys():
                out[k] = f.get_tensor(k)
    return out


@pytest.fixture(scope="module")
def src_small(ck_small):
    return source(ck_small)


@pytest.fixture(scope="module")
def src_k(ck_k):
    return source(ck_k)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """convert(ck, quant, mm_type=None) -> path, each conversion done once per module."""
    cache = {}

    def convert(ck, quant, mm_type=None):
        key = (str(ck), quant, mm_type)
        if key not in cache:
            out = tmp_path_factory.mktemp("out")
            (cache[key],) = convert_checkpoint(ck, out, quant, mm_type or "f16", llm=mm_type is None,
                                               mmproj=mm_type is not None, progress=False, threads=2)
        return cache[key]

    return convert


def need_core_quantize():
    try:
        from minicpmv_edge import _core
        ok = hasattr(_core, "quantize")
    except ImportError:
        ok = False
    require(ok, "minicpmv_edge._core.quantize (C++ extension) is needed for K-quants")


_READ = {}


def read(path):
    """GGUFReader (slow on the 300k-string tokenizer arrays: parsed once per file and module)."""
    st = Path(path).stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _READ:
        _READ[key] = _read(path)
    return _READ[key]


def _read(path):
    r = gguf.GGUFReader(str(path))
    tensors = {t.name: t for t in r.tensors}
    assert len(tensors) == len(r.tensors), "duplicate tensor names"
    return r, tensors


def field(r, key):
    f = r.fields[key]
    return f.contents()


def deq(t):
    """A GGUF tensor as float32 in numpy (PyTorch) order, via gguf-py."""
    a = gguf.quants.dequantize(t.data, t.tensor_type)
    return np.asarray(a, dtype=np.float32).reshape(tuple(int(x) for x in reversed(t.shape)))


def np32(x):
    return x.float().numpy()


# ---------------------------------------------------------------- the fixture itself

def test_tiny_checkpoint_is_a_real_layout(ck_small, src_small):
    cfg = json.loads((ck_small / "config.json").read_text())
    assert cfg["model_type"] == "minicpmv" and cfg["architectures"] == ["MiniCPMV"]
    assert cfg["vocab_size"] == VOCAB_SIZE and cfg["query_num"] == 64 and cfg["torch_dtype"] == "bfloat16"
    index = json.loads((ck_small / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) >= 2 and all((ck_small / s).is_file() for s in shards)
    assert set(index["weight_map"]) == set(src_small)
    assert all(t.dtype == torch.bfloat16 for t in src_small.values())
    for name in ("preprocessor_config.json", "generation_config.json", "special_tokens_map.json",
                 "vocab.json", "merges.txt", "tokenizer.json"):
        assert (ck_small / name).is_file(), name

    # transformers' own classes accept the weights under the real names, with no leftovers:
    # Qwen2ForCausalLM for llm.*, SigLIP's vision transformer for vpm.*, nn.MultiheadAttention
    # for the resampler's attention.
    from transformers import Qwen2Config, Qwen2ForCausalLM, SiglipVisionConfig, SiglipVisionModel

    qcfg = Qwen2Config(**{k: cfg[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                              "num_attention_heads", "num_key_value_heads", "vocab_size",
                                              "rms_norm_eps", "rope_theta", "tie_word_embeddings")})
    llm = Qwen2ForCausalLM(qcfg)
    missing, unexpected = llm.load_state_dict({k[4:]: v.float() for k, v in src_small.items() if k.startswith("llm.")},
                                              strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    vcfg = dict(cfg["vision_config"])
    vcfg.pop("model_type")
    vis = SiglipVisionModel(SiglipVisionConfig(**vcfg, vision_use_head=False))
    missing, unexpected = vis.load_state_dict({k[4:]: v.float() for k, v in src_small.items() if k.startswith("vpm.")},
                                              strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    mha = torch.nn.MultiheadAttention(cfg["hidden_size"], cfg["hidden_size"] // 128)
    mha.load_state_dict({k[len("resampler.attn."):]: v.float() for k, v in src_small.items()
                         if k.startswith("resampler.attn.")}, strict=True)

    # weights: transformer-like scales (not degenerate)
    assert 0.015 < float(src_small["llm.lm_head.weight"].float().std()) < 0.025
    assert 0.9 < float(src_small["llm.model.norm.weight"].float().mean()) < 1.1


def test_tiny_checkpoint_tokenizer(ck_small):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(ck_small))
    assert len(tok) == VOCAB_SIZE
    # from shared/data/qwen2-bpe/README.md: the real Qwen2 ids
    assert tok.encode("Hello world!") == [9707, 1879, 0]
    assert tok.convert_tokens_to_ids(ADDED_TOKENS) == list(range(N_BASE_VOCAB, VOCAB_SIZE))
    assert tok.convert_tokens_to_ids("<unk>") == UNK_ID
    assert tok.encode("<image><unk><unk></image>\n") == [151646, UNK_ID, UNK_ID, 151647, 198]
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    # spec 8.3: ChatML with Qwen2's default system line
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


# ---------------------------------------------------------------- language model

LLM_PER_LAYER = ["attn_norm.weight", "attn_q.weight", "attn_q.bias", "attn_k.weight", "attn_k.bias",
                 "attn_v.weight", "attn_v.bias", "attn_output.weight", "ffn_norm.weight",
                 "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"]
HF_OF = {"attn_norm.weight": "input_layernorm.weight", "attn_q.weight": "self_attn.q_proj.weight",
         "attn_q.bias": "self_attn.q_proj.bias", "attn_k.weight": "self_attn.k_proj.weight",
         "attn_k.bias": "self_attn.k_proj.bias", "attn_v.weight": "self_attn.v_proj.weight",
         "attn_v.bias": "self_attn.v_proj.bias", "attn_output.weight": "self_attn.o_proj.weight",
         "ffn_norm.weight": "post_attention_layernorm.weight", "ffn_gate.weight": "mlp.gate_proj.weight",
         "ffn_up.weight": "mlp.up_proj.weight", "ffn_down.weight": "mlp.down_proj.weight"}


def llm_names(layers):
    names = {"token_embd.weight": "llm.model.embed_tokens.weight", "output_norm.weight": "llm.model.norm.weight",
             "output.weight": "llm.lm_head.weight"}
    for i in range(layers):
        for n in LLM_PER_LAYER:
            names[f"blk.{i}.{n}"] = f"llm.model.layers.{i}.{HF_OF[n]}"
    return names


def expected_llm_type(quant, name, ndim, row_len, layers):
    """The type llama.cpp gives each tensor (convert_hf_to_gguf.py for f32/f16/q8_0,
    llama-quantize for q4_0/q4_k_m), written out from its rules."""
    if ndim == 1:
        return GT.F32
    if quant in ("f32", "f16", "q8_0"):
        return {"f32": GT.F32, "f16": GT.F16, "q8_0": GT.Q8_0}[quant]
    layer = int(name.split(".")[1]) if name.startswith("blk.") else None
    if name == "output.weight":
        t = GT.Q6_K
    elif quant == "q4_0":
        t = GT.Q4_0
    elif layer is not None and name.split(".", 2)[2] in ("attn_v.weight", "ffn_down.weight") \
            and layer in MORE_BITS_LAYERS[layers]:
        t = GT.Q6_K
    else:
        t = GT.Q4_K
    if row_len % 256 and t in (GT.Q4_K, GT.Q6_K):  # llama.cpp's fallbacks
        t = {GT.Q4_K: GT.Q5_0, GT.Q6_K: GT.Q8_0}[t]
    return t


# Relative RMS error bounds for N(0, s) weights, from each format's grid step: uniform rounding
# error has RMS step/sqrt(12). Q8_0 step amax/127 (~0.006 s); Q4_0 amax/8 (~0.09 s);
# Q5_0 amax/16 (~0.045 s); Q4_K 16 levels over each 32-value range (~0.08 s);
# Q6_K 64 levels over +-amax of 16 values (~0.02 s). Bounds leave ~1.5x headroom.
REL_RMS_BOUND = {GT.Q8_0: 0.01, GT.Q4_0: 0.13, GT.Q5_0: 0.07, GT.Q4_K: 0.12, GT.Q6_K: 0.035}


SAMPLE_ROWS = 3000  # block-quantized tensors with more rows are checked on a random row sample


def check_values(t, ref, what):
    """Compare GGUF tensor `t` with source float32 `ref` (torch tensor)."""
    if t.tensor_type not in (GT.F32, GT.F16) and ref.dim() == 2 and ref.shape[0] > SAMPLE_ROWS:
        rows = np.sort(np.random.default_rng(0).choice(ref.shape[0], SAMPLE_ROWS, replace=False))
        rows[0], rows[-1] = 0, ref.shape[0] - 1
        data = np.asarray(t.data)[rows]
        got = np.asarray(gguf.quants.dequantize(data, t.tensor_type), dtype=np.float32)
        return _check_block_values(t.tensor_type, data, got, ref[torch.from_numpy(rows)].contiguous(), what)
    got = deq(t)
    ref32 = np32(ref)
    assert got.shape == ref32.shape, (what, got.shape, ref32.shape)
    if t.tensor_type == GT.F32:
        np.testing.assert_array_equal(got, ref32, err_msg=what)  # bf16 -> f32 is exact
    elif t.tensor_type == GT.F16:
        # the one rounding allowed: f32 -> f16 to nearest even (torch's cast as the reference)
        np.testing.assert_array_equal(got, ref.to(torch.float16).float().numpy(), err_msg=what)
    else:
        _check_block_values(t.tensor_type, np.asarray(t.data), got, ref, what)


def _check_block_values(qtype, data, got, ref, what):
    ref32 = np32(ref)
    got = got.reshape(ref32.shape)
    if qtype in (GT.Q8_0, GT.Q4_0, GT.Q5_0):
        # gguf-py's numpy quantizer is an independent implementation of the same format
        want = gguf.quants.quantize(ref32.reshape(-1, ref32.shape[-1]), qtype)
        assert np.array_equal(data.reshape(want.shape), want), f"{what}: bytes differ from gguf-py"
    err = (got - ref32).astype(np.float64)
    rel = float(np.sqrt(np.mean(err ** 2) / np.mean(ref32.astype(np.float64) ** 2)))
    assert rel < REL_RMS_BOUND[qtype], f"{what}: {qtype.name} rel RMS error {rel:.4f}"


def check_llm_file(path, quant, ck, src, layers):
    cfg = json.loads((ck / "config.json").read_text())
    r, tensors = read(path)
    names = llm_names(layers)
    assert set(tensors) == set(names) and len(tensors) == 12 * layers + 3
    for gname, hname in names.items():
        t = tensors[gname]
        ref = src[hname]
        shape = tuple(int(x) for x in reversed(t.shape))  # GGUF ne is reversed
        assert shape == tuple(ref.shape), (gname, shape, tuple(ref.shape))
        want = expected_llm_type(quant, gname, ref.dim(), ref.shape[-1], layers)
        assert t.tensor_type == want, f"{gname}: {t.tensor_type.name}, want {want.name}"
        check_values(t, ref, gname)

    ftype = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 7, "q4_k_m": 15}[quant]  # llama.cpp LLAMA_FTYPE
    H = cfg["hidden_size"]
    expect = {
        "general.architecture": "qwen2", "general.file_type": ftype, "general.quantization_version": 2,
        "qwen2.block_count": layers, "qwen2.context_length": 32768, "qwen2.embedding_length": H,
        "qwen2.feed_forward_length": cfg["intermediate_size"],
        "qwen2.attention.head_count": cfg["num_attention_heads"],
        "qwen2.attention.head_count_kv": cfg["num_key_value_heads"],
        "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "qwen2",
        "tokenizer.ggml.bos_token_id": 151644, "tokenizer.ggml.eos_token_id": 151645,
        "tokenizer.ggml.unknown_token_id": 128244, "tokenizer.ggml.padding_token_id": 0,
    }
    for k, v in expect.items():
        assert field(r, k) == v, (k, field(r, k), v)
    assert field(r, "qwen2.rope.freq_base") == pytest.approx(1e6)
    assert field(r, "qwen2.attention.layer_norm_rms_epsilon") == pytest.approx(1e-6)
    assert isinstance(field(r, "general.name"), str) and field(r, "general.name")
    tok_cfg = json.loads((ck / "tokenizer_config.json").read_text())
    assert field(r, "tokenizer.chat_template") == tok_cfg["chat_template"]
    for k in ("qwen2.block_count", "general.file_type", "tokenizer.ggml.bos_token_id"):
        assert r.fields[k].types == [gguf.GGUFValueType.UINT32], k
    return r


def check_tokenizer_fields(r, ck):
    from tokenizers import Tokenizer

    hf = Tokenizer.from_file(str(ck / "tokenizer.json"))
    tokens = field(r, "tokenizer.ggml.tokens")
    assert len(tokens) == VOCAB_SIZE
    assert tokens == [hf.id_to_token(i) for i in range(VOCAB_SIZE)]
    types = field(r, "tokenizer.ggml.token_type")
    special = {UNK_ID, *range(N_BASE_VOCAB, VOCAB_SIZE)}
    assert [i for i, t in enumerate(types) if t != 1] == sorted(special)
    assert all(types[i] == 3 for i in special)  # CONTROL, as llama.cpp marks special added tokens
    merges = [ln.rstrip("\n") for ln in open(ck / "merges.txt", encoding="utf-8")][1:]
    assert field(r, "tokenizer.ggml.merges") == merges and len(merges) == 151387


# (f32 is checked on the mmproj, whose f32 file is small; the f32 LLM file feeds the llama.cpp
# check below. Each LLM file costs GGUFReader seconds for its 300k tokenizer strings.)
@pytest.mark.parametrize("quant", ["f16", "q8_0", "q4_0"])
def test_llm_plain_types(converted, ck_small, src_small, quant):
    path = converted(ck_small, quant)
    want_name = {"f16": "ggml-model-f16.gguf", "q8_0": "ggml-model-Q8_0.gguf", "q4_0": "ggml-model-Q4_0.gguf"}[quant]
    assert path.name == want_name
    r = check_llm_file(path, quant, ck_small, src_small, LAYERS_SMALL)
    if quant == "f16":
        check_tokenizer_fields(r, ck_small)


def test_llm_q4_k_m_fallbacks(converted, ck_small, src_small):
    """Rows of 128: Q4_K -> Q5_0, Q6_K -> Q8_0, as llama-quantize does."""
    need_core_quantize()
    path = converted(ck_small, "q4_k_m")
    assert path.name == "ggml-model-Q4_K_M.gguf"
    check_llm_file(path, "q4_k_m", ck_small, src_small, LAYERS_SMALL)


def test_llm_q4_k_m(converted, ck_k, src_k):
    need_core_quantize()
    path = converted(ck_k, "q4_k_m")
    r = check_llm_file(path, "q4_k_m", ck_k, src_k, LAYERS_K)
    types = {t.name: t.tensor_type for t in r.tensors}
    assert types["token_embd.weight"] == GT.Q4_K and types["output.weight"] == GT.Q6_K
    assert [i for i in range(LAYERS_K) if types[f"blk.{i}.attn_v.weight"] == GT.Q6_K] == [2, 3]


# ---------------------------------------------------------------- mmproj

def mmproj_expect(cfg):
    """GGUF name -> (HF source name, transform) per spec 9.3."""
    e = {"v.patch_embd.weight": "vpm.embeddings.patch_embedding.weight",
         "v.patch_embd.bias": "vpm.embeddings.patch_embedding.bias",
         "v.position_embd.weight": "vpm.embeddings.position_embedding.weight",
         "v.post_ln.weight": "vpm.post_layernorm.weight", "v.post_ln.bias": "vpm.post_layernorm.bias",
         "resampler.query": "resampler.query", "resampler.kv.weight": "resampler.kv_proj.weight",
         "resampler.attn.out.weight": "resampler.attn.out_proj.weight",
         "resampler.attn.out.bias": "resampler.attn.out_proj.bias"}
    for ln in ("ln_q", "ln_kv", "ln_post"):
        for s in ("weight", "bias"):
            e[f"resampler.{ln}.{s}"] = f"resampler.{ln}.{s}"
    for i in range(cfg["vision_config"]["num_hidden_layers"]):
        p = f"vpm.encoder.layers.{i}."
        for s in ("weight", "bias"):
            for hf, gg in (("q_proj", "attn_q"), ("k_proj", "attn_k"), ("v_proj", "attn_v"), ("out_proj", "attn_out")):
                e[f"v.blk.{i}.{gg}.{s}"] = f"{p}self_attn.{hf}.{s}"
            e[f"v.blk.{i}.ln1.{s}"] = f"{p}layer_norm1.{s}"
            e[f"v.blk.{i}.ln2.{s}"] = f"{p}layer_norm2.{s}"
            e[f"v.blk.{i}.ffn_down.{s}"] = f"{p}mlp.fc1.{s}"  # the legacy swapped names
            e[f"v.blk.{i}.ffn_up.{s}"] = f"{p}mlp.fc2.{s}"
    return e


def sincos_reference(embed_dim, grid=70):
    """The resampler's get_2d_sincos_pos_embed as the HF code computes it (MAE style, float32)."""
    def one_d(dim, pos):
        omega = np.arange(dim // 2, dtype=np.float32)
        omega /= dim / 2.0
        omega = 1.0 / 10000 ** omega
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    gh = np.arange(grid, dtype=np.float32)
    gw = np.arange(grid, dtype=np.float32)
    g = np.meshgrid(gw, gh)  # w goes first
    g = np.stack(g, axis=0).reshape(2, 1, grid, grid)
    return np.concatenate([one_d(embed_dim // 2, g[0]), one_d(embed_dim // 2, g[1])], axis=1)


@pytest.mark.parametrize("mm_type", ["f16", "f32", "q8_0"])
def test_mmproj(converted, ck_small, src_small, mm_type):
    cfg = json.loads((ck_small / "config.json").read_text())
    path = converted(ck_small, "f16", mm_type)
    assert path.name == f"mmproj-model-{mm_type}.gguf"
    r, tensors = read(path)
    VL = cfg["vision_config"]["num_hidden_layers"]
    H = cfg["hidden_size"]
    e = mmproj_expect(cfg)
    special = {f"resampler.attn.{x}.{s}" for x in "qkv" for s in ("weight", "bias")} | {
        "resampler.proj.weight", "resampler.pos_embed_k"}
    assert set(tensors) == set(e) | special
    assert len(tensors) == 16 * VL + 23  # spec 9.3: 2 + 1 + 16 L + 2 vision, 18 resampler

    def want_type(name, ndim):
        if mm_type == "f32":
            return GT.F32
        if ndim == 4:
            return GT.F16
        if ndim == 2 and name.endswith(".weight"):
            if mm_type == "q8_0" and name != "v.position_embd.weight":
                return GT.Q8_0
            return GT.F16
        return GT.F32  # biases, norms, resampler.query, pos_embed_k

    def check(name, ref):
        t = tensors[name]
        assert t.tensor_type == want_type(name, ref.dim()), (name, t.tensor_type.name)
        check_values(t, ref, name)

    for gname, hname in e.items():
        check(gname, src_small[hname])
    # fc1 is (VF x VH): the "ffn_down" name holds the first MLP matmul (legacy swap)
    VF, VH = cfg["vision_config"]["intermediate_size"], cfg["vision_config"]["hidden_size"]
    assert tuple(reversed(tensors["v.blk.0.ffn_down.weight"].shape)) == (VF, VH)
    assert tuple(reversed(tensors["v.blk.0.ffn_up.weight"].shape)) == (VH, VF)
    w, b = src_small["resampler.attn.in_proj_weight"], src_small["resampler.attn.in_proj_bias"]
    for k, x in enumerate("qkv"):
        check(f"resampler.attn.{x}.weight", w[k * H:(k + 1) * H].contiguous())
        check(f"resampler.attn.{x}.bias", b[k * H:(k + 1) * H].contiguous())
    check("resampler.proj.weight", src_small["resampler.proj"].T.contiguous())  # W = P^T
    # ... and W x == x P on a vector (the meaning of the transpose)
    x = np.random.default_rng(0).standard_normal(H).astype(np.float32)
    P = np32(src_small["resampler.proj"])
    np.testing.assert_allclose(deq(tensors["resampler.proj.weight"]) @ x, x @ P, rtol=0,
                               atol=1e-2 if mm_type != "f32" else 1e-5)
    pe = tensors["resampler.pos_embed_k"]
    assert pe.tensor_type == GT.F32 and tuple(reversed(pe.shape)) == (4900, H)
    # float32 reference: angles up to 69 rad carry ~69 * 2^-24 = 4e-6 of rounding
    np.testing.assert_allclose(deq(pe), sincos_reference(H), rtol=0, atol=2e-5)

    expect = {
        "general.architecture": "clip", "general.description": "image encoder for MiniCPM-V",
        "general.file_type": {"f32": 0, "f16": 1, "q8_0": 7}[mm_type],
        "clip.has_text_encoder": False, "clip.has_vision_encoder": True, "clip.has_minicpmv_projector": True,
        "clip.projector_type": "resampler", "clip.minicpmv_version": 3, "clip.minicpmv_query_num": 64,
        "clip.vision.image_size": 448, "clip.vision.patch_size": 14,
        "clip.vision.embedding_length": VH, "clip.vision.feed_forward_length": VF,
        "clip.vision.projection_dim": 0,
        "clip.vision.attention.head_count": cfg["vision_config"]["num_attention_heads"],
        "clip.vision.block_count": VL, "clip.vision.image_mean": [0.5, 0.5, 0.5],
        "clip.vision.image_std": [0.5, 0.5, 0.5], "clip.use_gelu": True,
    }
    for k, v in expect.items():
        assert field(r, k) == v, (k, field(r, k), v)
    assert field(r, "clip.vision.attention.layer_norm_epsilon") == pytest.approx(1e-6)
    assert r.fields["clip.minicpmv_version"].types == [gguf.GGUFValueType.INT32]


# ---------------------------------------------------------------- llama.cpp cross-checks

def _llama_cpp():
    try:
        import llama_cpp
    except ImportError:
        pytest.skip("llama-cpp-python is not installed (optional peer check)")
    return llama_cpp


def _llama_quantize(llama_cpp, src, dst, ftype):
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = ftype
    p.nthread = 1
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(p))
    assert rc == 0, f"llama.cpp could not quantize {src}"


@pytest.mark.optional
def test_llama_cpp_agrees_on_the_q4_k_m_mix(tmp_path, converted, ck_k):
    """llama.cpp loads our f32 file and quantizes it to Q4_K_M: same type for every tensor; and
    since both quantize the same f32 values with ggml's reference algorithm (no imatrix), the
    same bytes."""
    llama_cpp = _llama_cpp()
    need_core_quantize()
    f32 = convert_checkpoint(ck_k, tmp_path, "f32", mmproj=False, progress=False)[0]
    ours = converted(ck_k, "q4_k_m")
    assert f32.name == "ggml-model-f32.gguf"
    theirs = tmp_path / "llama-cpp-Q4_K_M.gguf"
    _llama_quantize(llama_cpp, f32, theirs, 15)
    _, a = read(ours)
    _, b = read(theirs)
    assert set(a) == set(b)
    for name in a:
        assert a[name].tensor_type == b[name].tensor_type, (name, a[name].tensor_type.name, b[name].tensor_type.name)
        assert np.array_equal(np.asarray(a[name].data), np.asarray(b[name].data)), f"{name}: bytes differ from llama.cpp"


# ---------------------------------------------------------------- streaming memory

def test_streaming_peak_memory(tmp_path, ck_small):
    """Tensors are decoded and written chunk by chunk from the memory-mapped shards: the peak of
    the Python heap (tracemalloc sees numpy buffers) does not contain the largest tensor
    (token_embd in float32: 151666 x 128 x 4 = 77.7 MB), while converting with chunks as large
    as a whole tensor does."""
    largest = VOCAB_SIZE * 128 * 4

    def peak(chunk_bytes, out):
        tracemalloc.start()
        try:
            convert_checkpoint(ck_small, out, "f16", mmproj=False, progress=False, chunk_bytes=chunk_bytes)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    streamed = peak(1 << 20, tmp_path / "a")
    whole = peak(1 << 40, tmp_path / "b")
    # what remains in the streamed peak is the tokenizer metadata (2 x ~150k strings, ~45 MB)
    assert streamed < 64e6, f"streamed peak {streamed / 1e6:.1f} MB"
    assert whole - streamed > 0.8 * largest, f"{whole / 1e6:.1f} MB vs {streamed / 1e6:.1f} MB"
    assert (tmp_path / "a" / "ggml-model-f16.gguf").stat().st_size > largest


# ---------------------------------------------------------------- refusals and bad input

def shallow_copy(ck, dst):
    """A checkpoint directory whose files are symlinks to `ck` (cheap to corrupt one file)."""
    dst.mkdir()
    for p in ck.iterdir():
        (dst / p.name).symlink_to(p)
    return dst


def replace_json(d, name, fn):
    data = json.loads((d / name).read_text())
    (d / name).unlink()
    fn(data)
    (d / name).write_text(json.dumps(data))


def test_refuses_to_overwrite(tmp_path, ck_small, capsys):
    from minicpmv_edge.cli import main

    out = tmp_path / "out"
    out.mkdir()
    existing = out / "mmproj-model-f16.gguf"
    existing.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="mmproj-model-f16.gguf"):
        convert_checkpoint(ck_small, out, "f16", "f16", progress=False)
    assert not (out / "ggml-model-f16.gguf").exists()  # nothing written when refusing
    rc = main(["convert", str(ck_small), "-o", str(out), "--quant", "f16", "--no-progress", "--skip-llm"])
    assert rc == 1 and "mmproj-model-f16.gguf" in capsys.readouterr().err
    assert existing.read_bytes() == b"keep me"
    rc = main(["convert", str(ck_small), "-o", str(out), "--quant", "f16", "--no-progress", "--skip-llm", "--force"])
    assert rc == 0
    r, _ = read(existing)
    assert field(r, "general.architecture") == "clip"
    assert not list(out.glob("*.part"))


def test_missing_config(tmp_path, ck_small):
    d = shallow_copy(ck_small, tmp_path / "ck")
    (d / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        convert_checkpoint(d, tmp_path / "out", "f16", progress=False)


def test_wrong_model_type(tmp_path, ck_small):
    d = shallow_copy(ck_small, tmp_path / "ck")
    replace_json(d, "config.json", lambda c: c.update(model_type="qwen2"))
    with pytest.raises(ValueError, match="model_type is 'qwen2', expected 'minicpmv'"):
        convert_checkpoint(d, tmp_path / "out", "f16", progress=False)


def test_missing_index(tmp_path, ck_small):
    d = shallow_copy(ck_small, tmp_path / "ck")
    (d / "model.safetensors.index.json").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors.index.json"):
        convert_checkpoint(d, tmp_path / "out", "f16", progress=False)


def test_missing_shard(tmp_path, ck_small):
    d = shallow_copy(ck_small, tmp_path / "ck")
    (d / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"model-00002-of-00002\.safetensors.*(vpm|resampler|llm)\."):
        convert_checkpoint(d, tmp_path / "out", "f16", progress=False)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_missing_tensor_key(tmp_path, ck_small):
    d = shallow_copy(ck_small, tmp_path / "ck")
    replace_json(d, "model.safetensors.index.json", lambda ix: ix["weight_map"].pop("llm.model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(ValueError, match=r"model\.safetensors\.index\.json.*llm\.model\.layers\.1\.mlp\.up_proj\.weight"):
        convert_checkpoint(d, tmp_path / "out", "f16", progress=False)


def test_key_missing_from_shard(tmp_path, ck_small):
    d = shallow_copy(ck_small, tmp_path / "ck")
    replace_json(d, "model.safetensors.index.json",
                 lambda ix: ix["weight_map"].__setitem__("resampler.proj", "model-00001-of-00002.safetensors"))
    with pytest.raises(ValueError, match=r"model-00001-of-00002\.safetensors.*'resampler\.proj'"):
        convert_checkpoint(d, tmp_path / "out", "f16", llm=False, progress=False)


def test_corrupt_shard_header(tmp_path, ck_small):
    d = shallow_copy(ck_small, tmp_path / "ck")
    shard = d / "model-00002-of-00002.safetensors"
    data = bytearray(shard.read_bytes())
    shard.unlink()
    data[8:40] = b"{" * 32  # break the JSON header
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model-00002-of-00002\.safetensors.*corrupt"):
        convert_checkpoint(d, tmp_path / "out", "f16", llm=False, progress=False)
    shard.write_bytes(bytes(data[:4]))  # truncated
    with pytest.raises(ValueError, match=r"model-00002-of-00002\.safetensors.*truncated"):
        convert_checkpoint(d, tmp_path / "out", "f16", llm=False, progress=False)


def test_truncated_shard_data(tmp_path, ck_small):
    d = shallow_copy(ck_small, tmp_path / "ck")
    shard = d / "model-00002-of-00002.safetensors"
    data = shard.read_bytes()
    shard.unlink()
    shard.write_bytes(data[:-100])
    with pytest.raises(ValueError, match=r"model-00002-of-00002\.safetensors.*data_offsets"):
        convert_checkpoint(d, tmp_path / "out", "f16", llm=False, progress=False)


def test_shape_mismatch(tmp_path, ck_small):
    d = shallow_copy(ck_small, tmp_path / "ck")
    replace_json(d, "config.json", lambda c: c.update(intermediate_size=256))
    with pytest.raises(ValueError, match=r"mlp\.gate_proj\.weight.*shape \[128, 128\], expected \[256, 128\]"):
        convert_checkpoint(d, tmp_path / "out", "f16", progress=False)


def test_missing_tokenizer(tmp_path, ck_small):
    d = shallow_copy(ck_small, tmp_path / "ck")
    (d / "tokenizer_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer_config.json"):
        convert_checkpoint(d, tmp_path / "out", "f16", progress=False)


def test_bad_choice(tmp_path, ck_small):
    with pytest.raises(ValueError, match="q3_k"):
        convert_checkpoint(ck_small, tmp_path, "q3_k", progress=False)


def test_cli_end_to_end(tmp_path, ck_small):
    """The installed verb: paths on stdout, the progress bar on stderr, exit status 0."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "minicpmv_edge", "convert", str(ck_small), "-o", str(tmp_path),
                        "--quant", "f16", "--mmproj-type", "f16", "--skip-llm", "--threads", "1"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(tmp_path / "mmproj-model-f16.gguf")
    assert "mmproj-model-f16.gguf" in r.stderr and "100%" in r.stderr
    r = subprocess.run([sys.executable, "-m", "minicpmv_edge", "convert", str(tmp_path / "nope"), "-o", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "nope" in r.stderr and "not found" in r.stderr
