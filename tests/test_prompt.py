"""Chat prompts: the engine's token ids (python/minicpmv_edge/prompt.py + the C++ tokenizer) equal
those of an independent implementation of the reference processor (string template + HF
tokenizers, tests/reference/prompt_ref.py) on the same vocabulary. Exact equality: token ids
are integers and the reference defines them."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "reference"))
import prompt_ref  # noqa: E402

from minicpmv_edge import _core  # noqa: E402
from minicpmv_edge.prompt import ImageLayout, Message, SpecialTokens, build_prompt  # noqa: E402


@pytest.fixture(scope="module")
def toks(tiny_checkpoint_dir, tiny_f32):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(tiny_checkpoint_dir))
    ours = _core.Tokenizer.from_gguf(str(tiny_f32[0]))
    return hf, ours


def _ours(ours, messages, sizes, use_image_id=True, max_slice_nums=9, system_prompt=None):
    layouts = []
    for w, h in sizes:
        plan = _core.plan_slices(w, h, max_slice_nums=max_slice_nums)
        grid = tuple(plan["grid"]) if plan["grid"] is not None else None
        layouts.append(ImageLayout(grid, 1 + (grid[0] * grid[1] if grid else 0)))
    special = SpecialTokens.from_tokenizer(ours.find_token, ours.unk_id)
    msgs = [Message(m["role"], [c if isinstance(c, str) else object() for c in
                                (m["content"] if isinstance(m["content"], list) else [m["content"]])])
            for m in messages]
    p = build_prompt(msgs, layouts, lambda s: list(ours.encode(s, True)), special, 64,
                     use_image_id=use_image_id, system_prompt=system_prompt)
    return p, [l.grid for l in layouts]


CASES = {
    "text only": ([{"role": "user", "content": "Hello, who are you?"}], []),
    "one image 1344x1344": ([{"role": "user", "content": [None, "What is in the image?"]}], [(1344, 1344)]),
    "one small image": ([{"role": "user", "content": [None, "Describe  it.\n"]}], [(300, 200)]),
    "two images in one message": ([{"role": "user", "content": [None, None, "Compare image 1 and image 2."]}],
                                  [(1000, 600), (1920, 1080)]),
    "few-shot": ([{"role": "user", "content": [None, "production date?"]},
                  {"role": "assistant", "content": "2023.08.04"},
                  {"role": "user", "content": [None, "production date?"]},
                  {"role": "assistant", "content": "2007.04.24"},
                  {"role": "user", "content": [None, "production date?"]}],
                 [(800, 600), (640, 480), (3000, 400)]),
    "two turns": ([{"role": "user", "content": [None, "图里有什么？"]},
                   {"role": "assistant", "content": "一只猫。 It's a cat!"},
                   {"role": "user", "content": "What colour is it?  \n\n"}], [(448, 448)]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_prompt_ids_match_reference(toks, name):
    hf, ours = toks
    messages, sizes = CASES[name]
    p, grids = _ours(ours, messages, sizes)
    ref = prompt_ref.reference_prompt_ids(hf, messages, grids)
    assert p.ids == ref
    # every slot points at 64 <unk> rows between <image>/</image> or <slice>/</slice>
    unk = ours.unk_id
    assert len(p.slots) == sum(1 + (g[0] * g[1] if g else 0) for g in grids)
    for pos, _, _ in p.slots:
        assert all(t == unk for t in p.ids[pos:pos + 64])
        assert ours.token_text(p.ids[pos - 1]) in ("<image>", "<slice>")
        assert ours.token_text(p.ids[pos + 64]) in ("</image>", "</slice>")


def test_video_frames_without_image_id(toks):
    hf, ours = toks
    frames = 5
    messages = [{"role": "user", "content": [None] * frames + ["Describe the video"]}]
    sizes = [(1280, 720)] * frames
    p, grids = _ours(ours, messages, sizes, use_image_id=False, max_slice_nums=2)
    assert grids[0] == (2, 1)
    assert p.ids == prompt_ref.reference_prompt_ids(hf, messages, grids, use_image_id=False)


def test_system_prompt(toks):
    hf, ours = toks
    messages = [{"role": "user", "content": [None, "Read the receipt."]}]
    p, grids = _ours(ours, messages, [(600, 900)], system_prompt="You are an OCR engine.")
    assert p.ids == prompt_ref.reference_prompt_ids(hf, messages, grids, system_prompt="You are an OCR engine.")
