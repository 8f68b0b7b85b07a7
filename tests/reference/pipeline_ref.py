"""A PyTorch reference of the whole MiniCPM-V 2.6 chat pipeline, built from independent parts and
the Hugging Face checkpoint directory (never from our GGUF files):

* prompt ids: prompt_ref.py (the reference's chat template string + HF tokenizer of the checkpoint),
* preprocessing: preprocess_ref.py (Pillow resizes and crops as MiniCPMVImageProcessor),
* vision: vision_ref.py (transformers' Idefics2 vision transformer + a resampler written from the
  spec) with the checkpoint's `vpm.*` / `resampler.*` tensors, in float64,
* language model: transformers' Qwen2ForCausalLM with the checkpoint's `llm.*` tensors in float32,
* embedding injection as the reference `get_vllm_embedding` (spec 6.2/6.3): the bounds are found in
  the token ids as the processor does (one after each <image>/<slice>, up to the matching
  </image>/</slice>) and the slices' rows are scattered there in order,
* decoding: transformers' own `generate` on `inputs_embeds` (greedy or beam search), which is
  what the reference `chat()` calls.
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import preprocess_ref  # noqa: E402
import prompt_ref  # noqa: E402
import vision_ref  # noqa: E402

TERMINATORS = ("<|im_end|>", "<|endoftext|>")  # the reference chat() stops on either


def load_checkpoint_tensors(ckpt_dir):
    """Every tensor of the (sharded) safetensors checkpoint as float32 torch tensors."""
    from safetensors.torch import load_file

    out = {}
    for f in sorted(Path(ckpt_dir).glob("*.safetensors")):
        for k, v in load_file(str(f)).items():
            out[k] = v.to(torch.float32)
    return out


class ReferencePipeline:
    def __init__(self, ckpt_dir):
        from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

        ckpt_dir = Path(ckpt_dir)
        cfg = json.loads((ckpt_dir / "config.json").read_text())
        self.cfg = cfg
        self.query_num = int(cfg["query_num"])
        self.tokenizer = AutoTokenizer.from_pretrained(str(ckpt_dir))
        tensors = load_checkpoint_tensors(ckpt_dir)

        qcfg = Qwen2Config(vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"],
                           intermediate_size=cfg["intermediate_size"],
                           num_hidden_layers=cfg["num_hidden_layers"],
                           num_attention_heads=cfg["num_attention_heads"],
                           num_key_value_heads=cfg["num_key_value_heads"], rope_theta=cfg["rope_theta"],
                           rms_norm_eps=cfg["rms_norm_eps"],
                           max_position_embeddings=cfg["max_position_embeddings"],
                           tie_word_embeddings=cfg.get("tie_word_embeddings", False))
        qcfg._attn_implementation = "eager"
        llm = Qwen2ForCausalLM(qcfg)
        state = {k[len("llm."):]: v for k, v in tensors.items() if k.startswith("llm.")}
        missing, unexpected = llm.load_state_dict(state, strict=False)
        assert not unexpected and all("rotary" in m for m in missing), (missing, unexpected)
        self.llm = llm.float().eval()

        v = cfg["vision_config"]
        vcfg = dict(hidden=v["hidden_size"], intermediate=v["intermediate_size"], layers=v["num_hidden_layers"],
                    heads=v["num_attention_heads"], embed_dim=cfg["hidden_size"], query_num=self.query_num)
        vw = {k: t.numpy() for k, t in tensors.items() if k.startswith(("vpm.", "resampler."))}
        self.tower = vision_ref.build_tower(vcfg, vw)
        self.resampler = vision_ref.build_resampler(vcfg, vw)

        tok = self.tokenizer
        self.ids = {s: tok.convert_tokens_to_ids(s) for s in
                    ("<image>", "</image>", "<slice>", "</slice>") + TERMINATORS}
        self.eos_ids = [self.ids[s] for s in TERMINATORS]

    # ------------------------------------------------------------------ vision
    def encode_image(self, image, max_slice_nums=9):
        """PIL image -> (grid or None, [n_slices, query_num, n_embd] float32): source first, then the
        cells row by row, as the reference processor orders them."""
        grid, slices = preprocess_ref.slice_image(image.convert("RGB"), max_slice_nums)
        out = []
        for s in slices:
            chw = preprocess_ref.normalize(np.asarray(s, dtype=np.uint8))
            h, w = chw.shape[1] // preprocess_ref.PATCH_SIZE, chw.shape[2] // preprocess_ref.PATCH_SIZE
            hidden = vision_ref.tower_forward(self.tower, preprocess_ref.patches(chw), h, w)
            out.append(vision_ref.resampler_forward(self.resampler, hidden, h, w))
        return grid, np.stack(out).astype(np.float32)

    # ------------------------------------------------------------------ prompt + embeddings
    def prepare(self, messages, max_slice_nums=9, use_image_id=True, system_prompt=""):
        """messages: [{"role", "content": str | [str | PIL image]}] -> (ids, inputs_embeds [n, d])."""
        from PIL import Image

        grids, states, plain = [], [], []
        for m in messages:
            content = m["content"] if isinstance(m["content"], list) else [m["content"]]
            items = []
            for c in content:
                if isinstance(c, Image.Image):
                    grid, emb = self.encode_image(c, max_slice_nums)
                    grids.append(grid)
                    states.append(emb)
                    items.append(None)
                else:
                    items.append(c)
            plain.append({"role": m["role"], "content": items})
        ids = prompt_ref.reference_prompt_ids(self.tokenizer, plain, grids, use_image_id=use_image_id,
                                              system_prompt=system_prompt, query_num=self.query_num)
        vision = np.concatenate(states) if states else np.zeros((0, self.query_num, self.cfg["hidden_size"]),
                                                                   np.float32)
        return ids, self.inject(ids, vision)

    def image_bounds(self, ids):
        """[(start, end)] of every placeholder run, as MiniCPMVProcessor computes image_bound."""
        ids = np.asarray(ids)
        starts = np.where((ids == self.ids["<image>"]) | (ids == self.ids["<slice>"]))[0] + 1
        ends = np.where((ids == self.ids["</image>"]) | (ids == self.ids["</slice>"]))[0]
        n = max(len(starts), len(ends))
        return list(zip(starts[:n].tolist(), ends[:n].tolist()))

    def inject(self, ids, vision_states):
        """get_vllm_embedding: token embeddings with the slices' rows scattered into the bounds."""
        with torch.no_grad():
            emb = self.llm.model.embed_tokens(torch.tensor(ids)).clone()
            bounds = self.image_bounds(ids)
            assert len(bounds) == len(vision_states), (len(bounds), len(vision_states))
            if bounds:
                index = torch.cat([torch.arange(s, e) for s, e in bounds])
                emb[index] = torch.from_numpy(vision_states.reshape(-1, emb.shape[1]))
        return emb.numpy()

    # ------------------------------------------------------------------ language model
    def last_logits(self, embeds):
        with torch.no_grad():
            out = self.llm(inputs_embeds=torch.from_numpy(embeds)[None], logits_to_keep=1)
        return out.logits[0, -1].numpy()

    def generate(self, embeds, max_new_tokens, **kwargs):
        """transformers' generate on inputs_embeds; returns the new token ids (a trailing
        terminator removed, as the reference chat() does before decoding)."""
        import warnings

        x = torch.from_numpy(embeds)[None]
        with torch.no_grad(), warnings.catch_warnings():
            # HF warns that with inputs_embeds the repetition penalty sees only the generated
            # tokens: that is the reference chat()'s behaviour, the one we reproduce.
            warnings.filterwarnings("ignore", message=".*repetition_penalty.*inputs_embeds.*")
            out = self.llm.generate(inputs_embeds=x, attention_mask=torch.ones(x.shape[:2], dtype=torch.long),
                                    max_new_tokens=max_new_tokens, eos_token_id=self.eos_ids,
                                    pad_token_id=self.eos_ids[0], **kwargs)
        toks = out[0].tolist()
        while toks and toks[-1] in self.eos_ids:
            toks.pop()
        return toks

    def greedy(self, embeds, max_new_tokens):
        return self.generate(embeds, max_new_tokens, do_sample=False, num_beams=1, repetition_penalty=1.0)

    def beam_search(self, embeds, max_new_tokens, num_beams=3, repetition_penalty=1.2, min_new_tokens=0):
        return self.generate(embeds, max_new_tokens, do_sample=False, num_beams=num_beams,
                             repetition_penalty=repetition_penalty, length_penalty=1.0, early_stopping=False,
                             min_new_tokens=min_new_tokens)

    def decode(self, ids):
        return self.tokenizer.decode(ids)
