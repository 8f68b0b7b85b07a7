"""Sampler (cpp/text/sampler.cpp) against transformers' logits processors.

Reference: LogitsProcessorList(RepetitionPenalty, Temperature, TopK, TopP, MinP) then softmax, the
order HF generate() uses with do_sample=True. Tolerance 1e-6 absolute on probabilities: HF works
in float32 (softmax rounding ~1e-7 relative), we accumulate in double; any disagreement on which
tokens survive a filter would show up as an error of order the token's probability, far above it.
"""
import math

import numpy as np
import pytest

import torch
import transformers.generation.logits_process as lp

from minicpmv_edge import _core


def hf_probs(logits, prev, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1.0):
    procs = lp.LogitsProcessorList()
    if repetition_penalty != 1.0:
        procs.append(lp.RepetitionPenaltyLogitsProcessor(repetition_penalty))
    if temperature != 1.0:
        procs.append(lp.TemperatureLogitsWarper(temperature))
    if top_k:
        procs.append(lp.TopKLogitsWarper(top_k))
    if top_p < 1.0:
        procs.append(lp.TopPLogitsWarper(top_p))
    if min_p > 0:
        procs.append(lp.MinPLogitsWarper(min_p))
    ids = torch.tensor([list(prev)], dtype=torch.long).reshape(1, -1)
    scores = procs(ids, torch.from_numpy(np.asarray(logits, np.float32)).clone()[None])
    return torch.softmax(scores, dim=-1)[0].numpy().astype(np.float64)


CONFIGS = [
    dict(temperature=0.7, top_k=100, top_p=0.8, repetition_penalty=1.05),  # MiniCPM-V chat() default
    dict(),
    dict(temperature=1.5),
    dict(top_k=1),
    dict(top_k=40),
    dict(top_p=0.5),
    dict(top_p=0.95, temperature=0.8),
    dict(min_p=0.05),
    dict(min_p=0.2, temperature=1.3, repetition_penalty=1.3),
    dict(temperature=0.9, top_k=50, top_p=0.9, min_p=0.02, repetition_penalty=1.2),
    dict(repetition_penalty=0.8, top_k=20),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=[",".join(f"{k}={v}" for k, v in c.items()) or "plain" for c in CONFIGS])
def test_probs_match_transformers(cfg):
    rng = np.random.default_rng(0)
    for trial, scale in enumerate([3.0, 0.05, 1.0, 30.0, 6.0, 0.5, 0.02, 12.0]):  # flat to peaked
        n_vocab = 151666 if trial in (0, 1, 3) else int(rng.integers(2, 3000))
        logits = (rng.standard_normal(n_vocab) * scale).astype(np.float32)
        if trial % 3 == 2:
            logits[rng.integers(0, n_vocab, n_vocab // 10)] = -np.inf  # masked tokens
            logits[0] = 1.0
        prev = rng.integers(0, n_vocab, int(rng.integers(0, 40))).astype(np.int32)
        prev = np.concatenate([prev, prev[: len(prev) // 2]])  # repeated tokens: penalised once
        ours = _core.Sampler(n_vocab, **cfg).probs(logits, prev)
        ref = hf_probs(logits, prev, **cfg)
        assert ours.shape == (n_vocab,)
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6, err_msg=f"trial {trial} {cfg}")
        assert abs(ours.sum() - 1) < 1e-5


def test_top_k_keeps_ties_and_min_p_on_quantised_logits():
    rng = np.random.default_rng(1)
    for _ in range(20):
        logits = np.round(rng.standard_normal(500) * 2, 1).astype(np.float32)  # many equal values
        for cfg in (dict(top_k=7), dict(top_k=30, min_p=0.1), dict(min_p=0.3, temperature=0.5)):
            np.testing.assert_allclose(_core.Sampler(500, **cfg).probs(logits, []),
                                       hf_probs(logits, [], **cfg), rtol=0, atol=1e-6)


def test_greedy_is_argmax_after_penalty():
    rng = np.random.default_rng(2)
    for _ in range(50):
        logits = rng.standard_normal(1000).astype(np.float32)
        prev = rng.integers(0, 1000, 20).astype(np.int32)
        s = _core.Sampler(1000, temperature=0.0, repetition_penalty=1.3)
        ref = lp.RepetitionPenaltyLogitsProcessor(1.3)(torch.tensor([prev.tolist()]),
                                                       torch.from_numpy(logits.copy())[None])[0]
        assert s.sample(logits, prev) == int(torch.argmax(ref))
        p = s.probs(logits, prev)
        assert p[int(torch.argmax(ref))] == 1.0 and p.sum() == 1.0


def test_seeded_sampling_is_reproducible():
    rng = np.random.default_rng(3)
    logits = rng.standard_normal(5000).astype(np.float32)
    cfg = dict(temperature=0.7, top_k=100, top_p=0.8, repetition_penalty=1.05)
    a, b, c = (_core.Sampler(5000, seed=s, **cfg) for s in (42, 42, 43))
    da = [a.sample(logits, []) for _ in range(300)]
    assert da == [b.sample(logits, []) for _ in range(300)]
    assert da != [c.sample(logits, []) for _ in range(300)]
    a.seed(42)
    assert [a.sample(logits, []) for _ in range(300)] == da


def test_empirical_frequencies_match_probs():
    rng = np.random.default_rng(4)
    n_vocab, draws = 40, 60000
    logits = (rng.standard_normal(n_vocab) * 1.5).astype(np.float32)
    s = _core.Sampler(n_vocab, temperature=0.9, top_k=25, top_p=0.95, seed=7)
    p = s.probs(logits, [])
    counts = np.bincount([s.sample(logits, []) for _ in range(draws)], minlength=n_vocab)
    assert counts[p == 0].sum() == 0  # filtered tokens are never drawn
    keep = p > 0
    expected = p[keep] * draws
    chi2 = float(((counts[keep] - expected) ** 2 / expected).sum())
    df = int(keep.sum()) - 1
    # Pearson chi-square; df + 6*sqrt(2*df) is beyond the 1e-6 upper tail for these df.
    assert chi2 < df + 6 * math.sqrt(2 * df), (chi2, df)


def test_bad_arguments():
    with pytest.raises(ValueError):
        _core.Sampler(0)
    with pytest.raises(ValueError):
        _core.Sampler(10, top_k=-1)
    with pytest.raises(ValueError):
        _core.Sampler(10, repetition_penalty=0.0)
    s = _core.Sampler(10, repetition_penalty=1.1)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        s.sample(np.zeros(10, np.float32), [10])
    with pytest.raises(ValueError, match="length 10"):
        s.sample(np.zeros(11, np.float32), [])
    with pytest.raises(ValueError, match="inf"):
        s.sample(np.full(10, -np.inf, np.float32), [])
    with pytest.raises(ValueError, match="NaN"):
        s.sample(np.full(10, np.nan, np.float32), [])
    # a single NaN anywhere, greedy (temperature 0) as well as sampling: never a silent argmax
    for temp in (0.0, 0.7):
        g = _core.Sampler(10, temperature=temp)
        x = np.arange(10, dtype=np.float32)
        x[5] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            g.sample(x, [])
