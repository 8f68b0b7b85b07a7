"""MiniCPM-V 2.6 Hugging Face checkpoint -> two GGUF files, as llama.cpp's users have them:

* ggml-model-<QUANT>.gguf: the Qwen2 language model in llama.cpp's `qwen2` layout (spec 9.2);
* mmproj-model-<type>.gguf: SigLIP vision tower + resampler in llama.cpp's `clip` layout (9.3).

Every tensor's name, shape and type is decided and checked before anything is written; the data
is then streamed tensor by tensor, chunk by chunk (see plan.py, gguf_writer.py).
"""
import sys
from pathlib import Path

import numpy as np

from . import quantize as Q
from .checkpoint import Checkpoint, read_json
from .gguf_writer import FLOAT32, INT32, STRING, GGUFStreamWriter
from .plan import OutTensor
from .tokenizer import load_vocab

QUANT_CHOICES = tuple(Q.LLM_QUANTS)
MMPROJ_CHOICES = tuple(Q.MMPROJ_TYPES)
MINICPMV_VERSION = 3  # llama.cpp's number for MiniCPM-V 2.6
POS_EMBED_GRID = 70  # resampler sin-cos cache is 70x70 (spec 4)


def llm_output_name(quant):
    return f"ggml-model-{Q.LLM_QUANTS[quant][2]}.gguf"


def mmproj_output_name(mm_type):
    return f"mmproj-model-{mm_type}.gguf"


def _cfg(config, key, path, where=None):
    d = config if where is None else config.get(where)
    if not isinstance(d, dict) or key not in d:
        full = f"{where}.{key}" if where else key
        raise ValueError(f"{path}: missing key {full!r}")
    return d[key]


class ModelDims:
    """The numbers both files need, read from config.json and checked."""

    def __init__(self, config, path):
        mt = config.get("model_type")
        if mt != "minicpmv":
            raise ValueError(f"{path}: model_type is {mt!r}, expected 'minicpmv' "
                             f"(a MiniCPM-V 2.6 checkpoint such as openbmb/MiniCPM-V-2_6)")
        g = lambda k: _cfg(config, k, path)  # noqa: E731
        v = lambda k: _cfg(config, k, path, "vision_config")  # noqa: E731
        self.hidden = int(g("hidden_size"))
        self.ffn = int(g("intermediate_size"))
        self.layers = int(g("num_hidden_layers"))
        self.heads = int(g("num_attention_heads"))
        self.kv_heads = int(config.get("num_key_value_heads", self.heads))
        self.vocab = int(g("vocab_size"))
        self.ctx = int(config.get("max_position_embeddings", 32768))
        self.rope_theta = float(config.get("rope_theta", 1e6))
        self.rms_eps = float(config.get("rms_norm_eps", 1e-6))
        self.tie = bool(config.get("tie_word_embeddings", False))
        self.query_num = int(config.get("query_num", 64))
        self.image_size = int(config.get("image_size", 448))
        self.patch = int(config.get("patch_size", 14))
        self.v_hidden = int(v("hidden_size"))
        self.v_ffn = int(v("intermediate_size"))
        self.v_heads = int(v("num_attention_heads"))
        self.v_layers = int(v("num_hidden_layers"))
        if config.get("drop_vision_last_layer", False):
            self.v_layers -= 1  # the HF model deletes its last layer before loading weights
        self.v_eps = float(config["vision_config"].get("layer_norm_eps", 1e-6))
        self.v_patch = int(config["vision_config"].get("patch_size", 14))
        v_img = int(config["vision_config"].get("image_size", 980))
        self.n_pos = (v_img // self.v_patch) ** 2
        act = str(config["vision_config"].get("hidden_act", "gelu_pytorch_tanh"))
        self.use_gelu = act.startswith("gelu")
        for name, n, d in (("hidden_size", self.hidden, self.heads),
                           ("num_attention_heads", self.heads, self.kv_heads),
                           ("vision_config.hidden_size", self.v_hidden, self.v_heads)):
            if d <= 0 or n % d:
                raise ValueError(f"{path}: {name} = {n} is not divisible by {d}")
        self.head_dim = self.hidden // self.heads


def _check(src, shape, index_path):
    if tuple(src.shape) != tuple(shape):
        raise ValueError(f"{src.shard.path}: tensor {src.name!r} has shape {list(src.shape)}, "
                         f"expected {list(shape)} from config.json ({index_path.name})")
    return src


def plan_llm(ck, dims, quant):
    """The 12*layers + 3 tensors of the qwen2 GGUF, in llama.cpp's naming."""
    H, F, V, L = dims.hidden, dims.ffn, dims.vocab, dims.layers
    KV = dims.kv_heads * dims.head_dim
    out = []

    def add(gguf_name, hf_name, shape, layer=None):
        src = _check(ck.tensor(hf_name), shape, ck.index_path)
        out.append(OutTensor(gguf_name, tuple(shape), Q.llm_tensor_type(quant, gguf_name, shape, layer, L), src))

    if "llm.model.layers.0.self_attn.q_proj.weight" in ck and "llm.model.layers.0.self_attn.q_proj.bias" not in ck:
        raise ValueError(f"{ck.index_path}: tensor 'llm.model.layers.0.self_attn.q_proj.bias' not found: "
                         f"the language model is not Qwen2 (MiniCPM-V 2.6); older MiniCPM-V versions are not supported")
    add("token_embd.weight", "llm.model.embed_tokens.weight", (V, H))
    for i in range(L):
        p, b = f"llm.model.layers.{i}.", f"blk.{i}."
        add(b + "attn_norm.weight", p + "input_layernorm.weight", (H,), i)
        add(b + "attn_q.weight", p + "self_attn.q_proj.weight", (H, H), i)
        add(b + "attn_q.bias", p + "self_attn.q_proj.bias", (H,), i)
        add(b + "attn_k.weight", p + "self_attn.k_proj.weight", (KV, H), i)
        add(b + "attn_k.bias", p + "self_attn.k_proj.bias", (KV,), i)
        add(b + "attn_v.weight", p + "self_attn.v_proj.weight", (KV, H), i)
        add(b + "attn_v.bias", p + "self_attn.v_proj.bias", (KV,), i)
        add(b + "attn_output.weight", p + "self_attn.o_proj.weight", (H, H), i)
        add(b + "ffn_norm.weight", p + "post_attention_layernorm.weight", (H,), i)
        add(b + "ffn_gate.weight", p + "mlp.gate_proj.weight", (F, H), i)
        add(b + "ffn_up.weight", p + "mlp.up_proj.weight", (F, H), i)
        add(b + "ffn_down.weight", p + "mlp.down_proj.weight", (H, F), i)
    add("output_norm.weight", "llm.model.norm.weight", (H,))
    if not (dims.tie and "llm.lm_head.weight" not in ck):
        add("output.weight", "llm.lm_head.weight", (V, H))
    return out


def resampler_pos_embed(embed_dim, grid=POS_EMBED_GRID):
    """The 2-D sin-cos key position table of the resampler (spec 4) for a grid x grid patch
    layout: row i = r*grid + c is [sin(c w), cos(c w), sin(r w), cos(r w)], w_k = 10000^(-k/(D/4)).
    Computed in float64, stored as float32."""
    quarter = embed_dim // 4
    omega = 1.0 / 10000.0 ** (np.arange(quarter, dtype=np.float64) / quarter)
    r, c = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64), indexing="ij")
    ang_c = c.reshape(-1, 1) * omega
    ang_r = r.reshape(-1, 1) * omega
    return np.concatenate([np.sin(ang_c), np.cos(ang_c), np.sin(ang_r), np.cos(ang_r)], axis=1).astype(np.float32)


def plan_mmproj(ck, dims, mm_type):
    """16*layers + 23 tensors of the clip mmproj, in llama.cpp's (legacy MiniCPM-V) naming."""
    H, VH, VF = dims.hidden, dims.v_hidden, dims.v_ffn
    P = dims.v_patch
    out = []

    def add(gguf_name, hf_name, shape, src_shape=None, **kw):
        src = _check(ck.tensor(hf_name), src_shape or shape, ck.index_path)
        out.append(OutTensor(gguf_name, tuple(shape), Q.mmproj_tensor_type(mm_type, gguf_name, shape), src, **kw))

    add("v.patch_embd.weight", "vpm.embeddings.patch_embedding.weight", (VH, 3, P, P))
    add("v.patch_embd.bias", "vpm.embeddings.patch_embedding.bias", (VH,))
    add("v.position_embd.weight", "vpm.embeddings.position_embedding.weight", (dims.n_pos, VH))
    for i in range(dims.v_layers):
        p, b = f"vpm.encoder.layers.{i}.", f"v.blk.{i}."
        for hf, gg in (("q_proj", "attn_q"), ("k_proj", "attn_k"), ("v_proj", "attn_v"), ("out_proj", "attn_out")):
            add(f"{b}{gg}.weight", f"{p}self_attn.{hf}.weight", (VH, VH))
            add(f"{b}{gg}.bias", f"{p}self_attn.{hf}.bias", (VH,))
        add(b + "ln1.weight", p + "layer_norm1.weight", (VH,))
        add(b + "ln1.bias", p + "layer_norm1.bias", (VH,))
        # llama.cpp's MiniCPM-V converter names fc1 (VH -> VF) "ffn_down" and fc2 "ffn_up"
        # (a string-replace artefact that its loaders expect); kept for compatibility.
        add(b + "ffn_down.weight", p + "mlp.fc1.weight", (VF, VH))
        add(b + "ffn_down.bias", p + "mlp.fc1.bias", (VF,))
        add(b + "ffn_up.weight", p + "mlp.fc2.weight", (VH, VF))
        add(b + "ffn_up.bias", p + "mlp.fc2.bias", (VH,))
        add(b + "ln2.weight", p + "layer_norm2.weight", (VH,))
        add(b + "ln2.bias", p + "layer_norm2.bias", (VH,))
    add("v.post_ln.weight", "vpm.post_layernorm.weight", (VH,))
    add("v.post_ln.bias", "vpm.post_layernorm.bias", (VH,))

    add("resampler.query", "resampler.query", (dims.query_num, H))
    add("resampler.kv.weight", "resampler.kv_proj.weight", (H, VH))
    for k, qkv in enumerate("qkv"):
        add(f"resampler.attn.{qkv}.weight", "resampler.attn.in_proj_weight", (H, H),
            src_shape=(3 * H, H), row_start=k * H)
        add(f"resampler.attn.{qkv}.bias", "resampler.attn.in_proj_bias", (H,),
            src_shape=(3 * H,), row_start=k * H)
    add("resampler.attn.out.weight", "resampler.attn.out_proj.weight", (H, H))
    add("resampler.attn.out.bias", "resampler.attn.out_proj.bias", (H,))
    for ln in ("ln_q", "ln_kv", "ln_post"):
        add(f"resampler.{ln}.weight", f"resampler.{ln}.weight", (H,))
        add(f"resampler.{ln}.bias", f"resampler.{ln}.bias", (H,))
    # y = x @ P in HF; ggml computes W x, so W = P^T
    add("resampler.proj.weight", "resampler.proj", (H, H), transpose=True)
    pe_shape = (POS_EMBED_GRID * POS_EMBED_GRID, H)
    out.append(OutTensor("resampler.pos_embed_k", pe_shape, Q.mmproj_tensor_type(mm_type, "resampler.pos_embed_k", pe_shape),
                         data=resampler_pos_embed(H)))
    return out


def _llm_metadata(w, dims, vocab, quant, name):
    w.add_string("general.architecture", "qwen2")
    w.add_string("general.type", "model")
    w.add_string("general.name", name)
    a = "qwen2."
    w.add_uint32(a + "block_count", dims.layers)
    w.add_uint32(a + "context_length", dims.ctx)
    w.add_uint32(a + "embedding_length", dims.hidden)
    w.add_uint32(a + "feed_forward_length", dims.ffn)
    w.add_uint32(a + "attention.head_count", dims.heads)
    w.add_uint32(a + "attention.head_count_kv", dims.kv_heads)
    w.add_float32(a + "rope.freq_base", dims.rope_theta)
    w.add_float32(a + "attention.layer_norm_rms_epsilon", dims.rms_eps)
    w.add_uint32("general.file_type", Q.LLM_QUANTS[quant][0])
    w.add_string("tokenizer.ggml.model", "gpt2")
    w.add_string("tokenizer.ggml.pre", "qwen2")
    w.add_array("tokenizer.ggml.tokens", STRING, vocab.tokens)
    w.add_array("tokenizer.ggml.token_type", INT32, vocab.token_types)
    w.add_array("tokenizer.ggml.merges", STRING, vocab.merges)
    for key, val in (("bos", vocab.bos), ("eos", vocab.eos), ("unknown", vocab.unk), ("padding", vocab.pad)):
        if val is not None:
            w.add_uint32(f"tokenizer.ggml.{key}_token_id", val)
    w.add_string("tokenizer.chat_template", vocab.chat_template)
    w.add_uint32("general.quantization_version", 2)


def _mmproj_metadata(w, dims, mm_type, name, mean, std):
    w.add_string("general.architecture", "clip")
    w.add_string("general.name", name)
    w.add_string("general.description", "image encoder for MiniCPM-V")
    w.add_uint32("general.file_type", Q.MMPROJ_TYPES[mm_type])
    w.add_bool("clip.has_text_encoder", False)
    w.add_bool("clip.has_vision_encoder", True)
    w.add_bool("clip.has_minicpmv_projector", True)
    w.add_string("clip.projector_type", "resampler")
    w.add_int32("clip.minicpmv_version", MINICPMV_VERSION)
    w.add_uint32("clip.minicpmv_query_num", dims.query_num)
    w.add_uint32("clip.vision.image_size", dims.image_size)
    w.add_uint32("clip.vision.patch_size", dims.v_patch)
    w.add_uint32("clip.vision.embedding_length", dims.v_hidden)
    w.add_uint32("clip.vision.feed_forward_length", dims.v_ffn)
    w.add_uint32("clip.vision.projection_dim", 0)
    w.add_uint32("clip.vision.attention.head_count", dims.v_heads)
    w.add_float32("clip.vision.attention.layer_norm_epsilon", dims.v_eps)
    w.add_uint32("clip.vision.block_count", dims.v_layers)
    w.add_array("clip.vision.image_mean", FLOAT32, mean)
    w.add_array("clip.vision.image_std", FLOAT32, std)
    w.add_bool("clip.use_gelu", dims.use_gelu)


def _write(path, plan, add_metadata, n_threads, progress, chunk_bytes):
    w = GGUFStreamWriter(path)
    add_metadata(w)
    for t in plan:
        w.add_tensor_info(t.name, t.shape, t.gtype)
    total = sum(nb for _, _, _, nb in w.tensors)
    bar = None
    if progress:
        try:
            from tqdm import tqdm
            bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                       desc=Path(path).name, leave=True)
        except ImportError:
            bar = None
    try:
        with w.open():
            for t in plan:
                t.write(w, n_threads, chunk_bytes, bar.update if bar else None)
    finally:
        if bar is not None:
            bar.close()
    return Path(path)


def convert_checkpoint(hf_dir, out_dir, quant="q4_k_m", mmproj_type="f16", *, force=False,
                       threads=0, progress=True, llm=True, mmproj=True, chunk_bytes=None):
    """Convert `hf_dir` (an openbmb/MiniCPM-V-2_6 style directory) into `out_dir`.
    Returns the list of written paths. Raises FileNotFoundError / FileExistsError / ValueError
    naming the file, key or tensor at fault; nothing is written unless every input checks out."""
    quant = quant.lower()
    if quant not in Q.LLM_QUANTS:
        raise ValueError(f"unknown --quant {quant!r}; choose one of {', '.join(QUANT_CHOICES)}")
    mmproj_type = mmproj_type.lower()
    if mmproj_type not in Q.MMPROJ_TYPES:
        raise ValueError(f"unknown --mmproj-type {mmproj_type!r}; choose one of {', '.join(MMPROJ_CHOICES)}")
    out_dir = Path(out_dir)
    targets = []
    if llm:
        targets.append(out_dir / llm_output_name(quant))
    if mmproj:
        targets.append(out_dir / mmproj_output_name(mmproj_type))
    ck = Checkpoint(hf_dir)
    try:
        for p in targets:
            if p.exists() and not force:
                raise FileExistsError(f"{p}: already exists (use --force to overwrite)")
        dims = ModelDims(ck.config, ck.dir / "config.json")
        name = Path(str(ck.config.get("_name_or_path") or ck.dir.resolve().name)).name or "MiniCPM-V-2_6"
        jobs = []
        # Plan everything (all names, shapes, lookups) before writing a byte.
        if llm:
            vocab = load_vocab(ck.dir, dims.vocab, ck.config)
            plan = plan_llm(ck, dims, quant)
            jobs.append((targets[0], plan, lambda w: _llm_metadata(w, dims, vocab, quant, name)))
        if mmproj:
            pre = {}
            if (ck.dir / "preprocessor_config.json").is_file():
                pre = read_json(ck.dir / "preprocessor_config.json", "preprocessor config")
            mean = [float(x) for x in pre.get("norm_mean", pre.get("image_mean", [0.5, 0.5, 0.5]))]
            std = [float(x) for x in pre.get("norm_std", pre.get("image_std", [0.5, 0.5, 0.5]))]
            plan = plan_mmproj(ck, dims, mmproj_type)
            jobs.append((targets[-1], plan, lambda w: _mmproj_metadata(w, dims, mmproj_type, name, mean, std)))
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for path, plan, meta in jobs:
            written.append(_write(path, plan, meta, threads, progress, chunk_bytes))
        return written
    finally:
        ck.close()
