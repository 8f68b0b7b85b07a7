"""Image preprocessing (cpp/vision/, bound as _core.plan_slices / resize_bicubic / slice_image /
normalize / normalize_patches) against independent references:

* slice planning: tests/reference/preprocess_ref.py, a Python implementation of the HF
  MiniCPMVImageProcessor size math written from the spec (section 5), itself checked against the
  spec's worked-example table (section 5.6). Sizes must be equal (integers: no tolerance).
* pixels: Pillow's Image.resize(..., BICUBIC) and Image.crop, which is what the HF processor
  runs. Bit-exact (np.array_equal): the C++ resize re-implements Pillow's fixed-point arithmetic.
* normalisation: numpy float32 in the HF order (bit-exact), numpy float64 (within 1 float32 ulp),
  and the patch layout against torch's conv2d (1e-4: float32 sums in different orders).

Python does image decoding and mode conversion: every PIL mode is converted with .convert("RGB")
before the pixels reach the engine (as the HF processor does); test_pil_modes covers that path.
"""
import sys
from pathlib import Path

import numpy as np
import PIL
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent / "reference"))
import preprocess_ref as ref  # noqa: E402

from minicpmv_edge import _core  # noqa: E402

BICUBIC = Image.Resampling.BICUBIC
# Pillow 13 chooses which 1-D pass runs first (see cpp/vision/resize.h); older Pillow always ran
# the horizontal pass first. Compare against whichever Pillow is installed.
PASS_ORDER = "pillow13" if int(PIL.__version__.split(".")[0]) >= 13 else "horizontal_first"

# Spec section 5.6: input (W, H) -> grid (cols, rows) or None, source, refine, cell.
SPEC_TABLE = [
    ((448, 448), None, (448, 448), None, None),
    ((300, 200), None, (546, 364), None, None),
    ((600, 300), None, (630, 322), None, None),
    ((1000, 600), (2, 1), (574, 350), (812, 490), (406, 490)),
    ((800, 600), (2, 2), (518, 392), (1036, 784), (518, 392)),
    ((1024, 768), (2, 2), (518, 392), (1036, 784), (518, 392)),
    ((1920, 1080), (4, 2), (602, 336), (1680, 952), (420, 476)),
    ((1344, 1344), (3, 3), (448, 448), (1344, 1344), (448, 448)),
    ((3000, 400), (7, 1), (1218, 168), (3234, 434), (462, 434)),
]


def _plan(w, h, **kw):
    d = _core.plan_slices(w, h, **kw)
    return {k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in d.items()}


# ---------------------------------------------------------------------------------------------
# (a) the spec table


@pytest.mark.parametrize("size,grid,source,refine,cell", SPEC_TABLE)
def test_spec_table(size, grid, source, refine, cell):
    expected = dict(grid=grid, source=source, refine=refine, cell=cell)
    assert ref.plan_slices(*size) == expected, "the Python reference disagrees with the spec table"
    assert _plan(*size) == expected


# ---------------------------------------------------------------------------------------------
# (b) slice planning on many sizes


def _sizes():
    rng = np.random.default_rng(1234)
    sizes = set()
    # Tiny and classic sizes.
    for w in (1, 2, 7, 13, 14, 15, 27, 28, 35, 49):
        for h in (1, 3, 7, 14, 21, 35):
            sizes.add((w, h))
    sizes |= {(4000, 3000), (3000, 4000), (8000, 200), (200, 8000), (1, 8000), (8000, 1),
              (448, 448), (449, 448), (448, 449), (200704, 1), (1, 200704), (200705, 1)}
    # Area around k * 448^2 (the slice-count thresholds, incl. exactly on them).
    for k in range(1, 12):
        for w in (448, 512, 640, 1000, 1344, 2000):
            h0 = k * 448 * 448 // w
            for h in (h0 - 1, h0, h0 + 1):
                if h >= 1:
                    sizes.add((w, h))
    # Log-uniform sizes over 1..10000 (all aspect ratios) and 100..5000 (photos).
    for lo, hi, n in ((0, 4, 1500), (2, 3.7, 1500)):
        for w, h in (10 ** rng.uniform(lo, hi, size=(n, 2))).astype(int):
            sizes.add((max(int(w), 1), max(int(h), 1)))
    # Extreme aspect ratios.
    for _ in range(300):
        long_side = int(10 ** rng.uniform(2.5, 4.3))
        short = int(rng.integers(1, 64))
        sizes.add((long_side, short) if rng.random() < 0.5 else (short, long_side))
    return sorted(sizes)


SIZES = _sizes()
OPTIONS = [
    {},
    {"max_slice_nums": 1},
    {"max_slice_nums": 2},
    {"max_slice_nums": 4},
    {"max_slice_nums": 16},
    {"never_split": True},
    {"scale_resolution": 224, "patch_size": 14},
    {"scale_resolution": 336, "patch_size": 16, "max_slice_nums": 6},
]


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_plan_slices_many_sizes(opts):
    assert len(SIZES) >= 2000
    ties = []
    mismatches = []
    n_sliced = n_upscaled = 0
    for w, h in SIZES:
        expected = ref.plan_slices(w, h, ties=ties, **opts)
        got = _plan(w, h, **opts)
        if got != expected:
            mismatches.append(((w, h), got, expected))
        if expected["grid"] is None:
            n_upscaled += w * h < expected["source"][0] * expected["source"][1]
        else:
            n_sliced += 1
    assert not mismatches, f"{len(mismatches)} sizes differ, first: {mismatches[:3]}"
    # The sweep must exercise both branches and Python's half-to-even rounding.
    assert n_upscaled >= 100
    if opts.get("max_slice_nums", 9) > 1 and not opts.get("never_split"):
        assert n_sliced >= 500
    assert len(ties) >= 50, f"only {len(ties)} .5 ties in ensure_divide"


def test_rounding_ties_are_half_even():
    # Sizes whose plan goes through an exact .5 in ensure_divide. C's round() (half away from zero)
    # would differ on each of these; the plan must match Python's round().
    found = []
    for w, h in SIZES:
        ties = []
        plan = ref.plan_slices(w, h, ties=ties)
        if ties:
            found.append((w, h))
            assert _plan(w, h) == plan, (w, h, ties)
    assert len(found) >= 100
    # A direct case: 1001 x 1000 -> grid 2x2 refine width ensure_divide(1001, 2) = round(500.5) * 2 = 1000.
    ties = []
    ref.plan_slices(1001, 1000, ties=ties)
    assert (1001, 2) in ties
    assert _plan(1001, 1000) == ref.plan_slices(1001, 1000)


# ---------------------------------------------------------------------------------------------
# (c) pixels: resize and slicing against Pillow


def _image(rng, w, h, kind):
    if kind == "noise":
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    # Smooth gradients with a little noise (photo-like: most values away from the clip range).
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([128 + 100 * np.sin(x / max(w, 1) * 5 + c + y / max(h, 1) * 3) for c in range(3)], -1)
    return np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8)


def _resize_cases():
    rng = np.random.default_rng(7)
    cases = [(1, 1, 1, 5), (1, 1, 7, 1), (1, 9, 5, 3), (9, 1, 1, 1), (13, 7, 448, 238), (2, 2, 1, 1),
             (301, 203, 14, 700), (640, 480, 3, 2), (17, 300, 61, 97), (50, 400, 30, 100)]
    for _ in range(260):
        w, h = (int(v) for v in rng.integers(1, 260, 2))
        mode = rng.integers(0, 4)
        if mode == 0:  # downscale up to 20x
            W, H = max(1, w // int(rng.integers(1, 20))), max(1, h // int(rng.integers(1, 20)))
        elif mode == 1:  # upscale
            W, H = w * int(rng.integers(1, 4)) + int(rng.integers(0, 5)), h * int(rng.integers(1, 4)) + 1
        else:
            W, H = (int(v) for v in rng.integers(1, 260, 2))
        cases.append((w, h, W, H))
    # Pass-order boundary of Pillow 13: height shrinks by exactly / about twice the width shrink.
    for _ in range(40):
        w, h = (int(v) for v in rng.integers(10, 120, 2))
        d = int(rng.integers(1, w // 2 + 1))
        for extra in (-1, 0, 1):
            H = h - 2 * d + extra
            if H >= 1:
                cases.append((w, h + 0, w - d, H))
    return cases


RESIZE_CASES = _resize_cases()


def test_resize_bit_exact_with_pillow():
    rng = np.random.default_rng(11)
    bad = []
    for i, (w, h, W, H) in enumerate(RESIZE_CASES):
        a = _image(rng, w, h, "noise" if i % 2 else "smooth")
        expected = np.asarray(Image.fromarray(a).resize((W, H), BICUBIC))
        got = _core.resize_bicubic(a, W, H, pass_order=PASS_ORDER)
        assert got.dtype == np.uint8 and got.shape == (H, W, 3)
        if not np.array_equal(got, expected):
            bad.append(((w, h), (W, H), int(np.abs(got.astype(int) - expected).max())))
    assert len(RESIZE_CASES) >= 300
    assert not bad, f"{len(bad)} of {len(RESIZE_CASES)} resizes differ from Pillow, first: {bad[:5]}"


def test_resize_horizontal_first_matches_two_pillow_passes():
    # Pillow <= 12 always resized horizontally first; one-axis Pillow resizes reproduce that order
    # exactly (each is a single pass), whatever Pillow version is installed.
    rng = np.random.default_rng(12)
    for i, (w, h, W, H) in enumerate(RESIZE_CASES[::3]):
        a = _image(rng, w, h, "noise" if i % 2 else "smooth")
        im = Image.fromarray(a)
        if W != w and H != h:
            expected = np.asarray(im.resize((W, h), BICUBIC).resize((W, H), BICUBIC))
        else:
            expected = np.asarray(im.resize((W, H), BICUBIC))
        assert np.array_equal(_core.resize_bicubic(a, W, H, pass_order="horizontal_first"), expected), (w, h, W, H)


def test_resize_large_and_strided():
    rng = np.random.default_rng(13)
    a = _image(rng, 4000, 3000, "smooth")
    for W, H in ((602, 336), (1680, 952)):
        expected = np.asarray(Image.fromarray(a).resize((W, H), BICUBIC))
        assert np.array_equal(_core.resize_bicubic(a, W, H, pass_order=PASS_ORDER), expected)
    b = _image(rng, 8000, 200, "noise")
    expected = np.asarray(Image.fromarray(b).resize((3234, 70), BICUBIC))
    assert np.array_equal(_core.resize_bicubic(b, 3234, 70, pass_order=PASS_ORDER), expected)
    # Non-contiguous input (a view) is read correctly.
    view = a[::7, ::5]
    expected = np.asarray(Image.fromarray(np.ascontiguousarray(view)).resize((100, 77), BICUBIC))
    assert np.array_equal(_core.resize_bicubic(view, 100, 77, pass_order=PASS_ORDER), expected)


SLICE_SIZES = [(1, 1), (13, 7), (300, 200), (448, 448), (449, 449), (600, 300), (1000, 600), (1001, 1000),
               (800, 600), (1920, 1080), (1344, 1344), (3000, 400), (400, 3000), (8000, 200), (2000, 60)]


@pytest.mark.parametrize("size", SLICE_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_slice_image_bit_exact(size):
    rng = np.random.default_rng(size[0] * 7919 + size[1])
    a = _image(rng, *size, "smooth" if size[0] * size[1] > 100000 else "noise")
    grid, slices = ref.slice_image(Image.fromarray(a))
    got = _core.slice_image(a, pass_order=PASS_ORDER)
    assert (tuple(got["grid"]) if got["grid"] else None) == grid
    assert len(got["slices"]) == len(slices)
    for i, (g, r) in enumerate(zip(got["slices"], slices)):
        r = np.asarray(r)
        assert g.shape == r.shape, (i, g.shape, r.shape)
        assert np.array_equal(g, r), f"slice {i} differs"
    assert [tuple(s) for s in got["sizes"]] == [s.size for s in slices]
    # tgt_size = (rows, cols) of 14x14 patches per slice (spec 5.4).
    assert [tuple(t) for t in got["tgt_sizes"]] == [(s.size[1] // 14, s.size[0] // 14) for s in slices]


def test_slice_image_options():
    rng = np.random.default_rng(5)
    a = _image(rng, 1500, 700, "smooth")
    for kw in ({"max_slice_nums": 2}, {"never_split": True}, {"max_slice_nums": 1}):
        grid, slices = ref.slice_image(Image.fromarray(a), **kw)
        got = _core.slice_image(a, pass_order=PASS_ORDER, **kw)
        assert (tuple(got["grid"]) if got["grid"] else None) == grid
        assert all(np.array_equal(g, np.asarray(r)) for g, r in zip(got["slices"], slices))
        assert len(got["slices"]) == len(slices)


# ---------------------------------------------------------------------------------------------
# (d) normalisation


def test_normalize_matches_numpy():
    rng = np.random.default_rng(3)
    a = _image(rng, 56, 42, "noise")
    a[0, 0] = 0
    a[0, 1] = 255
    got = _core.normalize(a)
    assert got.dtype == np.float32 and got.shape == (3, 42, 56)
    # Same float32 steps as the HF processor: bit-exact.
    assert np.array_equal(got, ref.normalize(a))
    # Against float64 math: within one float32 ulp of values in [-1, 1].
    exact = (a.astype(np.float64) / 255.0 - 0.5) / 0.5
    assert np.abs(got.astype(np.float64) - exact.transpose(2, 0, 1)).max() <= 2 ** -23
    assert got.min() == -1.0 and got.max() == 1.0


def test_normalize_patches_layout_matches_conv():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    a = _image(rng, 70, 42, "noise")  # 3 x 5 patches
    p = _core.normalize_patches(a)
    assert p.dtype == np.float32 and p.shape == (15, 588)
    assert np.array_equal(p, ref.patches(ref.normalize(a)))
    # The patch embedding conv (kernel = stride = 14) equals patches @ W.view(E, 588).T, tokens
    # row-major over the patch grid: this is the layout the SigLIP helper relies on.
    weight = torch.from_numpy(rng.standard_normal((8, 3, 14, 14)).astype(np.float32))
    chw = torch.from_numpy(np.ascontiguousarray(_core.normalize(a)))[None]
    conv = torch.nn.functional.conv2d(chw, weight, stride=14)[0]  # [8, 3, 5]
    conv_tokens = conv.flatten(1).T.numpy()  # [15, 8], token = r * 5 + c
    np.testing.assert_allclose(p @ weight.reshape(8, -1).numpy().T, conv_tokens, rtol=1e-4, atol=1e-4)


def test_preprocess_image_end_to_end():
    # Slices from Pillow + crop (reference), normalised and cut into patches by numpy: bit-exact.
    rng = np.random.default_rng(6)
    a = _image(rng, 1000, 600, "smooth")
    grid, slices = ref.slice_image(Image.fromarray(a))
    got = _core.preprocess_image(a, pass_order=PASS_ORDER)
    assert tuple(got["grid"]) == grid == (2, 1)
    assert len(got["patches"]) == len(slices) == 3
    for p, s, t in zip(got["patches"], slices, got["tgt_sizes"]):
        assert tuple(t) == (s.size[1] // 14, s.size[0] // 14)
        assert np.array_equal(p, ref.patches(ref.normalize(np.asarray(s))))


# ---------------------------------------------------------------------------------------------
# (e) other PIL modes: Python converts to RGB first


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "P", "CMYK", "1", "I;16"])
def test_pil_modes(mode):
    rng = np.random.default_rng(9)
    rgb = Image.fromarray(_image(rng, 700, 500, "smooth"))
    if mode == "RGBA":
        img = rgb.copy()
        img.putalpha(Image.fromarray(rng.integers(0, 256, (500, 700), dtype=np.uint8)))
    elif mode == "P":
        img = rgb.quantize(64)
    elif mode == "I;16":
        img = Image.fromarray((np.asarray(rgb.convert("L")).astype(np.uint16) * 257))
        if img.mode != "I;16":
            img = img.convert("I;16")
    else:
        img = rgb.convert(mode)
    converted = img.convert("RGB")  # what the Python layer does before calling the engine
    grid, slices = ref.slice_image(converted)
    got = _core.slice_image(np.asarray(converted), pass_order=PASS_ORDER)
    assert (tuple(got["grid"]) if got["grid"] else None) == grid
    assert all(np.array_equal(g, np.asarray(r)) for g, r in zip(got["slices"], slices))


# ---------------------------------------------------------------------------------------------
# bad input -> ValueError naming the problem


@pytest.mark.parametrize("bad,match", [
    (np.zeros((4, 4, 3), np.float32), "uint8"),
    (np.zeros((4, 4, 3), np.uint16), "uint8"),
    (np.zeros((4, 4), np.uint8), "shape"),
    (np.zeros((4, 4, 4), np.uint8), "shape"),
    (np.zeros((4, 4, 1), np.uint8), "shape"),
    (np.zeros((0, 4, 3), np.uint8), "size"),
    (np.zeros((4, 0, 3), np.uint8), "size"),
    ([[1, 2, 3]], "numpy"),
])
def test_bad_images_raise_value_error(bad, match):
    for call in (lambda: _core.resize_bicubic(bad, 4, 4), lambda: _core.slice_image(bad),
                 lambda: _core.normalize(bad), lambda: _core.normalize_patches(bad)):
        with pytest.raises(ValueError, match=match):
            call()


def test_bad_arguments_raise_value_error():
    a = np.zeros((28, 28, 3), np.uint8)
    with pytest.raises(ValueError, match="size"):
        _core.resize_bicubic(a, 0, 5)
    with pytest.raises(ValueError, match="size"):
        _core.resize_bicubic(a, 5, -1)
    with pytest.raises(ValueError, match="pass_order"):
        _core.resize_bicubic(a, 5, 5, pass_order="bogus")
    with pytest.raises(ValueError, match="patch_size"):
        _core.normalize_patches(np.zeros((20, 28, 3), np.uint8))
    with pytest.raises(ValueError, match="max_slice_nums"):
        _core.plan_slices(100, 100, max_slice_nums=0)
    with pytest.raises(ValueError, match="size"):
        _core.plan_slices(0, 100)
    with pytest.raises(ValueError, match="max_slice_nums"):
        _core.slice_image(a, max_slice_nums=0)
