"""What the engine's bf16 flash attention rounds (cpp/kernels/vision_attention.h, bf16 variant), in
float64 torch, for the references of the approximate vision options (tests/test_vision_perf.py,
tests/test_vision.py's stored-q8_0 case).

The kernel rounds to bfloat16 (nearest even; torch's rounding here, independent of ours): the
pre-scaled queries q * scale, K, V, and the probabilities it feeds to P.V. Scores, softmax and
sums stay f32 (float64 here). Its softmax is online over tiles of 64 keys: a tile's probabilities
are exp(s - m_t) with m_t the running max up to that tile, rounded to bf16 there, and later
rescaled by exp(m_t - m) in f32; the denominator sums the unrounded exp(s - m). The reference
rounds the same quantities at the same scale (keys chunked by 64 from key 0), so rounding
decisions agree except where f32-vs-f64 differences in the inputs flip them.

`bf16_tower_attention()` swaps it into transformers' eager SigLIP/Idefics2 attention.
"""
import contextlib

import torch

TILE = 64  # kernels::vattn::kTile: keys per online-softmax step


def bf16(t):
    return t.to(torch.bfloat16).to(t.dtype)


def flash_bf16(q, k, v, scale, tile=TILE):
    """q [..., n_q, d], k / v [..., n_kv, d] float64 -> [..., n_q, d] as the bf16 kernel computes it."""
    qb, kb, vb = bf16(q * scale), bf16(k), bf16(v)
    s = qb @ kb.transpose(-1, -2)  # exact products of bf16 values; f32 sums in the kernel
    n = s.shape[-1]
    tiles = (n + tile - 1) // tile
    pad = tiles * tile - n
    sp = torch.nn.functional.pad(s, (0, pad), value=float("-inf")) if pad else s
    tile_max = sp.reshape(*s.shape[:-1], tiles, tile).amax(-1)
    running = torch.cummax(tile_max, dim=-1).values                      # m_t after each tile
    m_t = running.repeat_interleave(tile, dim=-1)[..., :n]               # per key: its tile's m_t
    m = running[..., -1:]                                                # final max
    e = torch.exp(s - m_t)                                               # what the tile computes
    weight = bf16(e) * torch.exp(m_t - m)                                # rounded, then rescaled
    l = torch.exp(s - m).sum(-1, keepdim=True)                          # unrounded denominator
    return (weight @ vb) / l


def exact(q, k, v, scale):
    return torch.softmax((q @ k.transpose(-1, -2)) * scale, dim=-1) @ v


@contextlib.contextmanager
def bf16_tower_attention(on=True):
    """While active, transformers' eager Idefics2 vision attention (vision_ref.build_tower) runs
    flash_bf16 (no mask: the tower's attention over one slice is unmasked)."""
    if not on:
        yield
        return
    from transformers.models.idefics2 import modeling_idefics2 as mi

    def attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        assert attention_mask is None
        out = flash_bf16(query, key, value, scaling)
        return out.transpose(1, 2).contiguous(), None

    saved = mi.eager_attention_forward
    mi.eager_attention_forward = attention
    try:
        yield
    finally:
        mi.eager_attention_forward = saved


def resampler_forward(resampler, x, h, w, act_quant=None):
    """vision_ref.resampler_forward (its act_quant form: the inputs of the kv, in_proj, out_proj and
    proj matmuls through act_quant) with the cross attention of each head run as flash_bf16: what
    the engine's projected resampler computes in the approximate options. [query_num, embed] f64."""
    import numpy as np
    import vision_ref

    aq = act_quant if act_quant is not None else (lambda t: t)
    r = resampler
    D = r.embed_dim
    heads = r.attn.num_heads
    hd = D // heads
    with torch.no_grad():
        x = torch.from_numpy(np.asarray(x, dtype=np.float64)).to(r.proj.dtype)
        kv = r.ln_kv(r.kv_proj(aq(x)))
        pe = torch.from_numpy(vision_ref.sincos_pos_embed(h, w, D)).to(x.dtype)
        q = r.ln_q(r.query)
        wq, wk, wv = r.attn.in_proj_weight.split(D)
        bq, bk, bv = r.attn.in_proj_bias.split(D)
        Q = aq(q) @ wq.T + bq
        K = aq(kv + pe) @ wk.T + bk
        V = aq(kv) @ wv.T + bv

        def split(t):
            return t.reshape(t.shape[0], heads, hd).transpose(0, 1)

        o = flash_bf16(split(Q), split(K), split(V), hd ** -0.5).transpose(0, 1).reshape(-1, D)
        out = torch.nn.functional.linear(aq(o), r.attn.out_proj.weight, r.attn.out_proj.bias)
        return (aq(r.ln_post(out)) @ r.proj).double().numpy()


def resampler_folded_bf16(resampler, x, h, w, act_quant):
    """The engine's "bf16" resampler (Resampler::attend_folded with fold_bf16): the same attention
    with K and V folded into the queries and P (spec algebra: s Q_h K_h^T = (s Q_h Wk_h) kpe^T + a
    per-row constant the softmax drops; P_h V_h = (P_h kv) Wv_h^T + bv_h), its two n-token products
    on bf16 inputs: bf16(s Q_h Wk_h) . bf16(kpe), bf16(P) . bf16(kv); then Wv_h and the rest with
    act_quant on every matmul input, as resampler_forward. [query_num, embed] f64."""
    import numpy as np
    import vision_ref

    aq = act_quant
    r = resampler
    D = r.embed_dim
    heads = r.attn.num_heads
    hd = D // heads
    with torch.no_grad():
        x = torch.from_numpy(np.asarray(x, dtype=np.float64)).to(r.proj.dtype)
        kv = r.ln_kv(r.kv_proj(aq(x)))
        kpe = kv + torch.from_numpy(vision_ref.sincos_pos_embed(h, w, D)).to(x.dtype)
        wq, wk, wv = r.attn.in_proj_weight.split(D)
        bq, _, bv = r.attn.in_proj_bias.split(D)
        Q = aq(r.ln_q(r.query)) @ wq.T + bq
        outs = []
        for hh in range(heads):
            cols = slice(hh * hd, (hh + 1) * hd)
            qk = (Q[:, cols] * hd ** -0.5) @ wk[cols]                  # [Q, D], f32 in the engine
            p = torch.softmax(bf16(qk) @ bf16(kpe).T, dim=-1)          # [Q, n]
            pv = bf16(p) @ bf16(kv)                                    # [Q, D]
            outs.append(aq(pv) @ wv[cols].T + bv[cols])
        o = torch.cat(outs, dim=1)
        out = torch.nn.functional.linear(aq(o), r.attn.out_proj.weight, r.attn.out_proj.bias)
        return (aq(r.ln_post(out)) @ r.proj).double().numpy()
