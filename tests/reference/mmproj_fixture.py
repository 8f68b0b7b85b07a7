"""llama.cpp "clip" mmproj GGUFs (spec 9.3) written with gguf-py from weights in the HF layout.

Test and benchmark fixture: `mmproj_tensors` maps HF names to the GGUF names llama.cpp's MiniCPM-V
converter writes (fc1 stored as "ffn_down", fc2 as "ffn_up"; in_proj split into q/k/v; proj stored
transposed) in f32, f16 or q8_0, and returns the weights as the file stores them (rounded), for
references. `write_mmproj` adds the converter's metadata.
"""
import numpy as np
import gguf

Q8 = gguf.GGMLQuantizationType.Q8_0


def _store(arr, wtype):
    """(array to write, raw dtype or None, values as the file holds them in f32) for a matrix."""
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if wtype == "q8_0" and arr.ndim == 2 and arr.shape[1] % 32 == 0:
        q = gguf.quants.quantize(arr, Q8)
        return q, Q8, gguf.quants.dequantize(q, Q8).reshape(arr.shape).astype(np.float32)
    if wtype in ("f16", "q8_0"):  # q8_0 needs rows of 32: others stay f16, as llama.cpp does
        h = arr.astype(np.float16)
        return h, None, h.astype(np.float32)
    return arr, None, arr


def mmproj_tensors(w, cfg, wtype="f32", swapped=True):
    """HF weights -> {gguf name: (data, raw_dtype)} and the HF weights as stored (for references)."""
    out, stored = {}, {}

    def mat(name, arr):
        data, raw, deq = _store(arr, wtype)
        out[name] = (data, raw)
        return deq

    def vec(name, arr):
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        out[name] = (arr, None)
        return arr

    stored["vpm.embeddings.patch_embedding.weight"] = mat("v.patch_embd.weight", w["vpm.embeddings.patch_embedding.weight"])
    stored["vpm.embeddings.patch_embedding.bias"] = vec("v.patch_embd.bias", w["vpm.embeddings.patch_embedding.bias"])
    stored["vpm.embeddings.position_embedding.weight"] = mat(
        "v.position_embd.weight", w["vpm.embeddings.position_embedding.weight"])
    fc1, fc2 = ("ffn_down", "ffn_up") if swapped else ("ffn_up", "ffn_down")
    for i in range(cfg["layers"]):
        p, g = f"vpm.encoder.layers.{i}.", f"v.blk.{i}."
        for hf, gg in [("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"),
                       ("self_attn.v_proj", "attn_v"), ("self_attn.out_proj", "attn_out"),
                       ("mlp.fc1", fc1), ("mlp.fc2", fc2)]:
            stored[p + hf + ".weight"] = mat(g + gg + ".weight", w[p + hf + ".weight"])
            stored[p + hf + ".bias"] = vec(g + gg + ".bias", w[p + hf + ".bias"])
        for hf, gg in [("layer_norm1", "ln1"), ("layer_norm2", "ln2")]:
            for s in ("weight", "bias"):
                stored[p + hf + "." + s] = vec(g + gg + "." + s, w[p + hf + "." + s])
    for s in ("weight", "bias"):
        stored["vpm.post_layernorm." + s] = vec("v.post_ln." + s, w["vpm.post_layernorm." + s])

    D = cfg["embed_dim"]
    stored["resampler.query"] = vec("resampler.query", w["resampler.query"])  # no .weight: f32
    stored["resampler.kv_proj.weight"] = mat("resampler.kv.weight", w["resampler.kv_proj.weight"])
    ipw, ipb = w["resampler.attn.in_proj_weight"], w["resampler.attn.in_proj_bias"]
    parts_w, parts_b = [], []
    for j, n in enumerate("qkv"):
        parts_w.append(mat(f"resampler.attn.{n}.weight", ipw[j * D:(j + 1) * D]))
        parts_b.append(vec(f"resampler.attn.{n}.bias", ipb[j * D:(j + 1) * D]))
    stored["resampler.attn.in_proj_weight"] = np.concatenate(parts_w)
    stored["resampler.attn.in_proj_bias"] = np.concatenate(parts_b)
    stored["resampler.attn.out_proj.weight"] = mat("resampler.attn.out.weight", w["resampler.attn.out_proj.weight"])
    stored["resampler.attn.out_proj.bias"] = vec("resampler.attn.out.bias", w["resampler.attn.out_proj.bias"])
    for ln in ("ln_q", "ln_kv", "ln_post"):
        for s in ("weight", "bias"):
            stored[f"resampler.{ln}.{s}"] = vec(f"resampler.{ln}.{s}", w[f"resampler.{ln}.{s}"])
    # proj is right-multiplied (x @ P); the converter stores P^T so it reads as a normal weight
    stored["resampler.proj"] = mat("resampler.proj.weight", w["resampler.proj"].T).T
    return out, stored


def write_mmproj(path, cfg, tensors, wtype="f32", query_num_key=True, arch="clip", mean=(0.5,) * 3, std=(0.5,) * 3,
                 block_count=None, pos_embed_k=False):
    """pos_embed_k: also write resampler.pos_embed_k (the 70x70 sin-cos table llama.cpp's converter
    stores and its loader requires, though neither runtime reads it)."""
    wr = gguf.GGUFWriter(str(path), arch)
    wr.add_bool("clip.has_text_encoder", False)
    wr.add_bool("clip.has_vision_encoder", True)
    wr.add_bool("clip.has_minicpmv_projector", True)
    wr.add_uint32("general.file_type", {"f32": 0, "f16": 1, "q8_0": 7}[wtype])
    wr.add_string("general.description", "image encoder for MiniCPM-V")
    wr.add_string("clip.projector_type", "resampler")
    wr.add_int32("clip.minicpmv_version", 3)
    if query_num_key:
        wr.add_uint32("clip.minicpmv_query_num", cfg["query_num"])
    wr.add_uint32("clip.vision.image_size", 448)
    wr.add_uint32("clip.vision.patch_size", 14)
    wr.add_uint32("clip.vision.embedding_length", cfg["hidden"])
    wr.add_uint32("clip.vision.feed_forward_length", cfg["intermediate"])
    wr.add_uint32("clip.vision.projection_dim", 0)
    wr.add_uint32("clip.vision.attention.head_count", cfg["heads"])
    wr.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    wr.add_uint32("clip.vision.block_count", cfg["layers"] if block_count is None else block_count)
    wr.add_array("clip.vision.image_mean", [float(v) for v in mean])
    wr.add_array("clip.vision.image_std", [float(v) for v in std])
    wr.add_bool("clip.use_gelu", True)
    if pos_embed_k:
        from vision_ref import sincos_pos_embed
        wr.add_tensor("resampler.pos_embed_k", sincos_pos_embed(70, 70, cfg["embed_dim"]))
    for name, (data, raw) in tensors.items():
        if raw is None:
            wr.add_tensor(name, data)
        else:
            wr.add_tensor(name, data, raw_dtype=raw)
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    return str(path)


def read_mmproj(path):
    """(cfg, HF-named float32 weights as the file stores them), read back with gguf-py's reader.

    Independent of the engine's loader: fc1/fc2 are told apart by shape (fc1 maps hidden ->
    intermediate), in_proj is re-joined from q/k/v, proj is transposed back."""
    r = gguf.GGUFReader(str(path))

    def field(key):
        f = r.fields[key]
        v = f.parts[f.data[0]]
        return v.tobytes().decode() if f.types[0] == gguf.GGUFValueType.STRING else v[0].item()

    cfg = dict(hidden=field("clip.vision.embedding_length"), intermediate=field("clip.vision.feed_forward_length"),
               layers=field("clip.vision.block_count"), heads=field("clip.vision.attention.head_count"))
    t = {}
    for x in r.tensors:
        shape = tuple(int(v) for v in reversed(x.shape.tolist()))  # PyTorch order
        t[x.name] = gguf.quants.dequantize(x.data, x.tensor_type).reshape(shape).astype(np.float32)
    cfg["embed_dim"] = t["resampler.query"].shape[1]
    cfg["query_num"] = t["resampler.query"].shape[0]

    w = {"vpm.embeddings.patch_embedding.weight": t["v.patch_embd.weight"],
         "vpm.embeddings.patch_embedding.bias": t["v.patch_embd.bias"],
         "vpm.embeddings.position_embedding.weight": t["v.position_embd.weight"],
         "vpm.post_layernorm.weight": t["v.post_ln.weight"], "vpm.post_layernorm.bias": t["v.post_ln.bias"]}
    H = cfg["hidden"]
    for i in range(cfg["layers"]):
        p, g = f"vpm.encoder.layers.{i}.", f"v.blk.{i}."
        for hf, gg in [("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"),
                       ("self_attn.v_proj", "attn_v"), ("self_attn.out_proj", "attn_out"),
                       ("layer_norm1", "ln1"), ("layer_norm2", "ln2")]:
            w[p + hf + ".weight"], w[p + hf + ".bias"] = t[g + gg + ".weight"], t[g + gg + ".bias"]
        down_is_fc1 = t[g + "ffn_down.weight"].shape[1] == H
        fc1, fc2 = ("ffn_down", "ffn_up") if down_is_fc1 else ("ffn_up", "ffn_down")
        for hf, gg in [("mlp.fc1", fc1), ("mlp.fc2", fc2)]:
            w[p + hf + ".weight"], w[p + hf + ".bias"] = t[g + gg + ".weight"], t[g + gg + ".bias"]
    w["resampler.query"] = t["resampler.query"]
    w["resampler.kv_proj.weight"] = t["resampler.kv.weight"]
    w["resampler.attn.in_proj_weight"] = np.concatenate([t[f"resampler.attn.{n}.weight"] for n in "qkv"])
    w["resampler.attn.in_proj_bias"] = np.concatenate([t[f"resampler.attn.{n}.bias"] for n in "qkv"])
    w["resampler.attn.out_proj.weight"] = t["resampler.attn.out.weight"]
    w["resampler.attn.out_proj.bias"] = t["resampler.attn.out.bias"]
    for ln in ("ln_q", "ln_kv", "ln_post"):
        w[f"resampler.{ln}.weight"], w[f"resampler.{ln}.bias"] = t[f"resampler.{ln}.weight"], t[f"resampler.{ln}.bias"]
    w["resampler.proj"] = t["resampler.proj.weight"].T
    return cfg, w
