"""The chat layer end to end (python/minicpmv_edge/api.py on the C++ engine, tiny random model in
float32) against an independent PyTorch reference pipeline built from the Hugging Face checkpoint
(tests/reference/pipeline_ref.py: HF tokenizer + chat template, Pillow preprocessing,
transformers' Idefics2 vision tower + spec resampler, transformers' Qwen2ForCausalLM, HF generate).

Checks per conversation kind (one image, two images in one message, few-shot, two turns, video):
the prompt ids are equal, the next-token logits agree within LOGIT_TOL, and 16 greedy tokens are
identical. Plus: bad inputs raise clear typed errors and leave the object usable, OpenAI-style
image parts give the same answer as a PIL image, streaming concatenates to the full answer.
"""
import base64
import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent / "reference"))
from pipeline_ref import ReferencePipeline  # noqa: E402

from minicpmv_edge.api import ContextLimitError, MiniCPMV  # noqa: E402
from minicpmv_edge.media import ImageError, video_frame_indices  # noqa: E402

N_NEW = 16
N_CTX = 2048
GREEDY = dict(sampling=False, num_beams=1, repetition_penalty=1.0, max_new_tokens=N_NEW)

# Both sides run the language model in float32 (our KV cache too: kv_type f32); the reference
# vision runs in float64, ours in float32 (~1e-6 relative on the embeddings). Logits of this tiny
# model are O(1); float32 accumulation over its 2 layers and a few hundred positions gives errors of
# ~1e-6, so 1e-4 (relative to the largest logit) has a wide margin, while one misplaced image row
# or a wrong slice order changes logits by > 1e-2 (checked below on the one-image case).
LOGIT_TOL = 1e-4


def logit_tol(ref_logits):
    return LOGIT_TOL * max(1.0, float(np.abs(ref_logits).max()))


def shapes_image(w, h, seed):
    """A deterministic picture: a colour gradient with a few filled rectangles and discs."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1),
                    np.full_like(x, int(rng.integers(0, 256)))], axis=-1).astype(np.uint8)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, w - 8)), int(rng.integers(0, h - 8))
        x1, y1 = x0 + int(rng.integers(4, w // 3)), y0 + int(rng.integers(4, h // 3))
        img[y0:y1, x0:x1] = rng.integers(0, 256, 3)
        cx, cy, r = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(3, min(w, h) // 4))
        img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.integers(0, 256, 3)
    return Image.fromarray(img)


@pytest.fixture(scope="module")
def ref(tiny_checkpoint_dir):
    return ReferencePipeline(tiny_checkpoint_dir)


def new_model(tiny_f32):
    llm, mm = tiny_f32
    return MiniCPMV(str(llm), str(mm), n_threads=2, n_ctx=N_CTX, kv_type="f32")


@pytest.fixture(scope="module")
def model(tiny_f32):
    return new_model(tiny_f32)


@pytest.fixture(scope="module")
def images():
    # 640x480 is sliced (2 x 1 grid: 3 slices); the others are single slices.
    return {"big": shapes_image(640, 480, 1), "a": shapes_image(160, 120, 2), "b": shapes_image(120, 200, 3),
            "c": shapes_image(200, 150, 4)}


def compare(ref, model, messages, ref_messages=None, **opts):
    """Prompt ids, last logits and 16 greedy tokens of ours vs the reference; returns our answer."""
    ref_kw = {k: opts[k] for k in ("max_slice_nums", "use_image_id") if k in opts}
    ids, embeds = ref.prepare(ref_messages or messages, **ref_kw)
    ref_logits = ref.last_logits(embeds)
    our_ids, logits = model.prompt_logits(messages, **ref_kw)
    assert our_ids == ids
    err = np.abs(logits - ref_logits).max()
    assert err < logit_tol(ref_logits), err
    expected = ref.greedy(embeds, N_NEW)
    answer = model.chat(messages, **GREEDY, **opts)
    assert model.last_stats.tokens == expected
    assert model.last_stats.n_prefill == 1  # prompt_logits() left the whole prompt in the cache
    assert answer == ref.decode(expected)
    return answer, ids, embeds, logits


def test_one_image(ref, model, images):
    msgs = [{"role": "user", "content": [images["big"], "What is in the image?"]}]
    _, ids, embeds, logits = compare(ref, model, msgs)
    assert model.last_stats.n_slices == 3
    # The tolerance is tight enough to see the image: without the injected rows (plain <unk>
    # embeddings), or with the slices in another order, the logits move far outside it.
    tol = logit_tol(ref.last_logits(embeds))
    plain = ref.llm.model.embed_tokens.weight.detach().numpy()[ids]
    assert np.abs(ref.last_logits(plain) - logits).max() > 100 * tol
    grid, vision = ref.encode_image(images["big"])
    swapped = ref.inject(ids, vision[[0, 2, 1]])
    assert np.abs(ref.last_logits(swapped) - logits).max() > 100 * tol


def test_two_images_in_one_message(ref, model, images):
    msgs = [{"role": "user", "content": [images["a"], images["b"], "Compare image 1 and image 2."]}]
    compare(ref, model, msgs)
    assert model.last_stats.n_images == 2


def test_few_shot(ref, model, images):
    msgs = [{"role": "user", "content": [images["a"], "production date?"]},
            {"role": "assistant", "content": "2023.08.04"},
            {"role": "user", "content": [images["b"], "production date?"]},
            {"role": "assistant", "content": "2007.04.24"},
            {"role": "user", "content": [images["c"], "production date?"]}]
    compare(ref, model, msgs)
    assert model.last_stats.n_images == 3


def test_two_turns_reuse_cache(ref, tiny_f32, images):
    m = new_model(tiny_f32)
    first = [{"role": "user", "content": [images["big"], "Describe the picture."]}]
    ids1, emb1 = ref.prepare(first)
    expected1 = ref.greedy(emb1, N_NEW)
    answer1 = m.chat(first, **GREEDY)
    assert m.last_stats.tokens == expected1
    assert m.last_stats.n_encoded == 1 and m.last_stats.n_prefill == m.last_stats.n_prompt
    n_encoded = m.n_images_encoded

    second = first + [{"role": "assistant", "content": answer1},
                      {"role": "user", "content": "And what colour is the biggest shape?"}]
    ids2, emb2 = ref.prepare(second)
    expected2 = ref.greedy(emb2, N_NEW)
    m.chat(second, **GREEDY)
    st = m.last_stats
    assert st.tokens == expected2
    assert st.n_prompt == len(ids2)
    # Only the new part is prefilled: at least the whole first prompt came from the cache.
    assert st.n_prefill <= len(ids2) - len(ids1), (st.n_prefill, len(ids1), len(ids2))
    assert st.n_encoded == 0 and m.n_images_encoded == n_encoded  # the image was not encoded again


def write_video(path, n_frames=12, fps=4, size=(160, 120)):
    """~3 s of moving shapes (MJPG in AVI: OpenCV writes and reads it everywhere)."""
    import cv2

    w, h = size
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert out.isOpened()
    for i in range(n_frames):
        f = np.zeros((h, w, 3), np.uint8)
        f[:] = (40, 20 + 10 * i, 60)
        cv2.rectangle(f, (5 + 10 * i, 10), (35 + 10 * i, 40), (0, 0, 255), -1)
        cv2.circle(f, (w // 2, 20 + 7 * i), 12, (0, 255, 0), -1)
        out.write(f)
    out.release()
    return path


def official_video_frames(path, max_frames=64):
    """The official MiniCPM-V 2.6 video example's sampling (one frame per second: every
    round(fps)-th frame, then uniform_sample down to max_frames), with OpenCV decoding every frame."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(bgr[:, :, ::-1].copy())
    cap.release()
    sample_fps = round(fps)
    idx = list(range(0, len(frames), sample_fps))
    if len(idx) > max_frames:
        gap = len(idx) / max_frames
        idx = [idx[int(i * gap + gap / 2)] for i in range(max_frames)]
    return [Image.fromarray(frames[i]) for i in idx]


def test_video(ref, model, tmp_path):
    path = write_video(tmp_path / "shapes.avi")
    frames = official_video_frames(path)
    assert len(frames) == 3
    question = "Describe the video."
    msgs = [{"role": "user", "content": [{"type": "video", "video": str(path)}, question]}]
    # The official example: frames then the question, use_image_id off, max_slice_nums 2.
    compare(ref, model, msgs, ref_messages=[{"role": "user", "content": frames + [question]}],
            use_image_id=False, max_slice_nums=2)
    assert model.last_stats.n_images == 3


def test_video_frame_sampling_large():
    # uniform_sample of the official example on a long video (the 3 s clip above never needs it)
    idx = video_frame_indices(30 * 200, 30.0, 64)
    step = list(range(0, 6000, 30))
    gap = len(step) / 64
    assert idx == [step[int(i * gap + gap / 2)] for i in range(64)]


# ---------------------------------------------------------------------------------------------
# Bad inputs, OpenAI parts, streaming


@pytest.fixture(scope="module")
def valid(ref, images):
    """A valid chat and the answer the reference gives to it."""
    msgs = [{"role": "user", "content": [images["a"], "What shapes do you see?"]}]
    ids, embeds = ref.prepare(msgs)
    return msgs, ref.greedy(embeds, N_NEW)


def _png_bytes(img):
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_bad_inputs_then_usable(model, tiny_f32, valid, tmp_path, images):
    msgs, expected = valid
    fresh = new_model(tiny_f32)
    fresh.chat(msgs, **GREEDY)
    assert fresh.last_stats.tokens == expected
    model.chat(msgs, **GREEDY)  # put a conversation in the cache first

    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    empty_video = tmp_path / "empty.mp4"
    empty_video.write_bytes(b"")
    garbage_video = tmp_path / "garbage.avi"
    garbage_video.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    long_text = "hello world " * N_CTX
    cases = [
        (ImageError, "not a readable image", [b"definitely not an image", "hi"]),
        (ImageError, "garbage.png", [garbage, "hi"]),  # a Path is an image (a str is text)
        (ImageError, "zero size", [Image.new("RGB", (0, 0)), "hi"]),
        (ImageError, "zero size", [np.zeros((0, 8, 3), np.uint8), "hi"]),
        (FileNotFoundError, "missing.png", [tmp_path / "missing.png", "hi"]),
        (FileNotFoundError, "missing.png", [{"type": "image_url", "image_url": {"url": f"file://{tmp_path}/missing.png"}}]),
        (ImageError, "data URL", [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]),
        (ValueError, "empty.mp4", [{"type": "video", "video": str(empty_video)}, "hi"]),
        (ValueError, "garbage.avi", [{"type": "video", "video": str(garbage_video)}, "hi"]),
        (FileNotFoundError, "nothere.mp4", [{"type": "video", "video": str(tmp_path / "nothere.mp4")}, "hi"]),
        (ContextLimitError, "n_ctx", [images["a"], long_text]),
    ]
    for exc, words, content in cases:
        with pytest.raises(exc, match=words):
            model.chat([{"role": "user", "content": content}], **GREEDY)
        assert issubclass(exc, (ValueError, FileNotFoundError))
        # still usable: the valid chat gives the fresh object's answer
        model.chat(msgs, **GREEDY)
        assert model.last_stats.tokens == expected, words
    # A context overflow in the middle of a conversation the cache already holds part of.
    with pytest.raises(ContextLimitError):
        model.chat(msgs + [{"role": "assistant", "content": "ok"}, {"role": "user", "content": long_text}], **GREEDY)
    model.chat(msgs, **GREEDY)
    assert model.last_stats.tokens == expected
    # Streaming: bad media fail at the call, a context overflow at the first piece; then usable.
    with pytest.raises(ImageError):
        model.chat([{"role": "user", "content": [b"nope", "hi"]}], stream=True)
    gen = model.chat([{"role": "user", "content": long_text}], stream=True)
    with pytest.raises(ContextLimitError):
        next(gen)
    model.chat(msgs, **GREEDY)
    assert model.last_stats.tokens == expected


def test_openai_parts_same_as_pil(model, valid, tmp_path, images):
    msgs, expected = valid
    img = images["a"]
    path = tmp_path / "a.png"
    img.save(path)
    url = "data:image/png;base64," + base64.b64encode(_png_bytes(img)).decode()
    variants = [
        {"type": "image_url", "image_url": {"url": url}},
        {"type": "image_url", "image_url": {"url": path.resolve().as_uri()}},
        {"type": "image_url", "image_url": str(path)},
        {"type": "image", "image": img},
        path,
        np.asarray(img),
    ]
    text = msgs[0]["content"][1]
    for v in variants:
        model.reset()
        model.chat([{"role": "user", "content": [v, {"type": "text", "text": text}]}], **GREEDY)
        assert model.last_stats.tokens == expected, repr(v)[:80]


def test_streaming_equals_full_answer(model, valid):
    msgs, expected = valid
    full = model.chat(msgs, **GREEDY)
    pieces = list(model.chat(msgs, stream=True, **GREEDY))
    assert len(pieces) > 1 and "".join(pieces) == full
    assert model.last_stats.tokens == expected
    # Sampling with a seed: the same stream and full answer.
    kw = dict(sampling=True, seed=1234, max_new_tokens=N_NEW)
    full = model.chat(msgs, **kw)
    pieces = list(model.chat(msgs, stream=True, **kw))
    assert "".join(pieces) == full
    # Stop strings cut the answer (and are not part of it), streamed or not.
    stop = [full[3:5]] if len(full) > 5 else ["\x00"]
    a = model.chat(msgs, stop=stop, **kw)
    b = "".join(model.chat(msgs, stream=True, stop=stop, **kw))
    assert a == b and stop[0] not in a and full.startswith(a)
