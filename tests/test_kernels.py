"""Kernels (_core.matmul) on every ISA path this CPU has, against a float64 numpy product of the
weights dequantized by gguf-py (gguf.quants.dequantize) with the exact float64 activations.

Tolerance, per output y[t, r] (a proven bound, not a fit):
  quantized weights: the activations are rounded to int8 per block b (Q8_0-style for the
    32-blocks: |x - q d_f16| <= 0.5 d + 127 |d - d_f16| <= 0.5625 d, d = max|x_b| / 127;
    Q8_K-style for the K-quants: |x - q d| <= 0.5 |d|, d = max|x_b| / 127, as ggml), so
      |err| <= sum_b sum_{j in b} |w_j| * c * d_b          (c = 0.5625 or 0.5, + 1e-5 slack)
  plus f32 rounding of the accumulation: (number of f32 additions + 8) * 2^-24 * sum_j |w_j x_j|.
  float weights (f32/f16/bf16): only the f32 accumulation term (cols + 8 additions).
Weights are random bytes (every code value occurs) with scale fields set to random normal halves.
"""
import numpy as np
import pytest
import gguf
from gguf import quants, GGMLQuantizationType as T

_core = pytest.importorskip("minicpmv_edge._core")

U = 2.0 ** -24
QUANT32 = {"q4_0": T.Q4_0, "q4_1": T.Q4_1, "q5_0": T.Q5_0, "q5_1": T.Q5_1, "q8_0": T.Q8_0}
QUANTK = {"q4_K": T.Q4_K, "q5_K": T.Q5_K, "q6_K": T.Q6_K}
FLOATS = {"f32": T.F32, "f16": T.F16, "bf16": T.BF16}
ALL = {**FLOATS, **QUANT32, **QUANTK}
# byte offsets of the f16 scale fields inside one block
SCALE_FIELDS = {"q4_0": [0], "q4_1": [0, 2], "q5_0": [0], "q5_1": [0, 2], "q8_0": [0],
                "q4_K": [0, 2], "q5_K": [0, 2], "q6_K": [208]}

ISAS = _core.isa_info()["available"]


def random_weights(name, rows, cols, rng):
    qt = ALL[name]
    bs, ts = gguf.GGML_QUANT_SIZES[qt]
    if name == "f32":
        w = rng.uniform(-1, 1, (rows, cols)).astype(np.float32)
        return w.view(np.uint8).reshape(rows, -1), w.astype(np.float64)
    if name in ("f16", "bf16"):
        f = rng.uniform(-1, 1, (rows, cols)).astype(np.float32)
        h = f.astype(np.float16).view(np.uint16) if name == "f16" else (f.view(np.uint32) >> 16).astype(np.uint16)
        raw = h.view(np.uint8).reshape(rows, -1)
    else:
        raw = rng.integers(0, 256, (rows, cols // bs, ts), dtype=np.uint8)
        for off in SCALE_FIELDS[name]:
            s = rng.uniform(-0.05, 0.05, raw.shape[:2]).astype(np.float16)
            raw[:, :, off:off + 2] = s.view(np.uint8).reshape(*raw.shape[:2], 2)
        raw = raw.reshape(rows, -1)
    deq = quants.dequantize(raw, qt).astype(np.float64)
    assert deq.shape == (rows, cols) and np.isfinite(deq).all()
    return raw, deq


def bound(name, deq, x):
    """Per-output error bound [n, rows] (see module docstring)."""
    aw, ax = np.abs(deq), np.abs(x)
    cols = deq.shape[1]
    mag = ax @ aw.T
    if name in FLOATS:
        return (cols + 8) * U * mag + 1e-30
    blk = 32 if name in QUANT32 else 256
    nb = cols // blk
    amax = ax.reshape(x.shape[0], nb, blk).max(axis=2)                  # [n, nb]
    d = amax / 127.0 * 0.5625 if name in QUANT32 else amax / 127.0 * 0.5
    wsum = aw.reshape(deq.shape[0], nb, blk).sum(axis=2)                # [rows, nb]
    return (d * (1 + 1e-5)) @ wsum.T + (nb + 2 * blk + 8) * U * mag + 1e-30


@pytest.mark.parametrize("name", list(ALL))
@pytest.mark.parametrize("isa", ISAS)
def test_matmul_against_gguf_dequantize(name, isa):
    rng = np.random.default_rng(abs(hash((name, isa))) % 2**32)
    blk = 1 if name in FLOATS else 32 if name in QUANT32 else 256
    cols_list = [37, 515] if blk == 1 else [blk, 7 * blk] if blk == 32 else [blk, 3 * blk]
    for cols in cols_list:
        rows = 37
        raw, deq = random_weights(name, rows, cols, rng)
        for n in (1, 3, 17):
            x = rng.normal(0, 1, (n, cols)).astype(np.float32)
            x64 = x.astype(np.float64)
            want = x64 @ deq.T
            for thr in (1, 2):
                y = _core.matmul(name, raw, rows, cols, x, isa=isa, n_threads=thr)
                assert y.shape == (n, rows) and y.dtype == np.float32
                err = np.abs(y.astype(np.float64) - want)
                tol = bound(name, deq, x64)
                worst = np.max(err / tol)
                assert worst <= 1.0, f"{isa} {name} cols={cols} n={n} thr={thr}: err/bound = {worst:.3f}"


def test_bound_is_not_vacuous():
    """The quantized bound is a few % of the product's magnitude, so a wrong kernel fails."""
    rng = np.random.default_rng(0)
    raw, deq = random_weights("q4_0", 8, 256, rng)
    x = rng.normal(0, 1, (2, 256))
    assert np.median(bound("q4_0", deq, x) / (np.abs(x) @ np.abs(deq).T)) < 0.05
    y = _core.matmul("q4_0", raw, 8, 256, x.astype(np.float32))
    wrong = np.abs(y - x @ np.roll(deq, 1, axis=1).T)  # same weights, one column off
    assert (wrong > bound("q4_0", deq, x)).any()


def test_isa_info():
    info = _core.isa_info()
    assert info["best"] in info["available"] and info["active"] in info["available"]
    assert "ref" in info["available"]
    assert isinstance(info["cpu"], dict) and "avx2" in info["cpu"]
    if info["cpu"]["avx512f"] and info["cpu"]["avx512bw"] and info["cpu"]["avx512vl"] and info["cpu"]["avx512_vnni"]:
        assert info["best"] == "avx512"


def test_bad_arguments():
    raw = np.zeros((2, 18), np.uint8)
    x = np.zeros((1, 32), np.float32)
    with pytest.raises(ValueError, match="needs"):
        _core.matmul("q4_0", raw, 3, 32, x)
    with pytest.raises(ValueError, match="multiple"):
        _core.matmul("q4_0", raw, 2, 33, np.zeros((1, 33), np.float32))
    with pytest.raises(ValueError, match="unknown"):
        _core.matmul("q9_9", raw, 2, 32, x)
    with pytest.raises(ValueError):
        _core.matmul("q4_0", raw, 2, 32, x, isa="sse9")
    unsupported = [i for i in ("avx2", "avx512", "neon", "dotprod", "i8mm") if i not in ISAS]
    with pytest.raises(ValueError, match="not supported"):
        _core.matmul("q4_0", raw, 2, 32, x, isa=unsupported[0])
    with pytest.raises(ValueError):
        _core.matmul("q4_0", raw, 2, 32, np.zeros((1, 64), np.float32))


@pytest.mark.parametrize("name", ["q4_K", "q6_K", "q4_0", "q8_0"])
def test_few_tokens_equal_single_token_calls(name):
    """2 and 3 tokens (beam search's rows per step) run the single-token kernels token by token
    over L2-sized row blocks: with 1000 rows of 8192 columns there are several blocks, and each
    token's outputs must be the bits a call with that token alone gives (same kernel, same
    activation bytes; only the row blocking differs)."""
    rng = np.random.default_rng(3)
    rows, cols = 1000, 8192
    raw, _ = random_weights(name, rows, cols, rng)
    x = rng.standard_normal((3, cols)).astype(np.float32)
    for isa in ISAS:
        for n in (2, 3):
            for thr in (1, 2):
                y = _core.matmul(ALL[name], raw, rows, cols, x[:n], isa=isa, n_threads=thr)
                for t in range(n):
                    y1 = _core.matmul(ALL[name], raw, rows, cols, x[t:t + 1], isa=isa, n_threads=thr)
                    np.testing.assert_array_equal(y[t], y1[0], err_msg=f"{name} {isa} n={n} thr={thr} token {t}")
