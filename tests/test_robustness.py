"""Bad files, odd inputs and state edge cases of the Python API, found in review.

* GGUF weights of a type the engine cannot use (q2_K, q3_K, q8_1, IQ types) fail at LOAD time
  with a ValueError naming the file, the tensor and the type: for the language model and the
  mmproj, for matrices, vectors and the resampler query.
* Wrong architecture either way, a vocabulary without MiniCPM-V's special tokens, a tokenizer
  whose size differs from token_embd's rows: clear errors naming the file.
* KV-prefix reuse: same text with a different image, another max_slice_nums or use_image_id, a
  generation abandoned half way, a cache reset behind the object's back: each answer equals a
  fresh object's answer to the same call (fresh objects are checked against transformers in
  test_chat.py; here the reference is "no reuse", so any reuse bug shows as a difference).
* Two sessions sharing one thread pool (LLM.fork) evaluated from two Python threads at once give
  the same logits as one after the other.
* Images: the EXIF orientation is not applied, alpha is dropped, 16-bit PNGs and grayscale arrays
  convert as Pillow's .convert("RGB") does (what the reference feeds its processor), and a
  decompression bomb or a truncated lazily-opened image is an ImageError.

The model is a small random-weight MiniCPM-V 2.6 (synthetic vocabulary, hidden 256 so that the
256-element K-quant blocks fit) built by the package's own generator and converter in float32.
"""
import io
import struct
import threading
import zlib

import numpy as np
import pytest
from PIL import Image

from minicpmv_edge import _core
from minicpmv_edge.api import MiniCPMV
from minicpmv_edge.media import ImageError, load_image

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as QT  # noqa: E402
from gguf import GGUFReader, GGUFValueType as VT, GGUFWriter  # noqa: E402

GREEDY = dict(sampling=False, num_beams=1, repetition_penalty=1.0, max_new_tokens=8)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from minicpmv_edge.convert.converter import convert_checkpoint
    from minicpmv_edge.convert.random_checkpoint import make_random_checkpoint

    out = tmp_path_factory.mktemp("robust")
    make_random_checkpoint(out / "hf", vocab="synthetic", hidden=256, layers=1, heads=2, kv_heads=1, ffn=256,
                           vision_hidden=32, vision_layers=1, vision_heads=2, vision_ffn=64, query_num=8, seed=0)
    paths = convert_checkpoint(out / "hf", out / "gguf", quant="f32", mmproj_type="f32", progress=False)
    llm = str([p for p in paths if "mmproj" not in p.name][0])
    mm = str([p for p in paths if "mmproj" in p.name][0])
    return llm, mm


def new_model(tiny, **kw):
    return MiniCPMV(tiny[0], tiny[1], n_threads=2, n_ctx=1024, kv_type="f32", **kw)


@pytest.fixture(scope="module")
def model(tiny):
    return new_model(tiny)


def retype(src, dst, name, type_id):
    """Copy of a GGUF file with tensor `name`'s type id changed in its tensor info. The tensor
    then needs fewer bytes than are stored (every type tried is smaller than f32), so the file is
    still well-formed: only the loader can object."""
    b = bytearray(open(src, "rb").read())
    key = struct.pack("<Q", len(name)) + name.encode()
    at = b.find(key)
    assert at > 0 and b.find(key, at + 1) < 0, name
    p = at + len(key)
    n_dims = struct.unpack_from("<I", b, p)[0]
    struct.pack_into("<I", b, p + 4 + 8 * n_dims, int(type_id))
    open(dst, "wb").write(bytes(b))
    return str(dst)


def rewrite(src, dst, edit):
    """Copy of a GGUF file through gguf-py with the metadata edited by edit(dict key -> (value, types))."""
    r = GGUFReader(src)
    kv = {k: (f.contents(), f.types) for k, f in r.fields.items() if not k.startswith("GGUF.")}
    edit(kv)
    w = GGUFWriter(str(dst), kv.pop("general.architecture")[0])
    for k, (v, types) in kv.items():
        w.add_key_value(k, v, types[0], sub_type=types[-1] if types[0] == VT.ARRAY else None)
    for t in r.tensors:
        w.add_tensor(t.name, np.array(t.data), raw_shape=[int(x) for x in reversed(t.shape)], raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(dst)


# ---------------------------------------------------------------------------------------------
# Files

LLM_BAD_TYPES = [
    ("blk.0.attn_q.weight", QT.Q2_K, "q2_K"),
    ("blk.0.ffn_down.weight", QT.IQ2_XXS, "iq2_xxs"),
    ("blk.0.ffn_up.weight", QT.IQ4_NL, "iq4_nl"),
    ("token_embd.weight", QT.Q3_K, "q3_K"),
    ("output.weight", QT.Q8_1, "q8_1"),
    ("blk.0.attn_norm.weight", QT.Q8_0, "q8_0"),  # a norm weight must be f32/f16/bf16
]
MMPROJ_BAD_TYPES = [
    ("resampler.attn.q.weight", QT.Q2_K, "q2_K"),
    ("v.blk.0.attn_q.weight", QT.Q8_1, "q8_1"),
    ("v.blk.0.ffn_up.weight", QT.IQ4_NL, "iq4_nl"),
    ("resampler.ln_q.weight", QT.Q2_K, "q2_K"),
    ("v.blk.0.ln1.weight", QT.Q8_1, "q8_1"),
    ("resampler.query", QT.Q2_K, "q2_K"),
]


@pytest.mark.parametrize("name,qt,type_name", LLM_BAD_TYPES)
def test_llm_weight_of_unusable_type_fails_at_load(tiny, tmp_path, name, qt, type_name):
    bad = retype(tiny[0], tmp_path / "bad.gguf", name, qt)
    with pytest.raises(ValueError) as e:
        MiniCPMV(bad, n_threads=1, n_ctx=64)
    msg = str(e.value)
    assert bad in msg and f"'{name}'" in msg and type_name in msg, msg


@pytest.mark.parametrize("name,qt,type_name", MMPROJ_BAD_TYPES)
def test_mmproj_weight_of_unusable_type_fails_at_load(tiny, tmp_path, name, qt, type_name):
    bad = retype(tiny[1], tmp_path / "mmproj-bad.gguf", name, qt)
    with pytest.raises(ValueError) as e:
        MiniCPMV(tiny[0], bad, n_threads=1, n_ctx=64)
    msg = str(e.value)
    assert bad in msg and f"'{name}'" in msg and type_name in msg, msg


def test_wrong_architecture_either_way(tiny):
    llm, mm = tiny
    with pytest.raises(ValueError, match="architecture.*clip"):
        MiniCPMV(mm, n_threads=1, n_ctx=64)
    with pytest.raises(ValueError, match="'qwen2', expected 'clip'"):
        MiniCPMV(llm, llm, n_threads=1, n_ctx=64)


def test_vocabulary_without_image_tokens(tiny, tmp_path):
    def rename(kv):
        toks, types = kv["tokenizer.ggml.tokens"]
        toks = list(toks)
        toks[toks.index("<image>")] = "<imagx>"
        kv["tokenizer.ggml.tokens"] = (toks, types)

    bad = rewrite(tiny[0], tmp_path / "noimage.gguf", rename)
    with pytest.raises(ValueError) as e:
        MiniCPMV(bad, tiny[1], n_threads=1, n_ctx=64)
    assert bad in str(e.value) and "'<image>'" in str(e.value)
    # Text-only (no mmproj), the image markers are not needed: it loads and generates.
    m = MiniCPMV(bad, n_threads=1, n_ctx=64)
    assert isinstance(m.generate("hello", max_new_tokens=2, greedy=True), str)


def test_corrupt_block_count_is_a_format_error(tiny, tmp_path):
    def huge(kv):
        kv["qwen2.block_count"] = (1 << 40, [VT.UINT64])

    bad = rewrite(tiny[0], tmp_path / "layers.gguf", huge)
    with pytest.raises(ValueError, match="block_count 1099511627776 is more than the"):  # not a MemoryError
        MiniCPMV(bad, n_threads=1, n_ctx=64)


def test_corrupt_vision_block_count_is_a_format_error(tiny, tmp_path):
    def huge(kv):
        kv["clip.vision.block_count"] = (1 << 40, [VT.UINT64])

    bad = rewrite(tiny[1], tmp_path / "mmproj-layers.gguf", huge)
    with pytest.raises(ValueError, match="block_count 1099511627776 is more than"):  # not a MemoryError
        _core.VisionEncoder(bad, n_threads=1)


@pytest.mark.parametrize("name", ["resampler.query", "v.blk.0.ln1.weight", "resampler.ln_q.bias"])
def test_vision_encoder_names_unreadable_vector_types(tiny, tmp_path, name):
    # The C++ loader itself (not only the Python API's check) names the tensor and its type.
    bad = retype(tiny[1], tmp_path / "mmproj-q2k.gguf", name, QT.Q2_K)
    with pytest.raises(ValueError) as e:
        _core.VisionEncoder(bad, n_threads=1)
    assert f"'{name}'" in str(e.value) and "q2_K" in str(e.value), str(e.value)


@pytest.mark.parametrize("delta", [-5, 5])
def test_tokenizer_size_differs_from_n_vocab(tiny, tmp_path, delta):
    def resize(kv):
        for key, extra in (("tokenizer.ggml.tokens", [f"[X{i}]" for i in range(max(delta, 0))]),
                           ("tokenizer.ggml.token_type", [1] * max(delta, 0))):
            v, t = kv[key]
            v = list(v)
            kv[key] = (v[:delta] if delta < 0 else v + extra, t)

    bad = rewrite(tiny[0], tmp_path / "vocab.gguf", resize)
    n_rows = [t for t in _core.GGUFFile(tiny[0]).tensors if t["name"] == "token_embd.weight"][0]["shape"][1]
    with pytest.raises(ValueError) as e:
        MiniCPMV(bad, n_threads=1, n_ctx=64)
    msg = str(e.value)
    assert bad in msg and f"{n_rows + delta} tokens" in msg and f"{n_rows} rows" in msg, msg


# ---------------------------------------------------------------------------------------------
# KV-prefix reuse


def picture(w, h, seed):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def fresh_answer(tiny, messages, **opts):
    m = new_model(tiny)
    answer = m.chat(messages, **GREEDY, **opts)
    return answer, m.last_stats.tokens


def test_same_text_different_image_at_same_position(tiny, model):
    a, b = picture(96, 80, 1), picture(96, 80, 2)
    q = "What is this?"
    model.reset()
    model.chat([{"role": "user", "content": [a, q]}], **GREEDY)
    model.chat([{"role": "user", "content": [b, q]}], **GREEDY)
    _, expected = fresh_answer(tiny, [{"role": "user", "content": [b, q]}])
    assert model.last_stats.tokens == expected
    assert model.last_stats.n_prefill < model.last_stats.n_prompt  # the text before the image was reused
    assert model.last_stats.n_encoded == 1


def test_max_slice_nums_and_use_image_id_changes(tiny, model):
    img = picture(900, 300, 3)  # sliced when max_slice_nums allows it
    msgs = [{"role": "user", "content": [img, "Describe."]}]
    model.reset()
    for opts in (dict(), dict(max_slice_nums=1), dict(max_slice_nums=4), dict(use_image_id=False),
                 dict(max_slice_nums=4, use_image_id=False), dict()):
        model.chat(msgs, **GREEDY, **opts)
        got = (model.last_stats.tokens, model.last_stats.n_slices)
        _, expected = fresh_answer(tiny, msgs, **opts)
        fresh = new_model(tiny)
        fresh.chat(msgs, **GREEDY, **opts)
        assert got == (expected, fresh.last_stats.n_slices), opts


def test_abandoned_stream_and_reset_behind_the_back(tiny, model):
    img = picture(120, 90, 4)
    msgs = [{"role": "user", "content": [img, "Say something long."]}]
    _, expected = fresh_answer(tiny, msgs)
    # a stream abandoned after one piece leaves the cache consistent with what the object believes
    model.reset()
    gen = model.chat(msgs, stream=True, sampling=False, num_beams=1, repetition_penalty=1.0, max_new_tokens=8)
    next(gen)
    gen.close()
    model.chat(msgs, **GREEDY)
    assert model.last_stats.tokens == expected
    # the public `llm` reset directly (not through MiniCPMV.reset): the cache holds nothing now
    model.llm.reset()
    model.chat(msgs, **GREEDY)
    assert model.last_stats.tokens == expected
    model.llm.truncate(5)
    model.chat(msgs, **GREEDY)
    assert model.last_stats.tokens == expected


def test_interleaved_streams(tiny, model):
    """A stream left half-consumed while another call runs must not append its tokens to the
    other call's cache (that would silently continue from the wrong context)."""
    a, b = picture(100, 70, 10), picture(70, 100, 11)
    ma = [{"role": "user", "content": [a, "First question?"]}]
    mb = [{"role": "user", "content": [b, "Second question?"]}]
    _, expected_b = fresh_answer(tiny, mb)
    kw = dict(stream=True, sampling=False, num_beams=1, repetition_penalty=1.0, max_new_tokens=8)
    model.reset()
    g1 = model.chat(ma, **kw)
    next(g1)
    "".join(model.chat(mb, **kw))
    assert model.last_stats.tokens == expected_b
    with pytest.raises(RuntimeError, match="took over its KV cache"):
        list(g1)
    assert model.last_stats.tokens == expected_b  # the superseded stream did not overwrite the stats
    model.chat(mb, **GREEDY)
    assert model.last_stats.tokens == expected_b


def test_forked_sessions_from_two_threads(model):
    """Two sessions over one thread pool evaluated at the same time (GIL released): the pool
    serializes them; each gets the logits it gets alone."""
    llm = model.llm
    llm.reset()
    rng = np.random.default_rng(5)
    toks = [rng.integers(0, llm.n_vocab, 40, dtype=np.int32) for _ in range(2)]
    sessions = [llm, llm.fork()]
    alone = []
    for s, t in zip(sessions, toks):
        s.reset()
        alone.append(np.stack([s.eval(t[i:i + 1]) for i in range(len(t))]))
    out = [None, None]

    def run(k):
        s = sessions[k]
        s.reset()
        out[k] = np.stack([s.eval(toks[k][i:i + 1]) for i in range(len(toks[k]))])

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(2):
        # same session, same inputs, same kernels: bit-identical unless the jobs got mixed
        assert np.array_equal(out[k], alone[k]), k
    model.reset()


# ---------------------------------------------------------------------------------------------
# Images


def _save(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def pillow_rgb(data):
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_exif_orientation_is_not_applied(tmp_path):
    img = picture(64, 32, 6)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    data = _save(img, "JPEG", exif=exif.tobytes(), quality=95)
    path = tmp_path / "rotated.jpg"
    path.write_bytes(data)
    for src in (path, data, Image.open(path)):
        arr = load_image(src)
        assert arr.shape == (32, 64, 3)  # as stored, not rotated
        assert np.array_equal(arr, pillow_rgb(data))


def test_alpha_sixteen_bit_and_grayscale_as_pillow():
    rng = np.random.default_rng(7)
    rgba = rng.integers(0, 256, (20, 30, 4), dtype=np.uint8)
    rgba[..., 3] = 0  # fully transparent: the colours must survive (alpha dropped, not composited)
    png = _save(Image.fromarray(rgba, "RGBA"), "PNG")
    assert np.array_equal(load_image(png), pillow_rgb(png))
    assert np.array_equal(load_image(png), rgba[..., :3])
    assert np.array_equal(load_image(rgba), rgba[..., :3])
    la = _save(Image.fromarray(rgba[..., :2].copy(), "LA"), "PNG")
    assert np.array_equal(load_image(la), pillow_rgb(la))

    g16 = (rng.integers(0, 65536, (20, 30))).astype(np.uint16)
    png16 = _save(Image.fromarray(g16), "PNG")
    assert Image.open(io.BytesIO(png16)).mode.startswith("I")
    assert np.array_equal(load_image(png16), pillow_rgb(png16))

    gray = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    want = np.asarray(Image.fromarray(gray, "L").convert("RGB"))
    assert np.array_equal(load_image(gray), want)
    assert np.array_equal(load_image(gray[:, :, None]), want)
    assert np.array_equal(load_image(gray[:, ::-1]), want[:, ::-1])  # a non-contiguous view
    with pytest.raises(ImageError, match="uint8"):
        load_image(gray.astype(np.float32))
    with pytest.raises(ImageError, match="H x W x 3"):
        load_image(np.zeros((4, 4, 2), np.uint8))


def _png_with_size(w, h):
    """A valid PNG header claiming w x h pixels (the data is tiny: Pillow checks the size first)."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_decompression_bomb_and_truncated_images_are_image_errors(tmp_path):
    side = int((2 * Image.MAX_IMAGE_PIXELS) ** 0.5) + 100
    bomb = _png_with_size(side, side)
    with pytest.raises(Image.DecompressionBombError):  # what Pillow itself does with it
        Image.open(io.BytesIO(bomb))
    with pytest.raises(ImageError, match="too large"):
        load_image(bomb)
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb)
    with pytest.raises(ImageError, match="bomb.png"):
        load_image(path)

    data = _save(picture(64, 64, 8), "PNG")
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="not a readable image"):
        load_image(cut)
    lazy = Image.open(cut)  # a PIL image the caller opened but that cannot be decoded
    with pytest.raises(ImageError, match="not a readable image"):
        load_image(lazy)
