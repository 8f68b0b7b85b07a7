"""The Python API: `MiniCPMV(model, mmproj=None, n_threads=, n_ctx=)` and its `.chat(...)`.

It behaves like the Hugging Face `model.chat()` of MiniCPM-V 2.6 (same prompt tokens, same
sampling defaults) and accepts OpenAI-style message parts. A MiniCPMV object keeps one KV cache:
a follow-up call whose conversation starts with what is already in the cache prefills only the
new tokens, and images already encoded are not encoded again.
"""
from __future__ import annotations

import hashlib
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _core
from .media import ImageError, load_image, load_video
from .prompt import ImageLayout, Message, SpecialTokens, build_prompt, cut_at_stop

ContextLimitError = _core.ContextLimitError

# The reference chat() defaults (spec section 8.4).
SAMPLING_DEFAULTS = dict(temperature=0.7, top_p=0.8, top_k=100, repetition_penalty=1.05)
BEAM_DEFAULTS = dict(num_beams=3, repetition_penalty=1.2)
VIDEO_MAX_SLICE_NUMS = 2
VIDEO_MAX_FRAMES = 64


@dataclass
class Stats:
    """Timings of the last chat() call."""

    n_images: int = 0
    n_slices: int = 0
    encode_ms: float = 0.0
    n_prompt: int = 0          # tokens of the whole conversation
    n_prefill: int = 0         # tokens actually prefilled (the rest came from the cache)
    prefill_ms: float = 0.0
    n_generated: int = 0
    decode_ms: float = 0.0
    finish_reason: str = ""
    n_encoded: int = 0         # images run through the vision encoder (the rest came from the cache)
    tokens: List[int] = field(default_factory=list)  # the generated ids (without the stop token)

    @property
    def prefill_tps(self) -> float:
        return self.n_prefill / (self.prefill_ms / 1e3) if self.prefill_ms > 0 else 0.0

    @property
    def decode_tps(self) -> float:
        return self.n_generated / (self.decode_ms / 1e3) if self.decode_ms > 0 else 0.0

    def line(self) -> str:
        return (f"images {self.n_images} ({self.n_slices} slices) encoded in {self.encode_ms:.0f} ms | "
                f"prefill {self.n_prefill}/{self.n_prompt} tokens at {self.prefill_tps:.1f} tok/s | "
                f"decode {self.n_generated} tokens at {self.decode_tps:.1f} tok/s | {self.finish_reason}")


@dataclass
class _Video:
    frames: List[np.ndarray]
    times: List[float] = field(default_factory=list)


def resolve_model_paths(model: Union[str, os.PathLike], mmproj=None) -> Tuple[str, Optional[str]]:
    """`model` may be a GGUF file or a directory holding a language-model GGUF and an mmproj GGUF."""
    p = Path(model).expanduser()
    if p.is_dir():
        ggufs = sorted(p.glob("*.gguf"))
        mm = [g for g in ggufs if "mmproj" in g.name.lower()]
        lm = [g for g in ggufs if "mmproj" not in g.name.lower()]
        if not lm:
            raise FileNotFoundError(f"{p}: no language-model .gguf file in this directory")
        if len(lm) > 1:
            # Prefer the int4 file users run on devices; otherwise ask.
            pref = [g for g in lm if "q4_k_m" in g.name.lower()]
            if len(pref) != 1:
                raise ValueError(f"{p}: several model files ({', '.join(g.name for g in lm)}): pass one with -m")
            lm = pref
        if mmproj is None and mm:
            mmproj = mm[0] if len(mm) == 1 else None
            if len(mm) > 1:
                pref = [g for g in mm if "f16" in g.name.lower()]
                mmproj = pref[0] if pref else mm[0]
        p = lm[0]
    if not p.exists():
        raise FileNotFoundError(f"model file not found: {p}")
    if mmproj is not None:
        mmproj = Path(mmproj).expanduser()
        if not mmproj.exists():
            raise FileNotFoundError(f"mmproj file not found: {mmproj}")
        mmproj = str(mmproj)
    return str(p), mmproj


def _as_items(content) -> List[Any]:
    """Message content -> list of str / image objects / _Video (OpenAI parts are unpacked)."""
    if content is None:
        return []
    if isinstance(content, (str, bytes)) or not isinstance(content, (list, tuple)):
        content = [content]
    items: List[Any] = []
    for part in content:
        if isinstance(part, dict):
            kind = part.get("type")
            if kind == "text" or (kind is None and "text" in part):
                items.append(str(part.get("text", "")))
            elif kind in ("image_url", "input_image"):
                url = part.get("image_url", part.get("url"))
                if isinstance(url, dict):
                    url = url.get("url")
                if not url:
                    raise ImageError("image_url part without a url")
                items.append(load_image(url))
            elif kind == "image":
                items.append(load_image(part.get("image")))
            elif kind == "video":
                v = part.get("video")
                if isinstance(v, (list, tuple)):
                    items.append(_Video([load_image(f) for f in v], list(part.get("timestamps", []))))
                else:
                    frames, times = load_video(v, max_frames=int(part.get("max_frames", VIDEO_MAX_FRAMES)))
                    items.append(_Video(frames, times))
            else:
                raise ValueError(f"unsupported content part type {kind!r}")
        elif isinstance(part, str):
            items.append(part)
        elif isinstance(part, _Video):
            items.append(part)
        else:
            items.append(load_image(part))
    return items


def _load_vision(path: str, n_threads: int, weights: str = "native"):
    """The vision encoder of an mmproj file. A load error that does not say which tensor is at
    fault (a vector or the query of a type the engine cannot read) gets the file and tensor added."""
    try:
        return _core.VisionEncoder(path, n_threads=n_threads, weights=weights)
    except ValueError as e:
        if path in str(e):
            raise
        try:
            bad = [t for t in _core.GGUFFile(path).tensors if not _core.type_info(t["type"])["supported"]]
        except ValueError:
            bad = []
        if bad:
            names = ", ".join(f"'{t['name']}' ({t['type']})" for t in bad[:3])
            raise ValueError(f"{path}: tensor {names} has a type this engine cannot read ({e})") from None
        raise ValueError(f"{path}: {e}") from None


class MiniCPMV:
    """MiniCPM-V 2.6 on this device. `mmproj=None` gives a text-only model."""

    def __init__(self, model, mmproj=None, n_threads: Optional[int] = None, n_ctx: int = 4096,
                 n_batch: int = 512, verbose: bool = False, image_cache_size: int = 16, kv_type: str = "f16",
                 vision_weights: str = "native"):
        """vision_weights: "native" runs the vision tower on the mmproj's own weights (f16 as
        published: closest to the reference); "q8_0" converts them at load to int8 blocks for the
        int8 dot-product kernels (about 1.6x faster per slice here; 1.5e-2 relative RMS on the
        image embeddings at real widths, against 5e-4 for f16); "bf16" converts them to bfloat16
        and runs bf16 dot products (CPUs with AVX512_BF16 only, else native; ~1.6x native per slice
        here, 5e-3 relative RMS); "auto" picks bf16 where available, else q8_0 where the CPU has fast
        int8 dot products."""
        self.model_path, self.mmproj_path = resolve_model_paths(model, mmproj)
        self.verbose = verbose
        nt = int(n_threads) if n_threads else 0
        # kv_type "f32" keeps the whole forward in float32 (tests against transformers).
        self.llm = _core.LLM(self.model_path, n_ctx=int(n_ctx), n_threads=nt, n_batch=int(n_batch),
                             kv_type=kv_type)
        self.tokenizer = _core.Tokenizer.from_gguf(self.model_path)
        if self.tokenizer.n_vocab != self.llm.n_vocab:
            # A token id the sampler picks must have a text, and every token id an embedding row.
            raise ValueError(f"{self.model_path}: the tokenizer has {self.tokenizer.n_vocab} tokens but "
                             f"token_embd.weight has {self.llm.n_vocab} rows (n_vocab): the vocabulary "
                             f"does not belong to these weights")
        unk = getattr(self.tokenizer, "unk_id", -1)
        try:
            self.special = SpecialTokens.from_tokenizer(self.tokenizer.find_token, unk if unk >= 0 else None,
                                                        image_tokens=self.mmproj_path is not None)
        except ValueError as e:
            raise ValueError(f"{self.model_path}: {e}") from None
        self.stop_ids = {self.special.im_end, self.special.endoftext}
        self.vision = None
        self.query_num = 64
        if self.mmproj_path:
            self.vision = _load_vision(self.mmproj_path, nt, vision_weights)
            cfg = self.vision.config
            self.query_num = int(cfg.get("query_num", 64))
            if int(cfg.get("embed_dim", self.llm.n_embd)) != self.llm.n_embd:
                raise ValueError(f"{self.mmproj_path}: projector width {cfg.get('embed_dim')} does not match "
                                 f"the language model's {self.llm.n_embd}")
        self._image_cache: "OrderedDict[str, Tuple[ImageLayout, np.ndarray]]" = OrderedDict()
        self._image_cache_size = image_cache_size
        self._kv_keys: List[Any] = []  # what each cached position holds (token id or image row key)
        # The generation the cache currently belongs to: every prefill (and reset) takes the cache
        # over, so a stream left half-consumed cannot append its tokens to another call's cache.
        self._cache_owner: Optional[object] = None
        self.n_images_encoded = 0  # vision encoder runs over the object's life (cache misses)
        self.last_stats = Stats()

    # ------------------------------------------------------------------ public surface
    @property
    def n_ctx(self) -> int:
        return self.llm.n_ctx

    def reset(self):
        """Forget the conversation in the KV cache (encoded images stay cached)."""
        self.llm.reset()
        self._kv_keys = []
        self._cache_owner = None

    def tokenize(self, text: str) -> List[int]:
        return list(self.tokenizer.encode(text, True))

    def encode_image(self, image, max_slice_nums: int = 9) -> Tuple[ImageLayout, np.ndarray]:
        """RGB image -> (layout, embeddings [n_slices, query_num, n_embd], cache key), cached by content."""
        if self.vision is None:
            raise ValueError("this model was loaded without an mmproj file: it cannot see images "
                             "(pass mmproj=... or a directory holding both files)")
        arr = load_image(image)
        key = hashlib.blake2b(arr.tobytes(), digest_size=16,
                              person=b"mcv-img").hexdigest() + f":{arr.shape}:{max_slice_nums}"
        hit = self._image_cache.get(key)
        if hit is not None:
            self._image_cache.move_to_end(key)
            return hit[0], hit[1], key
        emb, lay = self.vision.encode_image(arr, int(max_slice_nums))
        self.n_images_encoded += 1
        layout = ImageLayout(grid=tuple(lay["grid"]) if lay["grid"] is not None else None, n_slices=emb.shape[0])
        self._image_cache[key] = (layout, emb)
        while len(self._image_cache) > self._image_cache_size:
            self._image_cache.popitem(last=False)
        return layout, emb, key

    def generate(self, prompt: str, stream: bool = False, max_new_tokens: int = 256,
                 temperature: float = 0.8, top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05,
                 repetition_penalty: float = 1.0, seed: Optional[int] = None, greedy: bool = False,
                 stop: Optional[Sequence[str]] = None):
        """Plain completion of `prompt` (no chat template; special tokens in it are honoured).
        Returns the text, or with stream=True a generator of text pieces."""
        ids = self.tokenize(prompt)
        if not ids:
            raise ValueError("the prompt is empty")
        params = dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                      repetition_penalty=repetition_penalty)
        gen = self._generate(ids, [], not greedy, 1, params, int(max_new_tokens), 0, seed,
                             list(stop or []), Stats())
        return gen if stream else "".join(gen)

    def chat(self, messages, stream: bool = False, sampling: bool = True, num_beams: Optional[int] = None,
             repetition_penalty: Optional[float] = None, max_new_tokens: int = 2048,
             max_slice_nums: Optional[int] = None, use_image_id: Optional[bool] = None,
             temperature: Optional[float] = None, top_p: Optional[float] = None, top_k: Optional[int] = None,
             min_p: float = 0.0, seed: Optional[int] = None, stop: Optional[Sequence[str]] = None,
             system_prompt: Optional[str] = None, min_new_tokens: int = 0, progress=None):
        """Answer the last user turn of `messages` (OpenAI-style list of {"role", "content"}).

        Content may be a string or a list of strings, PIL images, numpy RGB arrays, OpenAI parts
        ({"type": "text"}, {"type": "image_url", "image_url": {"url": path | file:// | data:}}) and
        {"type": "video", "video": path or list of frames}. Returns the answer, or with stream=True
        a generator of text pieces. Defaults are the reference's: sampling with top_p 0.8,
        top_k 100, temperature 0.7, repetition penalty 1.05; sampling=False is beam search with 3
        beams and repetition penalty 1.2 (num_beams=1: greedy).
        """
        if stream and not sampling and (num_beams or BEAM_DEFAULTS["num_beams"]) > 1:
            raise ValueError("stream=True needs sampling=True or num_beams=1 (beam search cannot stream), "
                             "as in the reference chat()")
        prompt, rows, stats = self._prepare(messages, max_slice_nums, use_image_id, system_prompt, progress)
        if sampling:
            params = dict(SAMPLING_DEFAULTS)
            for k, v in (("temperature", temperature), ("top_p", top_p), ("top_k", top_k),
                         ("repetition_penalty", repetition_penalty)):
                if v is not None:
                    params[k] = v
            beams = 1
        else:
            beams = BEAM_DEFAULTS["num_beams"] if num_beams is None else int(num_beams)
            params = dict(temperature=1.0, top_p=1.0, top_k=0,
                          repetition_penalty=BEAM_DEFAULTS["repetition_penalty"]
                          if repetition_penalty is None else repetition_penalty)
        params["min_p"] = min_p
        gen = self._generate(prompt.ids, rows, sampling, beams, params, int(max_new_tokens), int(min_new_tokens),
                             seed, list(stop or []), stats)
        if stream:
            return gen
        return "".join(gen)

    def prompt_logits(self, messages, max_slice_nums: Optional[int] = None, use_image_id: Optional[bool] = None,
                      system_prompt: Optional[str] = None) -> Tuple[List[int], np.ndarray]:
        """(prompt ids, next-token logits) of `messages` exactly as chat() would start generating
        from them (for checks against a reference). Uses and updates the KV cache like chat()."""
        prompt, rows, stats = self._prepare(messages, max_slice_nums, use_image_id, system_prompt, None)
        logits = self._prefill(prompt.ids, rows, stats)
        self.last_stats = stats
        return list(prompt.ids), logits

    # ------------------------------------------------------------------ internals
    def _prepare(self, messages, max_slice_nums, use_image_id, system_prompt, progress):
        """messages -> (prompt, image rows, stats), with the reference's per-call defaults: video
        turns off <image_id> tags and slices at most 2 ways, images slice up to 9."""
        msgs, has_video = self._normalize(messages)
        if use_image_id is None:
            use_image_id = not has_video
        if max_slice_nums is None:
            max_slice_nums = VIDEO_MAX_SLICE_NUMS if has_video else 9
        stats = Stats()
        prompt, rows = self._render(msgs, int(max_slice_nums), bool(use_image_id), system_prompt, stats, progress)
        return prompt, rows, stats

    def _normalize(self, messages) -> Tuple[List[Message], bool]:
        if isinstance(messages, dict):
            messages = [messages]
        if not isinstance(messages, (list, tuple)) or not messages:
            raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...}")
        out, has_video = [], False
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or "role" not in m:
                raise ValueError(f"message {i} must be a dict with 'role' and 'content'")
            items = _as_items(m.get("content"))
            flat: List[Any] = []
            for it in items:
                if isinstance(it, _Video):
                    has_video = True
                    flat.extend(it.frames)
                else:
                    flat.append(it)
            if m["role"] == "assistant" and any(not isinstance(x, str) for x in flat):
                raise ValueError(f"message {i}: assistant messages can only hold text")
            out.append(Message(m["role"], flat))
        return out, has_video

    def _render(self, msgs: List[Message], max_slice_nums: int, use_image_id: bool,
                system_prompt: Optional[str], stats: Stats, progress):
        layouts, embeds, keys = [], [], []
        images = [x for m in msgs for x in m.items if not isinstance(x, str)]
        n_encoded_before = self.n_images_encoded
        t0 = time.perf_counter()
        for k, img in enumerate(images):
            lay, emb, key = self.encode_image(img, max_slice_nums)
            layouts.append(lay)
            embeds.append(emb)
            keys.append(key)
            if progress:
                progress(k + 1, len(images))
        stats.encode_ms = (time.perf_counter() - t0) * 1e3
        stats.n_encoded = self.n_images_encoded - n_encoded_before
        stats.n_images = len(images)
        stats.n_slices = sum(l.n_slices for l in layouts)
        prompt = build_prompt(msgs, layouts, self.tokenize, self.special, self.query_num,
                              use_image_id=use_image_id, system_prompt=system_prompt)
        # Which rows go where: (position, embedding row, cache key of that row).
        rows = []
        for pos, img_idx, slice_idx in prompt.slots:
            for q in range(self.query_num):
                rows.append((pos + q, embeds[img_idx][slice_idx, q], (keys[img_idx], slice_idx, q)))
        return prompt, rows

    def _prefill(self, ids: List[int], rows, stats: Stats) -> np.ndarray:
        self._cache_owner = object()  # streams started before this call can no longer continue
        n = len(ids)
        if n > self.llm.n_ctx:
            raise ContextLimitError(f"the conversation needs {n} tokens but the context holds {self.llm.n_ctx} "
                                    f"(n_ctx): start a new conversation or load the model with a larger n_ctx")
        keys: List[Any] = list(ids)
        for pos, _, key in rows:
            keys[pos] = ("img",) + key
        # Reuse the longest cached prefix; at least the last position is evaluated for its logits.
        common = 0
        # n_past bounds it too: after an interrupted eval the keys may claim more than the cache holds.
        limit = min(len(self._kv_keys), n - 1, self.llm.n_past)
        while common < limit and self._kv_keys[common] == keys[common]:
            common += 1
        if common < self.llm.n_past:
            self.llm.truncate(common)
        self._kv_keys = keys[:common]
        new_rows = [(pos - common, emb) for pos, emb, _ in rows if pos >= common]
        t0 = time.perf_counter()
        tokens = np.asarray(ids[common:], dtype=np.int32)
        if new_rows:
            emb = np.stack([e for _, e in new_rows]).astype(np.float32, copy=False)
            positions = np.asarray([p for p, _ in new_rows], dtype=np.int32)
            logits = self.llm.eval_mixed(tokens, emb, positions)
        else:
            logits = self.llm.eval(tokens)
        self._kv_keys = keys
        stats.prefill_ms = (time.perf_counter() - t0) * 1e3
        stats.n_prompt, stats.n_prefill = n, n - common
        return np.asarray(logits, dtype=np.float32)

    def _generate(self, ids: List[int], rows, sampling: bool, beams: int, params: Dict[str, float], max_new_tokens: int,
                  min_new_tokens: int, seed, stop: List[str], stats: Stats) -> Iterator[str]:
        # Prefill happens at the first next() of the generator, so a streaming caller sees errors
        # there; chat(stream=False) consumes it at once.
        if beams > 1:
            from .beam import beam_search  # noqa: WPS433 - optional heavy path

            logits = self._prefill(ids, rows, stats)
            yield from beam_search(self, logits, beams, params, max_new_tokens, min_new_tokens, stop, stats)
            self.last_stats = stats
            return
        logits = self._prefill(ids, rows, stats)
        owner = self._cache_owner
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little")
        sampler = _core.Sampler(self.llm.n_vocab,
                                temperature=float(params["temperature"]) if sampling else 1.0,
                                top_k=int(params["top_k"]) if sampling else 0,
                                top_p=float(params["top_p"]) if sampling else 1.0,
                                min_p=float(params.get("min_p", 0.0)) if sampling else 0.0,
                                repetition_penalty=float(params["repetition_penalty"]),
                                seed=int(seed) & ((1 << 64) - 1))
        detok = _core.Detokenizer(self.tokenizer, True)
        generated: List[int] = []
        text_out, held = "", ""
        max_stop = max((len(s) for s in stop), default=0)
        stats.finish_reason = "length"
        t0 = time.perf_counter()
        try:
            stop_list = sorted(self.stop_ids)
            for step in range(max_new_tokens):
                prev = np.asarray(generated, dtype=np.int32)
                if step < min_new_tokens:
                    # As HF's MinNewTokensLengthLogitsProcessor: the terminators cannot be chosen yet.
                    logits = logits.copy()
                    logits[stop_list] = -np.inf
                if sampling:
                    tok = int(sampler.sample(logits, prev))
                else:
                    tok = int(np.argmax(np.asarray(sampler.probs(logits, prev))))
                if tok in self.stop_ids:
                    stats.finish_reason = "stop"
                    break
                generated.append(tok)
                piece = detok.push(tok)
                if piece:
                    held += piece
                    if stop:
                        held, hit = cut_at_stop(held, stop)
                        if hit:
                            stats.finish_reason = "stop"
                            if held:
                                yield held
                            held = ""
                            break
                        # keep back what could be the start of a stop string
                        safe = len(held) - (max_stop - 1)
                        if safe > 0:
                            yield held[:safe]
                            held = held[safe:]
                    else:
                        yield held
                        held = ""
                if self.llm.n_past >= self.llm.n_ctx:
                    stats.finish_reason = "context"
                    break
                if self._cache_owner is not owner:
                    raise RuntimeError("a later chat()/generate() call on this MiniCPMV object took over its "
                                       "KV cache: this stream cannot continue (consume or close it first)")
                logits = np.asarray(self.llm.eval(np.asarray([tok], dtype=np.int32)), dtype=np.float32)
                self._kv_keys.append(tok)
            else:
                stats.finish_reason = "length"
            tail = held + (detok.flush() if stats.finish_reason != "stop" or not stop else "")
            if stop and stats.finish_reason != "stop":
                # the last bytes flushed from the detokenizer may complete a stop string
                tail, hit = cut_at_stop(tail, stop)
                if hit:
                    stats.finish_reason = "stop"
            if tail:
                yield tail
        finally:
            stats.n_generated = len(generated)
            stats.tokens = list(generated)
            stats.decode_ms = (time.perf_counter() - t0) * 1e3
            if self._cache_owner is owner:  # not a superseded stream closed (or collected) later
                self.last_stats = stats
