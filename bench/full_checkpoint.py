"""A full-size MiniCPM-V 2.6 checkpoint with random weights, in the real Hugging Face layout.

Same tensor names, shapes and dtype (bf16 safetensors, sharded, with the index, config,
preprocessor config and the real 151666-token Qwen2 tokenizer) as openbmb/MiniCPM-V-2_6, so the
converter and both engines run on it exactly as on the real model; only the values are random.

Writing 8 billion random normals would take minutes, so the matrices are streamed from one pool of
48M random bf16 values (normal * 0.02, as the initialiser of the real model): every chunk of every
tensor starts at a different pseudo-random offset of the pool. Values stay realistic (so the
quantisers pick sane scales) and the ~16 GB are written at disk speed. Norm weights (1 + 0.1 * N)
are generated directly (they are small).

    python bench/full_checkpoint.py OUT_DIR
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

_REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_REPO / "tests"))
import tiny_checkpoint as tc  # noqa: E402  (config, tokenizer files and the bf16 cast)

# MiniCPM-V 2.6 (Qwen2-7B + SigLIP-400M, spec section 1).
FULL = dict(hidden=3584, layers=28, heads=28, kv_heads=4, ffn=18944, vision_hidden=1152,
            vision_layers=27, vision_heads=16, vision_ffn=4304, query_num=64)
POOL_ELEMS = 48 << 20
CHUNK_ELEMS = 8 << 20


def tensor_specs(hidden, layers, heads, kv_heads, ffn, vision_hidden, vision_layers, vision_heads,
                 vision_ffn, query_num, vocab=tc.VOCAB_SIZE):
    """[(name, shape, kind)] in the order of tiny_checkpoint.tiny_tensors; kind: 'w' or 'norm'."""
    hd = hidden // heads
    kv = kv_heads * hd
    s = [("llm.model.embed_tokens.weight", (vocab, hidden), "w")]
    for i in range(layers):
        p = f"llm.model.layers.{i}."
        s += [(p + "input_layernorm.weight", (hidden,), "norm"),
              (p + "self_attn.q_proj.weight", (hidden, hidden), "w"),
              (p + "self_attn.q_proj.bias", (hidden,), "w"),
              (p + "self_attn.k_proj.weight", (kv, hidden), "w"),
              (p + "self_attn.k_proj.bias", (kv,), "w"),
              (p + "self_attn.v_proj.weight", (kv, hidden), "w"),
              (p + "self_attn.v_proj.bias", (kv,), "w"),
              (p + "self_attn.o_proj.weight", (hidden, hidden), "w"),
              (p + "post_attention_layernorm.weight", (hidden,), "norm"),
              (p + "mlp.gate_proj.weight", (ffn, hidden), "w"),
              (p + "mlp.up_proj.weight", (ffn, hidden), "w"),
              (p + "mlp.down_proj.weight", (hidden, ffn), "w")]
    s += [("llm.model.norm.weight", (hidden,), "norm"), ("llm.lm_head.weight", (vocab, hidden), "w")]
    vh = vision_hidden
    s += [("vpm.embeddings.patch_embedding.weight", (vh, 3, 14, 14), "w"),
          ("vpm.embeddings.patch_embedding.bias", (vh,), "w"),
          ("vpm.embeddings.position_embedding.weight", (70 * 70, vh), "w")]
    for i in range(vision_layers):
        p = f"vpm.encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            s += [(p + f"self_attn.{proj}.weight", (vh, vh), "w"), (p + f"self_attn.{proj}.bias", (vh,), "w")]
        s += [(p + "layer_norm1.weight", (vh,), "norm"), (p + "layer_norm1.bias", (vh,), "w"),
              (p + "mlp.fc1.weight", (vision_ffn, vh), "w"), (p + "mlp.fc1.bias", (vision_ffn,), "w"),
              (p + "mlp.fc2.weight", (vh, vision_ffn), "w"), (p + "mlp.fc2.bias", (vh,), "w"),
              (p + "layer_norm2.weight", (vh,), "norm"), (p + "layer_norm2.bias", (vh,), "w")]
    s += [("vpm.post_layernorm.weight", (vh,), "norm"), ("vpm.post_layernorm.bias", (vh,), "w"),
          ("resampler.query", (query_num, hidden), "w"),
          ("resampler.kv_proj.weight", (hidden, vh), "w"),
          ("resampler.attn.in_proj_weight", (3 * hidden, hidden), "w"),
          ("resampler.attn.in_proj_bias", (3 * hidden,), "w"),
          ("resampler.attn.out_proj.weight", (hidden, hidden), "w"),
          ("resampler.attn.out_proj.bias", (hidden,), "w")]
    for ln in ("ln_q", "ln_kv", "ln_post"):
        s += [(f"resampler.{ln}.weight", (hidden,), "norm"), (f"resampler.{ln}.bias", (hidden,), "w")]
    s += [("resampler.proj", (hidden, hidden), "w")]
    return s


def make_full_checkpoint(out_dir, *, n_shards=4, seed=0, dims=None, log=print):
    """Write the checkpoint into out_dir (created); returns its Path. Skips if complete."""
    dims = dict(FULL if dims is None else dims)
    out = Path(out_dir)
    done = out / ".complete"
    if done.exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    rng = np.random.default_rng(seed)
    pool = tc.f32_to_bf16_bits(rng.standard_normal(POOL_ELEMS, dtype=np.float32) * np.float32(0.02))
    specs = tensor_specs(**dims)

    cfg = tc._config(dims["hidden"], dims["layers"], dims["heads"], dims["kv_heads"], dims["ffn"],
                     dims["vision_hidden"], dims["vision_layers"], dims["vision_heads"], dims["vision_ffn"],
                     dims["query_num"], "bfloat16")
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    gen_cfg = {"_from_model_config": True, "bos_token_id": 151643, "eos_token_id": 151645,
               "pad_token_id": 0, "transformers_version": "4.40.0"}
    (out / "generation_config.json").write_text(json.dumps(gen_cfg, indent=2))
    (out / "preprocessor_config.json").write_text(json.dumps(tc.PREPROCESSOR_CONFIG, indent=2))
    tc.write_tokenizer(out)

    sizes = [int(np.prod(sh)) * 2 for _, sh, _ in specs]
    total = sum(sizes)
    groups = [[] for _ in range(n_shards)]
    acc = 0
    for spec, sz in zip(specs, sizes):
        groups[min(n_shards - 1, acc * n_shards // total)].append(spec)
        acc += sz
    groups = [g for g in groups if g]
    weight_map = {}
    for k, g in enumerate(groups):
        fname = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
        header = {"__metadata__": {"format": "pt"}}
        off = 0
        for name, shape, _ in g:
            nb = int(np.prod(shape)) * 2
            header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + nb]}
            off += nb
        hjson = json.dumps(header, separators=(",", ":")).encode()
        hjson += b" " * ((8 - len(hjson) % 8) % 8)
        with open(out / fname, "wb") as f:
            f.write(len(hjson).to_bytes(8, "little"))
            f.write(hjson)
            for name, shape, kind in g:
                n = int(np.prod(shape))
                if kind == "norm":
                    f.write(tc.f32_to_bf16_bits(1.0 + rng.standard_normal(n, dtype=np.float32) * 0.1).tobytes())
                    continue
                left = n
                while left:
                    c = min(left, CHUNK_ELEMS)
                    start = int(rng.integers(0, POOL_ELEMS - c))
                    f.write(memoryview(pool[start:start + c]))
                    left -= c
            weight_map.update({name: fname for name, _, _ in g})
        log(f"  {fname}: {off / 1e9:.2f} GB ({time.time() - t0:.0f} s)")
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    done.write_text("ok\n")
    return out


if __name__ == "__main__":
    p = make_full_checkpoint(sys.argv[1] if len(sys.argv) > 1 else "/work/bench-cache/hf")
    print(p)
