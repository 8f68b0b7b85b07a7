"""Block formats (cpp/quant): dequantization of every supported type and quantization, against
gguf-py (gguf.quants) and an independent numpy port of llama.cpp's K-quant reference algorithms.

Tolerances: dequantization and the gguf-py-supported quantizers must be bit/byte exact (same f32
operations in the same order, no FMA). K-quants (which gguf-py cannot write) must be byte-exact
with the numpy port below (written from the algorithm, f32 numpy operations in the reference's
order), and their reconstruction error must sit where the format's bit width puts it (see
test_k_quant_error_bounds)."""
import warnings

import numpy as np
import pytest
from gguf import GGMLQuantizationType as GT
from gguf.quants import dequantize as gg_dequantize
from gguf.quants import quantize as gg_quantize

from minicpmv_edge import _core

F32 = np.float32
ALL_DEQUANT = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_K", "q5_K", "q6_K"]
GGUF_QUANTIZABLE = ["f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1"]
GT_OF = {"f32": GT.F32, "f16": GT.F16, "bf16": GT.BF16, "q8_0": GT.Q8_0, "q4_0": GT.Q4_0,
         "q4_1": GT.Q4_1, "q5_0": GT.Q5_0, "q5_1": GT.Q5_1, "q4_K": GT.Q4_K, "q5_K": GT.Q5_K,
         "q6_K": GT.Q6_K}
# Byte offsets of the f16 scale fields in each block (quant/blocks.h).
HALF_FIELDS = {"q8_0": [0], "q4_0": [0], "q4_1": [0, 2], "q5_0": [0], "q5_1": [0, 2],
               "q4_K": [0, 2], "q5_K": [0, 2], "q6_K": [208]}


def finite_halfs(rng, n):
    h = rng.integers(0, 1 << 16, size=n, dtype=np.uint32).astype(np.uint16)
    inf_nan = (h & 0x7C00) == 0x7C00
    h[inf_nan] ^= 0x4000  # clear the exponent's top bit: any finite half, subnormals included
    return h


def random_blocks(rng, type_name, n_blocks):
    info = _core.type_info(type_name)
    if type_name == "f32":
        v = rng.integers(0, 1 << 32, size=n_blocks, dtype=np.uint64).astype(np.uint32)
        v[(v & 0x7F800000) == 0x7F800000] ^= 0x40000000
        return v.view(np.uint8)
    if type_name == "f16":
        return finite_halfs(rng, n_blocks).view(np.uint8)
    if type_name == "bf16":
        v = rng.integers(0, 1 << 16, size=n_blocks, dtype=np.uint32).astype(np.uint16)
        v[(v & 0x7F80) == 0x7F80] ^= 0x4000
        return v.view(np.uint8)
    raw = rng.integers(0, 256, size=(n_blocks, info["type_size"]), dtype=np.uint8)
    for off in HALF_FIELDS[type_name]:
        raw[:, off:off + 2] = finite_halfs(rng, n_blocks).view(np.uint8).reshape(n_blocks, 2)
    return raw.reshape(-1)


def bits(a):
    return np.ascontiguousarray(a, dtype=F32).view(np.uint32)


def gguf_quant_bytes(type_name, x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy warns on the degenerate (overflowing) blocks
        q = gg_quantize(x, GT_OF[type_name])
    return np.ascontiguousarray(q).view(np.uint8).reshape(x.shape[0], -1)


# ---------------------------------------------------------------- dequantization


@pytest.mark.parametrize("type_name", ALL_DEQUANT)
def test_dequantize_matches_gguf_py_bit_exact(type_name):
    rng = np.random.default_rng(1234)
    info = _core.type_info(type_name)
    n_blocks = 2048 if info["block_size"] == 1 else 301
    data = random_blocks(rng, type_name, n_blocks)
    n = n_blocks * info["block_size"]
    ours = _core.dequantize(type_name, data, n)
    ref = gg_dequantize(data.reshape(1, -1), GT_OF[type_name]).reshape(-1)
    assert ours.dtype == F32 and ours.shape == (n,)
    assert np.array_equal(bits(ours), bits(ref)), type_name  # bit for bit, signed zeros included
    assert np.array_equal(ours, _core.dequantize(type_name.upper(), bytes(data), n))


def test_dequantize_rejects_bad_input():
    data = np.zeros(18 * 2, np.uint8)
    with pytest.raises(ValueError, match="multiple of the block size"):
        _core.dequantize("q4_0", data, 48)
    with pytest.raises(ValueError, match="bytes"):
        _core.dequantize("q4_0", data, 32)
    with pytest.raises(ValueError, match="unknown tensor type"):
        _core.dequantize("q4_7", data, 64)
    with pytest.raises(ValueError, match="not supported"):
        _core.dequantize("q2_K", np.zeros(84, np.uint8), 256)
    with pytest.raises(ValueError, match="contiguous"):
        _core.dequantize("q4_0", np.zeros(72, np.uint8)[::2], 64)


# ---------------------------------------------------------------- gguf-py quantizers


def awkward_rows(rng, cols):
    """Rows that exercise every branch of the legacy quantizers (cols: an odd number of blocks)."""
    rows = [
        rng.standard_normal(cols),
        np.zeros(cols),                                   # d = 0
        rng.standard_normal(cols) * 3e4,                  # scales near the f16 limit
        rng.standard_normal(cols) * 1e6,                  # f16 scale overflows to inf
        rng.standard_normal(cols) * 1e-6,                 # f16 subnormal scales
        rng.standard_normal(cols) * 1e-30,                # scale underflows f16
        rng.standard_normal(cols) * 1e-39,                # f32 subnormal input, 1 / d overflows
        np.full(cols, 0.75),                              # constant: max == min
        -np.abs(rng.standard_normal(cols)),               # one-signed
        np.abs(rng.standard_normal(cols)) + 5,            # all positive, min far from 0
        (rng.integers(-127, 128, cols) + 0.5 * rng.integers(0, 2, cols)),  # rounding ties
        np.where(rng.random(cols) < 0.05, 50.0, 1.0) * rng.standard_normal(cols),  # outliers
    ]
    ties = np.tile(np.arange(-8, 8) + 0.5, cols // 16)[:cols]  # exact .5 after scaling for q4_0
    ties[::32] = -8.0
    rows.append(ties)
    return np.stack(rows).astype(F32)


@pytest.mark.parametrize("type_name", GGUF_QUANTIZABLE)
def test_quantize_matches_gguf_py_byte_exact(type_name):
    rng = np.random.default_rng(7)
    cols = 32 * 13  # odd number of blocks
    x = np.concatenate([awkward_rows(rng, cols), rng.standard_normal((40, cols)).astype(F32)])
    ours = _core.quantize(type_name, x)
    ref = gguf_quant_bytes(type_name, x)
    assert ours.shape == ref.shape and ours.dtype == np.uint8
    bad = np.nonzero((ours != ref).any(axis=1))[0]
    assert bad.size == 0, f"{type_name}: rows {bad.tolist()} differ from gguf-py"


def test_f16_bf16_conversion_all_patterns():
    # Random f32 bit patterns (all exponents: overflow, subnormal results, ties) vs numpy's
    # astype(float16) (IEEE round-to-nearest-even) and gguf-py's bf16 rounding.
    rng = np.random.default_rng(3)
    v = rng.integers(0, 1 << 32, size=1 << 18, dtype=np.uint64).astype(np.uint32)
    v = v[(v & 0x7FFFFFFF) <= 0x7F800000]  # NaN payloads: checked separately below
    halfway = (np.arange(0x3800, 0x3900, dtype=np.uint32) << 13) | 0x1000  # f16 ties
    sub = np.arange(0x33000000, 0x33800000, 0x1000, dtype=np.uint32)  # around 2^-25 .. 2^-24
    x = np.concatenate([v, halfway, sub]).view(F32)
    cols = x.size - x.size % 64
    x = x[:cols].reshape(64, -1)
    with np.errstate(over="ignore"):
        ref16 = x.astype(np.float16)
    assert np.array_equal(_core.quantize("f16", x), ref16.view(np.uint8))
    assert np.array_equal(_core.quantize("bf16", x), gguf_quant_bytes("bf16", x))
    nan = np.array([[np.nan, -np.nan, np.inf, -np.inf]], F32)
    back = _core.dequantize("f16", _core.quantize("f16", nan), 4)
    assert np.isnan(back[:2]).all() and np.array_equal(back[2:], nan[0, 2:])
    back = _core.dequantize("bf16", _core.quantize("bf16", nan), 4)
    assert np.isnan(back[:2]).all() and np.array_equal(back[2:], nan[0, 2:])


def test_quantize_threads_match_single_thread():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((37, 256 * 3)).astype(F32)
    for t in ["q8_0", "q4_0", "q4_K", "q5_K", "q6_K", "f16"]:
        one = _core.quantize(t, x, n_threads=1)
        assert np.array_equal(one, _core.quantize(t, x, n_threads=3)), t
        assert np.array_equal(one, _core.quantize(t, x)), t
    one_row = rng.standard_normal((1, 256 * 200)).astype(F32)  # a single row split across threads
    assert np.array_equal(_core.quantize("q4_K", one_row, n_threads=1),
                          _core.quantize("q4_K", one_row, n_threads=4))


def test_quantize_rejects_bad_input():
    x = np.zeros((2, 64), F32)
    with pytest.raises(ValueError, match="multiple of the block size"):
        _core.quantize("q4_K", x)
    with pytest.raises(ValueError, match="2-D"):
        _core.quantize("q8_0", np.zeros(64, F32))
    with pytest.raises(ValueError, match="cannot write"):
        _core.quantize("q8_1", x)
    with pytest.raises(ValueError, match="unknown tensor type"):
        _core.quantize("q9_0", x)
    y = np.zeros((3, 256), F32)
    y[2, 17] = np.nan
    for t in ["q8_0", "q4_0", "q4_K", "q6_K"]:
        with pytest.raises(ValueError, match="row 2, column 17"):
            _core.quantize(t, y)
    y[2, 17] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        _core.quantize("q5_K", y)
    assert _core.type_info("Q4_k") == {"name": "q4_K", "block_size": 256, "type_size": 144,
                                       "id": 12, "can_quantize": True, "supported": True}
    # "supported" (the engine can read weights of the type) is what the loaders check at load time:
    # q2_K / q3_K / q8_1 have block layouts in the table but no dequantizer or kernel
    for t in ("q2_K", "q3_K", "q8_1"):
        assert _core.type_info(t)["supported"] is False, t
        with pytest.raises(ValueError, match="not supported"):
            _core.dequantize(t, np.zeros(_core.type_info(t)["type_size"], np.uint8), _core.type_info(t)["block_size"])


# ---------------------------------------------------------------- K-quants: numpy port
# An independent port of llama.cpp's reference K-quantizers (no importance matrix), vectorised
# over blocks. Every arithmetic step is a float32 numpy operation in the reference's order, sums
# are accumulated element by element, and nearest_int is np.rint (round half to even).


def f32(v):
    return np.float32(v)


def rint_int(v):
    """ggml's nearest_int: add 1.5 * 2^23 in f32 and read the low mantissa bits (round half to
    even for |v| < 2^22; degenerate inputs wrap exactly as in the reference)."""
    t = (np.asarray(v, F32) + f32(12582912.0)).astype(F32)
    return (t.view(np.int32) & 0x7FFFFF).astype(np.int64) - 0x400000


def seq_sum(terms):
    acc = terms[:, 0].copy()
    for i in range(1, terms.shape[1]):
        acc = acc + terms[:, i]
    return acc


@np.errstate(all="ignore")
def np_fit_scale_min(x, w, nmax, rmin, rdelta, nstep):
    """make_qkx2_quants (squared error). x, w: (B, n) float32 -> scale (B,), min (B,), L (B, n)."""
    mn = np.where(x.min(axis=1) > 0, f32(0), x.min(axis=1))
    mx = x.max(axis=1)
    sum_w = seq_sum(w)
    sum_x = seq_sum(w * x)
    iscale = f32(nmax) / (mx - mn)[:, None]
    scale = f32(1) / iscale
    L = np.clip(rint_int(iscale * (x - mn[:, None])), 0, nmax)
    diff = scale * L.astype(F32) + mn[:, None] - x
    best = seq_sum(w * (diff * diff))
    scale, mn_best = scale[:, 0], mn.copy()
    for step in range(nstep + 1):
        # as the reference: later candidates are measured from the best min found so far
        cur_min = mn_best[:, None]
        iscale = (f32(rmin) + f32(rdelta) * f32(step) + f32(nmax)) / (mx[:, None] - cur_min)
        l = np.clip(rint_int(iscale * (x - cur_min)), 0, nmax).astype(F32)
        wl = w * l
        sum_l, sum_l2, sum_xl = seq_sum(wl), seq_sum(wl * l), seq_sum(wl * x)
        D = sum_w * sum_l2 - sum_l * sum_l
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
        pos = this_min > 0
        this_min = np.where(pos, f32(0), this_min)
        this_scale = np.where(pos, sum_xl / sum_l2, this_scale)
        d2 = this_scale[:, None] * l + this_min[:, None] - x
        cur = seq_sum(w * (d2 * d2))
        upd = (D > 0) & (cur < best)
        L[upd] = l[upd].astype(np.int64)
        best = np.where(upd, cur, best)
        scale = np.where(upd, this_scale, scale)
        mn_best = np.where(upd, this_min, mn_best)
    flat = (mx == mn)
    L[flat] = 0
    scale = np.where(flat, f32(0), scale)
    return scale, -np.where(flat, mn, mn_best), L


@np.errstate(all="ignore")
def np_quantize_k45(x, nmax, rmin, rdelta, nstep):
    """quantize_row_q4_K_ref (nmax 15) / q5_K (nmax 31): x (NB, 256) -> block bytes (NB, size)."""
    nb = x.shape[0]
    xs = x.reshape(nb * 8, 32)
    av_x = np.sqrt(seq_sum(xs * xs) / f32(32))
    w = av_x[:, None] + np.abs(xs)
    scales, mins, L = np_fit_scale_min(xs, w, nmax, rmin, rdelta, nstep)
    scales, mins, L = scales.reshape(nb, 8), mins.reshape(nb, 8), L.reshape(nb, 256)
    max_scale = np.where(scales.max(axis=1) > 0, scales.max(axis=1), f32(0))
    max_min = np.where(mins.max(axis=1) > 0, mins.max(axis=1), f32(0))
    inv_scale = np.where(max_scale > 0, f32(63) / np.where(max_scale > 0, max_scale, f32(1)), f32(0))
    inv_min = np.where(max_min > 0, f32(63) / np.where(max_min > 0, max_min, f32(1)), f32(0))
    ls = np.minimum(rint_int(inv_scale[:, None] * scales) & 0xFF, 63)
    lm = np.minimum(rint_int(inv_min[:, None] * mins) & 0xFF, 63)
    d16 = (max_scale / f32(63)).astype(np.float16)
    dmin16 = (max_min / f32(63)).astype(np.float16)
    d = d16.astype(F32)[:, None] * ls.astype(F32)
    dm = dmin16.astype(F32)[:, None] * lm.astype(F32)
    d_el, dm_el = np.repeat(d, 32, axis=1), np.repeat(dm, 32, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        requant = np.clip(rint_int(np.where(d_el != 0, (x + dm_el) / d_el, 0)), 0, nmax)
    L = np.where(d_el != 0, requant, L).astype(np.uint8)
    sc = np.zeros((nb, 12), np.uint8)
    sc[:, 0:4] = ls[:, 0:4] | ((ls[:, 4:8] >> 4) << 6)
    sc[:, 4:8] = lm[:, 0:4] | ((lm[:, 4:8] >> 4) << 6)
    sc[:, 8:12] = (ls[:, 4:8] & 0xF) | ((lm[:, 4:8] & 0xF) << 4)
    Lg = L.reshape(nb, 4, 2, 32)  # group g: sub-blocks 2g (low nibble) and 2g + 1 (high nibble)
    qs = ((Lg[:, :, 0] & 0xF) | ((Lg[:, :, 1] & 0xF) << 4)).reshape(nb, 128).astype(np.uint8)
    parts = [d16.reshape(nb, 1).view(np.uint8), dmin16.reshape(nb, 1).view(np.uint8), sc]
    if nmax == 31:
        hb = (L.reshape(nb, 8, 32) >> 4).astype(np.uint8)  # fifth bit of sub-block b -> bit b
        qh = np.zeros((nb, 32), np.uint8)
        for b in range(8):
            qh |= hb[:, b] << b
        parts.append(qh)
    parts.append(qs)
    return np.concatenate(parts, axis=1)


@np.errstate(all="ignore")
def np_fit_scale_symmetric(x, nmax):
    """make_qx_quants(rmse_type 1, no weights): x (B, n) -> scale (B,), L (B, n) in [0, 2 nmax)."""
    ax = np.abs(x)
    im = ax.argmax(axis=1)
    amax = ax[np.arange(x.shape[0]), im]
    mx = x[np.arange(x.shape[0]), im]
    zero = amax < f32(1e-15)
    mx = np.where(zero, f32(1), mx)
    w = x * x

    def sums(iscale):
        l = np.clip(rint_int(iscale[:, None] * x), -nmax, nmax - 1)
        lf = l.astype(F32)
        return l, seq_sum((w * x) * lf), seq_sum((w * lf) * lf)

    l, sumlx, suml2 = sums(f32(-nmax) / mx)
    L = l + nmax
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(suml2 != 0, sumlx / suml2, f32(0))
    best = scale * sumlx
    for step in [s for s in range(-9, 10) if s != 0]:
        iscale = -(f32(nmax) + f32(0.1) * f32(step)) / mx
        l, sumlx, suml2 = sums(iscale)
        with np.errstate(divide="ignore", invalid="ignore"):
            upd = (suml2 > 0) & (sumlx * sumlx > best * suml2)
            new_scale = sumlx / suml2
        L[upd] = l[upd] + nmax
        scale = np.where(upd, new_scale, scale)
        best = np.where(upd, scale * sumlx, best)
    L[zero] = 0
    return np.where(zero, f32(0), scale), L


@np.errstate(all="ignore")
def np_quantize_q6_K(x):
    nb = x.shape[0]
    scales, L = np_fit_scale_symmetric(x.reshape(nb * 16, 16), 32)
    scales, L = scales.reshape(nb, 16), L.reshape(nb, 256)
    im = np.abs(scales).argmax(axis=1)
    max_scale = scales[np.arange(nb), im]
    zero = np.abs(max_scale) < f32(1e-15)
    max_scale = np.where(zero, f32(1), max_scale)
    iscale = f32(-128) / max_scale
    d16 = (f32(1) / iscale).astype(np.float16)
    sc = np.minimum(rint_int(iscale[:, None] * scales), 127)
    d = np.repeat(d16.astype(F32)[:, None] * sc.astype(F32), 16, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        requant = np.clip(rint_int(np.where(d != 0, x / d, 0)), -32, 31) + 32
    L = np.where(d != 0, requant, L).astype(np.uint8).reshape(nb, 2, 4, 32)  # half, k, l
    ql = np.concatenate([(L[:, :, 0] & 0xF) | ((L[:, :, 2] & 0xF) << 4),
                         (L[:, :, 1] & 0xF) | ((L[:, :, 3] & 0xF) << 4)], axis=2).reshape(nb, 128)
    qh = ((L[:, :, 0] >> 4) | ((L[:, :, 1] >> 4) << 2) | ((L[:, :, 2] >> 4) << 4)
          | ((L[:, :, 3] >> 4) << 6)).reshape(nb, 64)
    out = np.concatenate([ql.astype(np.uint8), qh.astype(np.uint8), sc.astype(np.int8).view(np.uint8),
                          d16.reshape(nb, 1).view(np.uint8)], axis=1)
    out[zero] = 0
    return out


NP_K = {
    "q4_K": lambda x: np_quantize_k45(x, 15, -1.0, 0.1, 20),
    "q5_K": lambda x: np_quantize_k45(x, 31, -0.5, 0.1, 15),
    "q6_K": np_quantize_q6_K,
}


@pytest.mark.parametrize("type_name", ["q4_K", "q5_K", "q6_K"])
def test_k_quants_match_numpy_port_byte_exact(type_name):
    rng = np.random.default_rng(5)
    cols = 256 * 3
    x = np.concatenate([
        awkward_rows(rng, cols),                               # incl. overflowing / subnormal
        rng.standard_t(3, size=(8, cols)).astype(F32),        # heavy tails
        (rng.standard_normal((8, cols)) * 0.02).astype(F32),  # LLM-like weight scale
    ]).astype(F32)
    ours = _core.quantize(type_name, x)
    ref = NP_K[type_name](x.reshape(-1, 256)).reshape(x.shape[0], -1)
    assert ours.shape == ref.shape
    bad = np.nonzero((ours != ref).any(axis=1))[0]
    assert bad.size == 0, f"{type_name}: rows {bad.tolist()} differ from the numpy port"
    # gguf-py's dequantizer reads our blocks (layout check independent of our dequantizer).
    back = gg_dequantize(ours, GT_OF[type_name])
    assert np.array_equal(bits(back), bits(_core.dequantize(type_name, ours, x.size).reshape(x.shape)))


def rel_rmse(type_name, x):
    if type_name in GGUF_QUANTIZABLE and type_name not in ("f16", "bf16"):
        q = gguf_quant_bytes(type_name, x)  # the legacy formats as gguf-py writes them
    else:
        q = _core.quantize(type_name, x)
    back = gg_dequantize(q, GT_OF[type_name]).astype(np.float64)
    return np.sqrt(np.mean((back - x) ** 2)) / np.std(x.astype(np.float64))


def test_k_quant_error_bounds():
    """Reconstruction error (read back with gguf-py) relative to std(x), on N(0, 1) and on
    Student-t(3) rows. Bounds from the bit widths: Q4_K must beat Q4_1 (plain min/max affine with
    the same 4 bits per 32 values: the fitted (scale, min) must pay for its 6-bit quantized scales)
    and Q4_0; Q5_K must beat Q5_1; Q6_K must land between Q8_0 and Q5_K. Absolute caps: a uniform
    b-bit quantizer over a sub-block range R has RMSE R / (2^b - 1) / sqrt(12); for 32 normal
    values R ~ 4.1 sigma, so Q4_K < 0.079 and Q5_K < 0.038; for Q6_K (16 values, symmetric,
    R ~ 2 * 1.77 sigma over 63 steps) ~0.016, cap 0.02 for the int8 sub-scales."""
    rng = np.random.default_rng(9)
    normal = rng.standard_normal((64, 4096)).astype(F32)
    heavy = rng.standard_t(3, size=(64, 4096)).astype(F32)
    for x in (normal, heavy):
        e = {t: rel_rmse(t, x) for t in ["q8_0", "q4_0", "q4_1", "q5_1", "q4_K", "q5_K", "q6_K"]}
        assert e["q4_K"] < e["q4_1"] < e["q4_0"], e
        assert e["q5_K"] < e["q5_1"], e
        assert e["q8_0"] < e["q6_K"] < e["q5_K"] < e["q4_K"], e
        if x is normal:
            assert e["q4_K"] < 0.079 and e["q5_K"] < 0.038 and e["q6_K"] < 0.02, e
