"""Chat prompts exactly as MiniCPM-V 2.6's reference `chat()` builds them (spec section 6).

The reference renders the messages with the ChatML template, writes every image as the text
`(<image>./</image>)`, replaces that text with `<image_id>k</image_id><image>` + 64 `<unk>` +
`</image>` + slice rows, and tokenizes the whole string. Special tokens are matched verbatim
before BPE, so the string can be tokenized piece by piece between them with the same result; we
build the token ids directly and never tokenize `<unk>` text: the placeholder rows are marked
by position, which is where the image embeddings go.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Tuple

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."


@dataclass
class ImageLayout:
    """How one image was cut: the overview ("source") first, then grid cells row by row."""

    grid: Optional[Tuple[int, int]]  # (cols, rows), None when the image is not sliced
    n_slices: int                    # 1 + cols * rows (or 1)


@dataclass
class Message:
    role: str
    items: List[Any]  # str or an image object (anything that is not a str)


@dataclass
class SpecialTokens:
    """Ids resolved by string from the model's vocabulary (never hard-coded)."""

    im_start: int
    im_end: int
    image_start: int   # <image>
    image_end: int     # </image>
    slice_start: int   # <slice>
    slice_end: int     # </slice>
    image_id_start: int  # <image_id>
    image_id_end: int    # </image_id>
    unk: int           # <unk>: the placeholder row
    endoftext: int     # <|endoftext|>

    @classmethod
    def from_tokenizer(cls, find_token, unk_id: Optional[int] = None, image_tokens: bool = True) -> "SpecialTokens":
        """image_tokens=False (a text-only model, e.g. a plain Qwen2 GGUF): the image markers may
        be missing and are then -1 (build_prompt never uses them without images)."""
        def need(s, required=True):
            i = find_token(s)
            if i is None or i < 0:
                if not required:
                    return -1
                raise ValueError(f"the model's vocabulary has no token {s!r}: not a MiniCPM-V 2.6 file?")
            return i

        img = lambda s: need(s, image_tokens)  # noqa: E731
        return cls(
            im_start=need("<|im_start|>"), im_end=need("<|im_end|>"),
            image_start=img("<image>"), image_end=img("</image>"),
            slice_start=img("<slice>"), slice_end=img("</slice>"),
            image_id_start=img("<image_id>"), image_id_end=img("</image_id>"),
            unk=unk_id if unk_id is not None and unk_id >= 0 else img("<unk>"),
            endoftext=need("<|endoftext|>"),
        )


@dataclass
class Prompt:
    """Token ids of a rendered conversation and where the image embedding rows go."""

    ids: List[int] = field(default_factory=list)
    # One entry per slice, in processing order (image 0 source, image 0 cells, image 1 ...):
    # (position of its first placeholder row, image index, slice index within the image).
    slots: List[Tuple[int, int, int]] = field(default_factory=list)


def chat_turns(messages: Sequence[Message], system_prompt: Optional[str]) -> List[Message]:
    """The message list the reference template sees: roles checked, system turn as in
    Qwen2's template (the default system line when the first message is not `system`)."""
    if not messages:
        raise ValueError("messages is empty")
    msgs = list(messages)
    if system_prompt:
        msgs = [Message("system", [system_prompt])] + [m for m in msgs if m.role != "system"]
    for i, m in enumerate(msgs):
        if m.role not in ("system", "user", "assistant"):
            raise ValueError(f"message {i}: role must be 'user', 'assistant' or 'system', got {m.role!r}")
        if m.role == "system" and i != 0:
            raise ValueError(f"message {i}: a system message may only come first")
    body = [m for m in msgs if m.role != "system"]
    if not body or body[0].role != "user":
        raise ValueError("the first message (after an optional system message) must be from 'user'")
    if msgs[0].role != "system":
        msgs = [Message("system", [DEFAULT_SYSTEM_PROMPT])] + msgs
    return msgs


def build_prompt(messages: Sequence[Message], layouts: Sequence[ImageLayout], tok_encode,
                 special: SpecialTokens, query_num: int, use_image_id: bool = True,
                 system_prompt: Optional[str] = None, add_generation_prompt: bool = True) -> Prompt:
    """Render `messages` (whose image items are numbered in order, matching `layouts`) to ids.

    tok_encode(text) -> list of ids, with special tokens matched verbatim.
    """
    out = Prompt()
    pending: List[str] = []  # text between two special tokens is tokenized as one string
    image_index = 0

    def text(s: str):
        pending.append(s)

    def special_id(i: int):
        if pending:
            joined = "".join(pending)
            pending.clear()
            if joined:
                out.ids.extend(tok_encode(joined))
        out.ids.append(i)

    def placeholder(image_idx: int, slice_idx: int, start: int, end: int):
        special_id(start)
        out.slots.append((len(out.ids), image_idx, slice_idx))
        out.ids.extend([special.unk] * query_num)
        special_id(end)

    for m in chat_turns(messages, system_prompt):
        special_id(special.im_start)
        text(m.role + "\n")
        for j, item in enumerate(m.items):
            if j:
                text("\n")  # the reference joins content items with "\n"
            if isinstance(item, str):
                text(item)
                continue
            if image_index >= len(layouts):
                raise ValueError("more images in the messages than image layouts given")
            lay = layouts[image_index]
            if use_image_id:
                special_id(special.image_id_start)
                text(str(image_index))
                special_id(special.image_id_end)
            placeholder(image_index, 0, special.image_start, special.image_end)
            if lay.grid is not None:
                cols, rows = lay.grid
                for r in range(rows):
                    if r:
                        text("\n")
                    for c in range(cols):
                        placeholder(image_index, 1 + r * cols + c, special.slice_start, special.slice_end)
            image_index += 1
        special_id(special.im_end)
        text("\n")
    if image_index != len(layouts):
        raise ValueError(f"{len(layouts)} image layouts given for {image_index} images")
    if add_generation_prompt:
        special_id(special.im_start)
        text("assistant\n")
    if pending:
        special_id_end = "".join(pending)
        pending.clear()
        out.ids.extend(tok_encode(special_id_end))
    return out


def cut_at_stop(text: str, stop: Sequence[str]) -> Tuple[str, bool]:
    """`text` up to the earliest occurrence of any stop string, and whether one occurred."""
    hit = min((text.find(s) for s in stop if s and s in text), default=-1)
    return (text[:hit], True) if hit >= 0 else (text, False)
