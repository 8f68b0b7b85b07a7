"""PyTorch references for the MiniCPM-V 2.6 vision path (spec sections 3 and 4).

* Vision tower: transformers' `Idefics2VisionTransformer` (MiniCPM-V's `modeling_navit_siglip` is a
  copy of that navit SigLIP) with the real weight names. Its encoder blocks and post-LN are used
  as they are. Its position ids are NOT the ones MiniCPM-V computes: transformers >= 4.4x builds
  the fractional coordinates as `arange(h) * (1/h)` clamped, MiniCPM-V as
  `arange(0, 1 - 1e-6, 1 / tgt_h)` with `tgt_h` an int32 tensor, and the two float32 paths round
  exact ties (side*r/h integer) differently. So the embeddings forward is replaced by
  `minicpmv_position_ids`, a transcription of MiniCPM-V's code.
* Resampler: written from the spec with `torch.nn.MultiheadAttention` (MiniCPM-V's `Resampler`
  semantics: packed in_proj, out_proj, no residuals, `x @ proj`).
* 2-D sin-cos: the spec formula in numpy float32, as HF's `get_2d_sincos_pos_embed` runs it.
* `make_vision_weights`: random weights in the HF checkpoint names (`vpm.*`, `resampler.*`).
"""
import numpy as np
import torch
from torch import nn

SIDE = 70  # num_patches_per_side of the so400m-14-980 position table


def minicpmv_position_ids(h, w, side=SIDE):
    """MiniCPM-V SiglipVisionEmbeddings.forward position ids for one h x w slice, [h*w] int64."""
    boundaries = torch.arange(1 / side, 1.0, 1 / side)
    tgt_sizes = torch.tensor([[h, w]], dtype=torch.int32)
    nb_patches_h, nb_patches_w = tgt_sizes[0][0], tgt_sizes[0][1]
    fractional_coords_h = torch.arange(0, 1 - 1e-6, 1 / nb_patches_h)
    fractional_coords_w = torch.arange(0, 1 - 1e-6, 1 / nb_patches_w)
    bucket_h = torch.bucketize(fractional_coords_h, boundaries, right=True)
    bucket_w = torch.bucketize(fractional_coords_w, boundaries, right=True)
    return (bucket_h[:, None] * side + bucket_w).flatten()


def transformers_position_ids(tower, h, w):
    """Position ids transformers' own Idefics2VisionEmbeddings would use (captured by a hook)."""
    seen = {}
    emb = tower.embeddings

    def hook(module, inputs, output):
        seen["ids"] = inputs[0]

    handle = emb.position_embedding.register_forward_hook(hook)
    try:
        p = tower.config.patch_size
        px = torch.zeros(1, 3, h * p, w * p, dtype=emb.patch_embedding.weight.dtype)
        mask = torch.ones(1, h, w, dtype=torch.bool)
        with torch.no_grad():
            emb(pixel_values=px, patch_attention_mask=mask)
    finally:
        handle.remove()
    return seen["ids"].reshape(-1)


def sincos_pos_embed(h, w, embed_dim):
    """Spec 4.3 in numpy float32 (HF computes it so): [h*w, D], token r*w + c ->
    [sin(c w_k), cos(c w_k), sin(r w_k), cos(r w_k)], w_k = 1 / 10000^(k / (D/4))."""
    quarter = embed_dim // 4
    omega = np.arange(quarter, dtype=np.float32)
    omega /= np.float32(quarter)
    omega = np.float32(1.0) / np.float32(10000) ** omega

    def one_d(pos):  # pos float32 [L] -> [L, D/2]
        out = np.einsum("l,d->ld", pos, omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=-1)

    cols = one_d(np.arange(w, dtype=np.float32))
    rows = one_d(np.arange(h, dtype=np.float32))
    pe = np.concatenate([np.broadcast_to(cols[None, :, :], (h, w, 2 * quarter)),
                         np.broadcast_to(rows[:, None, :], (h, w, 2 * quarter))], axis=-1)
    return np.ascontiguousarray(pe.reshape(h * w, embed_dim), dtype=np.float32)


def sincos_pos_embed_f64(h, w, embed_dim):
    """The same formula in float64 (the exact values the float32 ones approximate)."""
    quarter = embed_dim // 4
    omega = 1.0 / 10000.0 ** (np.arange(quarter, dtype=np.float64) / quarter)
    r, c = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    r, c = r.reshape(-1, 1) * omega, c.reshape(-1, 1) * omega
    return np.concatenate([np.sin(c), np.cos(c), np.sin(r), np.cos(r)], axis=1)


# ---------------------------------------------------------------------------------------------
# Vision tower


def build_tower(cfg, weights, dtype=torch.float64):
    """Idefics2VisionTransformer with the vpm.* weights, MiniCPM-V position ids, eager attention."""
    from transformers import Idefics2VisionConfig
    from transformers.models.idefics2.modeling_idefics2 import Idefics2VisionTransformer

    conf = Idefics2VisionConfig(hidden_size=cfg["hidden"], intermediate_size=cfg["intermediate"],
                                num_hidden_layers=cfg["layers"], num_attention_heads=cfg["heads"],
                                num_channels=3, image_size=SIDE * 14, patch_size=14,
                                hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, attention_dropout=0.0)
    conf._attn_implementation = "eager"
    tower = Idefics2VisionTransformer(conf)
    state = {k[len("vpm."):]: torch.from_numpy(np.asarray(v, dtype=np.float32))
             for k, v in weights.items() if k.startswith("vpm.")}
    missing, unexpected = tower.load_state_dict(state, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return tower.to(dtype).eval()


def q8_0_activations(x):
    """Round a tensor's rows through Q8_0 (gguf-py's quantizer: int8 per block of 32, scale amax/127),
    as the int8 kernels do with the activations of a q8_0 weight. Rows must be multiples of 32."""
    import gguf

    q8 = gguf.GGMLQuantizationType.Q8_0
    xs = x.detach().cpu().double().numpy().astype(np.float32)
    shape = xs.shape
    back = gguf.quants.dequantize(gguf.quants.quantize(xs.reshape(-1, shape[-1]), q8), q8)
    return torch.from_numpy(back.reshape(shape).astype(np.float64)).to(x.dtype)


def tower_forward(tower, patches, h, w, act_quant=None):
    """patches [h*w, 588] (c, ky, kx) -> post-LN hidden [h*w, hidden], float64 numpy.

    Runs the conv on the slice image rebuilt from the patches (the HF path), adds the position rows
    MiniCPM-V would use, then transformers' encoder and post_layernorm. `act_quant` (e.g.
    q8_0_activations) is applied to the input of every Linear whose rows are a multiple of 32."""
    handles = []
    if act_quant is not None:
        for mod in tower.modules():
            if isinstance(mod, nn.Linear) and mod.in_features % 32 == 0:
                handles.append(mod.register_forward_pre_hook(lambda m, args: (act_quant(args[0]),)))
    try:
        return _tower_forward(tower, patches, h, w)
    finally:
        for hd in handles:
            hd.remove()


def _tower_forward(tower, patches, h, w):
    dtype = tower.embeddings.patch_embedding.weight.dtype
    p = 14
    x = torch.from_numpy(np.asarray(patches, dtype=np.float64)).to(dtype)
    img = x.reshape(h, w, 3, p, p).permute(2, 0, 3, 1, 4).reshape(1, 3, h * p, w * p)
    with torch.no_grad():
        emb = tower.embeddings.patch_embedding(img).flatten(2).transpose(1, 2)
        emb = emb + tower.embeddings.position_embedding(minicpmv_position_ids(h, w))[None]
        hidden = tower.encoder(inputs_embeds=emb, attention_mask=None).last_hidden_state
        out = tower.post_layernorm(hidden)
    return out[0].double().numpy()


# ---------------------------------------------------------------------------------------------
# Resampler (spec 2.3 / 4)


class ResamplerRef(nn.Module):
    def __init__(self, embed_dim, kv_dim, query_num):
        super().__init__()
        self.embed_dim = embed_dim
        self.query = nn.Parameter(torch.zeros(query_num, embed_dim))
        self.kv_proj = nn.Linear(kv_dim, embed_dim, bias=False)
        self.attn = nn.MultiheadAttention(embed_dim, embed_dim // 128)
        self.ln_q = nn.LayerNorm(embed_dim, eps=1e-6)
        self.ln_kv = nn.LayerNorm(embed_dim, eps=1e-6)
        self.ln_post = nn.LayerNorm(embed_dim, eps=1e-6)
        self.proj = nn.Parameter(torch.zeros(embed_dim, embed_dim))

    def forward(self, x, h, w, act_quant=None):
        """x [h*w, kv_dim] -> [query_num, embed_dim]. `act_quant` rounds the inputs of the kv, in_proj
        and proj matmuls (not out_proj's, which MultiheadAttention keeps inside)."""
        if act_quant is None:
            kv = self.ln_kv(self.kv_proj(x))
            pe = torch.from_numpy(sincos_pos_embed(h, w, self.embed_dim)).to(x.dtype)
            q = self.ln_q(self.query)
            out = self.attn(q[:, None], (kv + pe)[:, None], kv[:, None], need_weights=False)[0][:, 0]
            return self.ln_post(out) @ self.proj
        # The same with every matmul input rounded. out_proj runs inside MultiheadAttention, so the
        # attention runs with an identity out_proj and the real one is applied after rounding.
        aq = act_quant
        kv = self.ln_kv(self.kv_proj(aq(x)))
        pe = torch.from_numpy(sincos_pos_embed(h, w, self.embed_dim)).to(x.dtype)
        q = self.ln_q(self.query)
        a = self.attn
        eye = torch.eye(self.embed_dim, dtype=x.dtype)
        heads = nn.functional.multi_head_attention_forward(
            aq(q)[:, None], aq(kv + pe)[:, None], aq(kv)[:, None], self.embed_dim, a.num_heads,
            a.in_proj_weight, a.in_proj_bias, None, None, False, 0.0, eye, torch.zeros_like(a.out_proj.bias),
            training=False, need_weights=False)[0][:, 0]
        out = nn.functional.linear(aq(heads), a.out_proj.weight, a.out_proj.bias)
        return aq(self.ln_post(out)) @ self.proj


def build_resampler(cfg, weights, dtype=torch.float64):
    r = ResamplerRef(cfg["embed_dim"], cfg["hidden"], cfg["query_num"])
    state = {k[len("resampler."):]: torch.from_numpy(np.asarray(v, dtype=np.float32))
             for k, v in weights.items() if k.startswith("resampler.")}
    r.load_state_dict(state, strict=True)
    return r.to(dtype).eval()


def resampler_forward(resampler, x, h, w, act_quant=None):
    dtype = resampler.proj.dtype
    with torch.no_grad():
        x = torch.from_numpy(np.asarray(x, dtype=np.float64)).to(dtype)
        return resampler(x, h, w, act_quant).double().numpy()


# ---------------------------------------------------------------------------------------------
# Random weights in the HF checkpoint layout


def make_vision_weights(cfg, seed=0):
    """float32 numpy weights named as in openbmb/MiniCPM-V-2_6 (vpm.*, resampler.*).

    Scales keep activations O(1) like a trained model: matrices N(0, 1/fan_in) (so projections keep
    unit variance), biases and LayerNorm shifts small, LayerNorm gains around 1."""
    rng = np.random.default_rng(seed)
    H, I, D, Q = cfg["hidden"], cfg["intermediate"], cfg["embed_dim"], cfg["query_num"]

    def mat(o, i, gain=1.0):
        return (rng.standard_normal((o, i)) * gain / np.sqrt(i)).astype(np.float32)

    def vec(n, std=0.05, mean=0.0):
        return (mean + rng.standard_normal(n) * std).astype(np.float32)

    wts = {
        "vpm.embeddings.patch_embedding.weight":
            (rng.standard_normal((H, 3, 14, 14)) / np.sqrt(588)).astype(np.float32),
        "vpm.embeddings.patch_embedding.bias": vec(H),
        "vpm.embeddings.position_embedding.weight": (rng.standard_normal((SIDE * SIDE, H)) * 0.5).astype(np.float32),
        "vpm.post_layernorm.weight": vec(H, 0.1, 1.0),
        "vpm.post_layernorm.bias": vec(H),
    }
    for i in range(cfg["layers"]):
        p = f"vpm.encoder.layers.{i}."
        # q and k a little larger than unit gain so attention is not uniform
        wts.update({
            p + "self_attn.q_proj.weight": mat(H, H, 2.0), p + "self_attn.q_proj.bias": vec(H),
            p + "self_attn.k_proj.weight": mat(H, H, 2.0), p + "self_attn.k_proj.bias": vec(H),
            p + "self_attn.v_proj.weight": mat(H, H), p + "self_attn.v_proj.bias": vec(H),
            p + "self_attn.out_proj.weight": mat(H, H), p + "self_attn.out_proj.bias": vec(H),
            p + "layer_norm1.weight": vec(H, 0.1, 1.0), p + "layer_norm1.bias": vec(H),
            p + "layer_norm2.weight": vec(H, 0.1, 1.0), p + "layer_norm2.bias": vec(H),
            p + "mlp.fc1.weight": mat(I, H), p + "mlp.fc1.bias": vec(I),
            p + "mlp.fc2.weight": mat(H, I), p + "mlp.fc2.bias": vec(H),
        })
    in_proj = np.concatenate([mat(D, D, 2.0), mat(D, D, 2.0), mat(D, D)], axis=0)
    wts.update({
        "resampler.query": rng.standard_normal((Q, D)).astype(np.float32),
        "resampler.kv_proj.weight": mat(D, H),
        "resampler.attn.in_proj_weight": in_proj,
        "resampler.attn.in_proj_bias": vec(3 * D),
        "resampler.attn.out_proj.weight": mat(D, D),
        "resampler.attn.out_proj.bias": vec(D),
        "resampler.ln_q.weight": vec(D, 0.1, 1.0), "resampler.ln_q.bias": vec(D),
        "resampler.ln_kv.weight": vec(D, 0.1, 1.0), "resampler.ln_kv.bias": vec(D),
        "resampler.ln_post.weight": vec(D, 0.1, 1.0), "resampler.ln_post.bias": vec(D),
        "resampler.proj": (rng.standard_normal((D, D)) / np.sqrt(D)).astype(np.float32),
    })
    return wts
