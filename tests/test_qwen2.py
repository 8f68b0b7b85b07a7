"""Qwen2 decoder (cpp/model/qwen2.cpp) against transformers' Qwen2ForCausalLM in float32.

The GGUF files here are written by gguf-py's GGUFWriter straight from a random transformers model
(llama.cpp's qwen2 tensor names), and the reference model is rebuilt from what gguf-py reads back
(gguf.quants.dequantize): for a quantized file both sides then use exactly the same weights and the
only remaining difference is how the activations are handled by the kernels.
"""
import copy
import functools

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as QT
from gguf import GGUFReader, GGUFWriter, quants
from transformers import Qwen2Config, Qwen2ForCausalLM

from minicpmv_edge import _core

# Tiny but shaped like the real one: GQA (group 2), biases on q/k/v, untied head, theta 1e6.
# Widths are multiples of 256 so every block format (incl. K-quants) can store every matrix.
CFG = dict(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
           num_attention_heads=4, num_key_value_heads=2, rope_theta=1e6, rms_norm_eps=1e-6,
           max_position_embeddings=4096, tie_word_embeddings=False)
N_VOCAB = CFG["vocab_size"]

HF_TO_GGUF = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight", "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def gguf_name(hf):
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    _, _, n, rest = hf.split(".", 3)
    return f"blk.{n}.{HF_TO_GGUF[rest]}"


def random_state_dict(seed=0):
    """Weights with larger-than-init scales so that logits spread over several units (an argmax
    that is not decided by noise, and errors that would show)."""
    g = torch.Generator().manual_seed(seed)
    model = Qwen2ForCausalLM(Qwen2Config(**CFG))
    sd = {}
    for k, v in model.state_dict().items():
        if k.endswith("norm.weight"):
            sd[k] = 1 + 0.1 * torch.randn(v.shape, generator=g)
        elif k.endswith(".bias"):
            sd[k] = 0.1 * torch.randn(v.shape, generator=g)
        elif k == "model.embed_tokens.weight":
            sd[k] = torch.randn(v.shape, generator=g)
        else:
            sd[k] = torch.randn(v.shape, generator=g) / np.sqrt(v.shape[1]) * 1.5
    return sd


def add_qwen2_hparams(w, c=CFG):
    """The qwen2.* hyper-parameter keys of llama.cpp's layout, from a transformers config dict."""
    w.add_block_count(c["num_hidden_layers"])
    w.add_context_length(c["max_position_embeddings"])
    w.add_embedding_length(c["hidden_size"])
    w.add_feed_forward_length(c["intermediate_size"])
    w.add_head_count(c["num_attention_heads"])
    w.add_head_count_kv(c["num_key_value_heads"])
    w.add_rope_freq_base(c["rope_theta"])
    w.add_layer_norm_rms_eps(c["rms_norm_eps"])


def write_gguf(path, sd, qtype=QT.F32, arch="qwen2", drop=()):
    w = GGUFWriter(str(path), arch)
    add_qwen2_hparams(w)
    for k, v in sd.items():
        name = gguf_name(k)
        if name in drop:
            continue
        a = v.numpy().astype(np.float32)
        if a.ndim == 1 or qtype == QT.F32:
            w.add_tensor(name, a)
        elif qtype == QT.F16:
            w.add_tensor(name, a.astype(np.float16))
        else:
            w.add_tensor(name, quants.quantize(a, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@functools.lru_cache(maxsize=8)
def gguf_tensors(path):
    """{name: tensor} as gguf-py reads them (cached: parsing a real-vocabulary file's metadata in
    Python takes seconds)."""
    return {t.name: t for t in GGUFReader(str(path)).tensors}


def reference_from_gguf(path, cfg=CFG, n_vocab=None):
    """transformers Qwen2ForCausalLM (float32) with the weights gguf-py reads back from the file.
    With n_vocab, only the first n_vocab rows of token_embd and output are read (a model over that
    slice of the vocabulary: dequantizing 151666 rows in numpy takes a minute)."""
    by_name = gguf_tensors(path)
    cfg = dict(cfg, vocab_size=n_vocab or cfg["vocab_size"])
    template = Qwen2ForCausalLM(Qwen2Config(**cfg))
    sd = {}
    for k, v in template.state_dict().items():
        t = by_name[gguf_name(k)]
        data = t.data[:n_vocab] if n_vocab and k in ("model.embed_tokens.weight", "lm_head.weight") else t.data
        a = quants.dequantize(data, t.tensor_type).reshape(v.shape)
        sd[k] = torch.from_numpy(np.array(a, dtype=np.float32))
    template.load_state_dict(sd)
    return template.eval()


def round_half_away(v):
    return torch.sign(v) * torch.floor(v.abs() + 0.5)


def int8_activations_32(x):
    """The int8 activations the kernels pair with 32-blocks (Q8_0 semantics, as llama.cpp):
    per 32 values d = max|x| / 127, q = round_half_away(x / d), value = q * fp16(d)."""
    xb = x.reshape(*x.shape[:-1], -1, 32)
    d = xb.abs().amax(-1, keepdim=True) / 127
    inv = torch.where(d != 0, 1.0 / d, torch.zeros_like(d))
    q = round_half_away(xb * inv)
    return (q * d.to(torch.float16).to(torch.float32)).reshape(x.shape)


def int8_activations_256(x, qmax=128):
    """The int8 activations paired with K-quants (Q8_K semantics): per 256 values m = the value of
    largest |x|, iscale = -qmax / m, q = min(127, round_half_even(iscale x)), value = q / iscale.
    Our kernels use qmax 128 (kernels/kernel_set.h); llama.cpp's CPU backend uses 127."""
    xb = x.reshape(*x.shape[:-1], -1, 256)
    idx = xb.abs().argmax(-1, keepdim=True)
    m = torch.gather(xb, -1, idx)
    iscale = torch.where(m != 0, -float(qmax) / m, torch.zeros_like(m))
    q = torch.clamp(torch.round(xb * iscale), max=127)
    return torch.where(m != 0, q * (1.0 / iscale), torch.zeros_like(xb)).reshape(x.shape)


def emulate_int8_activations(model, path, qmax_k=128):
    """Hooks every Linear whose GGUF weight is block-quantized so its input goes through the same
    int8 rounding as the kernels' activations (a reference of the scheme, written from its spec)."""
    types = {name: t.tensor_type for name, t in gguf_tensors(path).items()}
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.Linear):
            continue
        t = types.get(gguf_name(name + ".weight"), types["token_embd.weight"])  # tied head
        if t in (QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q8_0):
            mod.register_forward_pre_hook(lambda m, args: (int8_activations_32(args[0]),))
        elif t in (QT.Q4_K, QT.Q5_K, QT.Q6_K):
            mod.register_forward_pre_hook(lambda m, args: (int8_activations_256(args[0], qmax_k),))
    return model


def has_k_quants(path):
    return any(t.tensor_type in (QT.Q4_K, QT.Q5_K, QT.Q6_K) for t in gguf_tensors(path).values())


def hf_logits(model, ids=None, embeds=None):
    with torch.no_grad():
        if embeds is not None:
            return model(inputs_embeds=torch.from_numpy(embeds)[None]).logits[0].numpy()
        return model(torch.tensor([ids])).logits[0].numpy()


@pytest.fixture(scope="module")
def state():
    return random_state_dict(0)


@pytest.fixture(scope="module")
def f32_file(tmp_path_factory, state):
    return write_gguf(tmp_path_factory.mktemp("qwen2") / "tiny-f32.gguf", state)


@pytest.fixture(scope="module")
def f32_ref(f32_file):
    return reference_from_gguf(f32_file)


def prompt(n, seed=1, n_vocab=N_VOCAB):
    return np.random.default_rng(seed).integers(0, n_vocab, n).astype(np.int32)


# float32 end to end, f32 KV cache: the only differences are summation order inside the dot
# products and softmax (a few float32 ulps per op over 2 layers); logits here span ~+-10, where
# one ulp is ~1e-6, so 1e-4 leaves room for accumulation but catches any real mistake (a wrong
# RoPE angle, mask or bias changes logits by >1e-2).
TOL_F32 = 1e-4


@pytest.mark.parametrize("n_batch", [512, 7])
def test_f32_all_positions(f32_file, f32_ref, n_batch):
    ids = prompt(40)
    llm = _core.LLM(str(f32_file), n_ctx=64, n_threads=2, n_batch=n_batch, kv_type="f32")
    ours = llm.eval(ids, all_logits=True)
    ref = hf_logits(f32_ref, ids.tolist())
    assert ours.shape == (40, N_VOCAB) and llm.n_past == 40
    assert np.abs(ref).max() > 2, "logits too flat to test anything"
    err = np.abs(ours - ref).max()
    assert err < TOL_F32, err


def test_f32_last_position_and_config(f32_file, f32_ref):
    ids = prompt(25, seed=2)
    llm = _core.LLM(str(f32_file), n_ctx=64, n_threads=2, kv_type="f32")
    c = llm.config
    assert (c["n_layer"], c["n_head"], c["n_head_kv"], c["head_dim"], c["n_ff"], c["n_vocab"]) == (2, 4, 2, 64, 512, 512)
    assert c["rope_theta"] == 1e6 and llm.n_embd == 256 and llm.n_vocab == 512 and llm.n_ctx == 64
    ours = llm.eval(ids)
    assert ours.shape == (N_VOCAB,)
    assert np.abs(ours - hf_logits(f32_ref, ids.tolist())[-1]).max() < TOL_F32


# f16 KV cache (the default): keys and values are rounded to half precision (relative error
# <= 2^-11 ~ 5e-4 per element), which moves scores and attention outputs by ~1e-3 of their size;
# 2e-2 on logits of magnitude ~10 bounds that with margin and still catches a wrong position.
TOL_KV_F16 = 2e-2


def test_f16_kv_cache(f32_file, f32_ref):
    ids = prompt(40)
    llm = _core.LLM(str(f32_file), n_ctx=64, n_threads=2)
    err = np.abs(llm.eval(ids, all_logits=True) - hf_logits(f32_ref, ids.tolist())).max()
    assert err < TOL_KV_F16, err


def test_greedy_32_tokens(f32_file, f32_ref):
    """Prefill, then decode one token at a time through the cache: the argmax path equals
    transformers' greedy generate."""
    ids = prompt(12, seed=3)
    with torch.no_grad():
        out = f32_ref.generate(torch.tensor([ids.tolist()]), max_new_tokens=32, do_sample=False,
                               min_new_tokens=32, pad_token_id=0, eos_token_id=None)
    expected = out[0, len(ids):].tolist()
    llm = _core.LLM(str(f32_file), n_ctx=64, n_threads=2, kv_type="f32")
    logits = llm.eval(ids)
    got = []
    for _ in range(32):
        tok = int(np.argmax(logits))
        got.append(tok)
        logits = llm.eval([tok])
    assert got == expected
    assert llm.n_past == 12 + 32


def test_multi_turn_and_truncate(f32_file, f32_ref):
    a, b, c = prompt(17, seed=4), prompt(9, seed=5), prompt(6, seed=6)
    llm = _core.LLM(str(f32_file), n_ctx=64, n_threads=2, n_batch=8, kv_type="f32")
    llm.eval(a)
    turn2 = llm.eval(b, all_logits=True)
    ref_ab = hf_logits(f32_ref, np.concatenate([a, b]).tolist())
    assert np.abs(turn2 - ref_ab[len(a):]).max() < TOL_F32
    # rewind to the end of A and continue with C instead of B
    llm.truncate(len(a))
    assert llm.n_past == len(a)
    turn2c = llm.eval(c, all_logits=True)
    ref_ac = hf_logits(f32_ref, np.concatenate([a, c]).tolist())
    assert np.abs(turn2c - ref_ac[len(a):]).max() < TOL_F32
    llm.reset()
    assert llm.n_past == 0
    assert np.abs(llm.eval(c) - hf_logits(f32_ref, c.tolist())[-1]).max() < TOL_F32
    with pytest.raises(ValueError, match="truncate"):
        llm.truncate(100)


def test_mixed_embeddings(f32_file, f32_ref):
    """Embedding rows injected at placeholder positions (the image path) equal transformers called
    with inputs_embeds where those rows are replaced."""
    ids = prompt(30, seed=7)
    positions = np.array(list(range(4, 12)) + list(range(20, 23)), dtype=np.int32)
    rows = np.random.default_rng(8).standard_normal((len(positions), CFG["hidden_size"])).astype(np.float32)
    llm = _core.LLM(str(f32_file), n_ctx=64, n_threads=2, n_batch=10, kv_type="f32")
    embeds = llm.token_embedding(ids)
    with torch.no_grad():
        ref_embeds = f32_ref.model.embed_tokens(torch.tensor(ids.tolist())).numpy()
    assert np.array_equal(embeds, ref_embeds)
    embeds[positions] = rows
    tokens = ids.copy()
    tokens[positions] = -1  # ignored at embedded positions
    ours = llm.eval_mixed(tokens, rows, positions, all_logits=True)
    assert np.abs(ours - hf_logits(f32_ref, embeds=embeds)).max() < TOL_F32
    # bad positions are rejected before anything runs
    with pytest.raises(ValueError, match="increasing"):
        llm.eval_mixed(tokens, rows, positions[::-1].copy())
    assert llm.n_past == 30


def test_context_overflow(f32_file, f32_ref):
    llm = _core.LLM(str(f32_file), n_ctx=32, n_threads=2, kv_type="f32")
    a, b = prompt(20, seed=9), prompt(20, seed=10)
    llm.eval(a)
    with pytest.raises(_core.ContextLimitError, match=r"20 tokens does not fit: 20 in cache \+ 20 > n_ctx 32"):
        llm.eval(b)
    assert issubclass(_core.ContextLimitError, ValueError)
    assert llm.n_past == 20
    # still usable, and the cache was not touched by the rejected prompt
    ours = llm.eval(b[:12], all_logits=True)
    ref = hf_logits(f32_ref, np.concatenate([a, b[:12]]).tolist())[20:]
    assert np.abs(ours - ref).max() < TOL_F32
    with pytest.raises(_core.ContextLimitError):
        llm.eval([1])


def test_eval_step_batches_sessions(f32_file, f32_ref, tmp_path, state):
    """LLM.eval_step: one decode step of several forks at different positions, as one batch.
    Each row must be what transformers gives for that session's own sequence (f32 KV: TOL_F32),
    the caches must hold the right rows afterwards (the next per-session eval matches too), and a
    repeated or foreign LLM, a token count mismatch or a full cache is refused before anything is
    written."""
    base = _core.LLM(str(f32_file), n_ctx=48, n_threads=2, kv_type="f32")
    common = prompt(10, seed=20)
    base.eval(common)
    forks = [base.fork(), base.fork()]
    tails = [prompt(3, seed=21), prompt(7, seed=22)]  # the sessions end up at 10, 13 and 17 positions
    for f, t in zip(forks, tails):
        f.eval(t)
    llms = [base] + forks
    seqs = [common, np.concatenate([common, tails[0]]), np.concatenate([common, tails[1]])]
    toks = np.array([5, 77, 301], np.int32)
    out = _core.LLM.eval_step(llms, toks)
    assert out.shape == (3, N_VOCAB)
    for i, llm in enumerate(llms):
        assert llm.n_past == len(seqs[i]) + 1
        ref = hf_logits(f32_ref, np.concatenate([seqs[i], toks[i:i + 1]]).tolist())
        assert np.abs(out[i] - ref[-1]).max() < TOL_F32, i
        # the step's key/value rows are in this session's cache, at this session's position
        nxt = llm.eval([9])
        ref = hf_logits(f32_ref, np.concatenate([seqs[i], toks[i:i + 1], [9]]).tolist())
        assert np.abs(nxt - ref[-1]).max() < TOL_F32, i

    other = _core.LLM(str(f32_file), n_ctx=48, n_threads=2, kv_type="f32")  # another load
    before = [l.n_past for l in llms]
    with pytest.raises(ValueError, match="twice"):
        _core.LLM.eval_step([base, forks[0], base], toks)
    with pytest.raises(ValueError, match="does not share session 0's model"):
        _core.LLM.eval_step([base, other], toks[:2])
    with pytest.raises(ValueError, match="2 tokens for 3 LLMs"):
        _core.LLM.eval_step(llms, toks[:2])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        _core.LLM.eval_step(llms, np.array([1, 2, N_VOCAB], np.int32))
    full = forks[1].fork()
    full.eval(prompt(48 - full.n_past, seed=23))
    with pytest.raises(_core.ContextLimitError, match="session 1 is full"):
        _core.LLM.eval_step([base, full], toks[:2])
    assert [l.n_past for l in llms] == before

    # more sessions than n_batch rows: chunks of n_batch, same rows
    small = _core.LLM(str(f32_file), n_ctx=48, n_threads=2, n_batch=2, kv_type="f32")
    small.eval(common)
    trio = [small, small.fork(), small.fork()]
    trio[1].eval(tails[0])
    trio[2].eval(tails[1])
    out = _core.LLM.eval_step(trio, toks)
    for i in range(3):
        ref = hf_logits(f32_ref, np.concatenate([seqs[i], toks[i:i + 1]]).tolist())
        assert np.abs(out[i] - ref[-1]).max() < TOL_F32, i
        assert trio[i].n_past == len(seqs[i]) + 1

    # block-quantized weights: 2 rows run the single-token kernels once per token over L2 row
    # blocks (matmul's few-token path), so each row should be a single session's step; the bound
    # (1e-4 of the logit scale) also admits the multi-token tiles' summation order
    qpath = write_gguf(tmp_path / "tiny-q8.gguf", state, QT.Q8_0)
    a = _core.LLM(str(qpath), n_ctx=32, n_threads=2)
    a.eval(common)
    b = a.fork()
    b.eval(tails[0])
    solo_a, solo_b = a.fork(), b.fork()
    batched = _core.LLM.eval_step([a, b], toks[:2])
    singles = np.stack([solo_a.eval(toks[:1]), solo_b.eval(toks[1:2])])
    assert np.abs(batched - singles).max() < 1e-4 * np.abs(singles).max()


def test_bad_inputs(f32_file):
    llm = _core.LLM(str(f32_file), n_ctx=32, n_threads=1)
    with pytest.raises(ValueError, match="token id 512 at position 2 is outside the vocabulary"):
        llm.eval([1, 2, 512])
    with pytest.raises(ValueError, match="token id -3"):
        llm.eval([-3])
    with pytest.raises(ValueError, match="empty"):
        llm.eval(np.zeros(0, np.int32))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        llm.token_embedding([600])
    assert llm.n_past == 0
    with pytest.raises(ValueError, match="kv_type"):
        _core.LLM(str(f32_file), kv_type="q8")


def test_bad_files(tmp_path, state):
    with pytest.raises(ValueError, match="expected general.architecture qwen2, found llama"):
        _core.LLM(str(write_gguf(tmp_path / "llama.gguf", state, arch="llama")))
    with pytest.raises(ValueError, match="blk.1.ffn_up.weight"):
        _core.LLM(str(write_gguf(tmp_path / "missing.gguf", state, drop=("blk.1.ffn_up.weight",))))
    bad = dict(state)
    bad["model.layers.0.self_attn.k_proj.weight"] = bad["model.layers.0.self_attn.q_proj.weight"]
    with pytest.raises(ValueError, match="blk.0.attn_k.weight"):
        _core.LLM(str(write_gguf(tmp_path / "shape.gguf", bad)))
    with pytest.raises(FileNotFoundError):
        _core.LLM(str(tmp_path / "nope.gguf"))


def test_tied_embeddings(tmp_path, state):
    """A file without output.weight uses token_embd as the LM head (tie_word_embeddings)."""
    sd = dict(state)
    sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    path = write_gguf(tmp_path / "tied.gguf", sd, drop=("output.weight",))
    ref = Qwen2ForCausalLM(Qwen2Config(**CFG))
    ref.load_state_dict(sd)
    ids = prompt(10, seed=11)
    llm = _core.LLM(str(path), n_ctx=16, n_threads=2, kv_type="f32")
    expected = hf_logits(ref.eval(), ids.tolist())[-1]
    # the embedding (std 1) as head gives logits ~+-35: float32 rounding grows with the magnitude
    tol = TOL_F32 * max(1.0, np.abs(expected).max() / 10)
    assert np.abs(llm.eval(ids) - expected).max() < tol


def test_f16_file(tmp_path, state):
    """f16 weights: the kernels multiply them with f32 activations, so against transformers loaded
    with the same f16-rounded weights only the float32 summation order differs (TOL_F32)."""
    path = write_gguf(tmp_path / "tiny-f16.gguf", state, QT.F16)
    ref = reference_from_gguf(path)
    ids = prompt(40)
    llm = _core.LLM(str(path), n_ctx=64, n_threads=2, n_batch=16, kv_type="f32")
    assert np.abs(llm.eval(ids, all_logits=True) - hf_logits(ref, ids.tolist())).max() < TOL_F32


def check_quantized(path, n=40, cfg=CFG):
    """A block-quantized file against (a) transformers with the dequantized weights and float32
    activations and (b) the same with the kernels' int8 activation rounding emulated (hooks).

    (b) is the same computation up to float32 summation order: at positions before the first
    rounding flip (a value within float noise of a .5 boundary) it agrees to ~1e-6; a flip moves
    one int8 value by one step and, through K/V, every later position by up to a few 1e-2. So we
    require: some position agrees to 1e-4 (the scheme is exactly this one), ours is closer to (b)
    than (b) is to (a), and ours is within 3x the measured int8-activation effect of (a).
    """
    n_vocab = min(cfg["vocab_size"], 4096)  # compare the first 4096 logits (and prompt from those)
    ids = prompt(n, n_vocab=n_vocab)
    ref = reference_from_gguf(path, cfg, n_vocab=n_vocab)
    plain = hf_logits(ref, ids.tolist())
    llm = _core.LLM(str(path), n_ctx=64, n_threads=2, n_batch=16, kv_type="f32")
    ours = llm.eval(ids, all_logits=True)[:, :n_vocab]
    err_plain = np.abs(ours - plain).max()
    # K-quants: the kernels' Q8_K scale (-128/max) or llama.cpp's (-127/max), whichever they use
    candidates = [hf_logits(emulate_int8_activations(copy.deepcopy(ref), path, qmax), ids.tolist())
                  for qmax in ((128, 127) if has_k_quants(path) else (128,))]
    emulated = min(candidates, key=lambda e: np.abs(ours - e).max(axis=1).min())
    err_emul = np.abs(ours - emulated).max(axis=1)
    effect = np.abs(emulated - plain).max()
    msg = f"ours-plain {err_plain:.3e}, ours-emulated {err_emul.max():.3e} (min {err_emul.min():.3e}), int8 effect {effect:.3e}"
    assert err_emul.min() < 1e-4, msg
    assert err_emul.max() < effect, msg
    assert err_plain < 3 * effect and err_plain < 0.5, msg
    assert np.mean(ours.argmax(1) == plain.argmax(1)) >= 0.9, msg
    # token rows are looked up exactly (dequantized, no activation rounding)
    t = gguf_tensors(path)["token_embd.weight"]
    rows = quants.dequantize(t.data[ids], t.tensor_type).reshape(len(ids), -1)
    assert np.array_equal(llm.token_embedding(ids), rows)
    return msg


@pytest.mark.parametrize("qtype", [QT.Q8_0, QT.Q4_0])
def test_quantized_file(tmp_path, state, qtype):
    check_quantized(write_gguf(tmp_path / f"tiny-{qtype.name}.gguf", state, qtype))


# ---------------------------------------------------------------------------------------------
# The real pipeline: a tiny MiniCPM-V 2.6 checkpoint (real 151666-token vocabulary, real tensor
# names) converted by our converter, against transformers loaded from the checkpoint itself.

@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    import json
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_checkpoint import make_tiny_checkpoint

    root = tmp_path_factory.mktemp("converted")
    ck = make_tiny_checkpoint(root / "hf", hidden=256, ffn=512, heads=4, kv_heads=2, layers=2)
    files = {}
    for quant in ("f16", "q4_k_m"):
        out = root / quant
        subprocess.run([sys.executable, "-m", "minicpmv_edge", "convert", str(ck), "-o", str(out), "--quant", quant,
                        "--skip-mmproj", "--no-progress"], check=True, capture_output=True)
        (files[quant],) = out.glob("*.gguf")
    hf = json.loads((ck / "config.json").read_text())
    cfg = {k: hf[k] for k in CFG}
    sd = {}
    for shard in sorted(ck.glob("*.safetensors")):
        sd.update({k[4:]: v.float() for k, v in load_file(shard).items() if k.startswith("llm.")})
    model = Qwen2ForCausalLM(Qwen2Config(**cfg))
    model.load_state_dict(sd)
    return files, cfg, model.eval()


def test_converted_f16_against_checkpoint(converted):
    """Converter + engine end to end: the bf16 checkpoint's values are exact in f16 (8 < 10
    mantissa bits; the std-0.02 weights are far above f16's subnormal range), so this is the f32
    comparison again, against transformers loaded from the HF files themselves."""
    files, cfg, model = converted
    ids = prompt(30, seed=12, n_vocab=cfg["vocab_size"])
    llm = _core.LLM(str(files["f16"]), n_ctx=64, n_threads=2, kv_type="f32")
    assert llm.n_vocab == 151666
    ours = llm.eval(ids, all_logits=True)
    ref = hf_logits(model, ids.tolist())
    assert np.abs(ours - ref).max() < TOL_F32


def test_converted_q4_k_m(converted):
    """llama.cpp's Q4_K_M mix (q4_K, q6_K for attn_v / ffn_down / output) through the Q8_K
    activation path."""
    files, cfg, _ = converted
    check_quantized(files["q4_k_m"], cfg=cfg)
