"""Beam search as Hugging Face's `generate(num_beams=k, do_sample=False, length_penalty=1.0,
early_stopping=False)` runs it for a decoder-only model fed `inputs_embeds` (what MiniCPM-V's
reference `chat(sampling=False)` calls), so the answer is the reference's token for token.

What the HF code (transformers >= 4.50 `_beam_search`) does, and this file repeats:
* per running beam: log_softmax of the logits, then the logits processors on the log-probs
  (repetition penalty over that beam's generated tokens only: the prompt was given as
  embeddings; eos masked while fewer than min_new_tokens were generated), plus the beam's score;
* the top K = max(2, 1 + n_eos) * k candidates over all beams (at the first step only the one
  prompt beam is live: HF starts the other beams at -1e9);
* a candidate ending in an eos token (or reaching max_new_tokens) finishes; only candidates
  ranked in the top k may enter the k finished hypotheses, scored sum(log-probs) /
  generated_length ** length_penalty (the eos counts in the length);
* the next running beams are the best k candidates that did not finish;
* stop when every candidate finished, or when k hypotheses are finished and the best running
  beam's score / its length ** length_penalty cannot beat the worst of them (HF's
  early_stopping=False heuristic, which never turns back on once off).

Each running beam owns one KV-cache session (the model's own LLM plus `fork()`s sharing the
weights); a beam with several children hands its session to the first and copies it into free
sessions for the others, copying only the generated positions (the prompt is common to all).
The running beams' next tokens go through the model as one batch (`LLM.eval_step`): one pass over
the weights per step, not one per beam.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator, List, Optional

import numpy as np

from . import _core
from .prompt import cut_at_stop


@dataclass
class _Beam:
    tokens: List[int]
    score: float          # sum of processed log-probs of `tokens`
    session: object       # _core.LLM whose cache holds the prompt + `tokens`
    logits: Optional[np.ndarray] = None  # next-token logits after `tokens`


@dataclass
class _Hyp:
    score: float
    tokens: List[int] = field(default_factory=list)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    m = x.max()
    return x - m - np.log(np.exp(x - m).sum())


def _processed_log_probs(beam: _Beam, penalty: float, eos: List[int], mask_eos: bool) -> np.ndarray:
    lp = _log_softmax(beam.logits)
    if penalty != 1.0 and beam.tokens:
        seen = np.unique(np.asarray(beam.tokens, dtype=np.int64))
        v = lp[seen]
        lp[seen] = np.where(v < 0, v * penalty, v / penalty)  # HF RepetitionPenaltyLogitsProcessor
    if mask_eos:
        lp[eos] = -np.inf  # HF MinNewTokensLengthLogitsProcessor
    return lp


def beam_search(model, logits, beams: int, params, max_new_tokens: int, min_new_tokens: int, stop: List[str],
                stats) -> Iterator[str]:
    """`model` is the MiniCPMV object whose LLM holds the prefilled prompt and `logits` its last
    position's logits. Yields the best hypothesis' text (one piece, at the end)."""
    llm = model.llm
    k = int(beams)
    penalty = float(params.get("repetition_penalty", 1.0))
    length_penalty = float(params.get("length_penalty", 1.0))
    eos = sorted(model.stop_ids)
    n_keep = max(2, 1 + len(eos)) * k
    n_prompt = llm.n_past
    prompt_keys = list(model._kv_keys)
    stats.finish_reason = "length"
    t0 = time.perf_counter()

    running = [_Beam([], 0.0, llm, np.asarray(logits, dtype=np.float32))]
    finished: List[_Hyp] = []
    improvable = True  # HF's is_early_stop_heuristic_unsatisfied
    spare: List[object] = []  # sessions no running beam uses
    n_forks = 0
    try:
        for step in range(max_new_tokens):
            new_len = step + 1
            cands = []  # (score, beam index, token)
            for bi, b in enumerate(running):
                total = _processed_log_probs(b, penalty, eos, step < min_new_tokens) + b.score
                top = np.argpartition(-total, n_keep)[:n_keep] if total.size > n_keep else np.arange(total.size)
                cands.extend((float(total[t]), bi, int(t)) for t in top)
            cands.sort(key=lambda c: -c[0])
            cands = cands[:n_keep]
            hits = [tok in eos or new_len >= max_new_tokens for _, _, tok in cands]

            if improvable:
                for rank in range(min(k, len(cands))):
                    if hits[rank]:
                        sc, bi, tok = cands[rank]
                        finished.append(_Hyp(sc / (new_len ** length_penalty), running[bi].tokens + [tok]))
                finished.sort(key=lambda h: -h.score)
                del finished[k:]

            nxt = [c for c, h in zip(cands, hits) if not h][:k]
            if not nxt:  # every candidate finished (max_new_tokens reached)
                break
            best_running = nxt[0][0] / (new_len ** length_penalty)
            improvable = improvable and (len(finished) < k or best_running > finished[-1].score)
            if not improvable:
                break
            if any(running[bi].session.n_past >= running[bi].session.n_ctx for _, bi, _ in nxt):
                # The context is full: end as if max_new_tokens were reached here.
                stats.finish_reason = "context"
                for sc, bi, tok in nxt:
                    finished.append(_Hyp(sc / (new_len ** length_penalty), running[bi].tokens + [tok]))
                finished.sort(key=lambda h: -h.score)
                break
            running, n_forks = _advance(running, nxt, spare, n_prompt, n_forks)
    finally:
        # Leave the model's cache holding the prompt (what model._kv_keys says); the answer is
        # prefilled again by the next turn if it is part of it.
        if llm.n_past > n_prompt:
            llm.truncate(n_prompt)
        model._kv_keys = prompt_keys
        stats.decode_ms = (time.perf_counter() - t0) * 1e3

    if finished:
        best = finished[0].tokens
    else:  # stopped before any candidate finished (context full at the first step)
        best = running[0].tokens
    if best and best[-1] in eos:
        best = best[:-1]
        stats.finish_reason = "stop"
    stats.tokens = list(best)
    stats.n_generated = len(best)

    detok = _core.Detokenizer(model.tokenizer, True)
    text = "".join(detok.push(t) for t in best) + detok.flush()
    if stop:
        text, hit = cut_at_stop(text, stop)
        if hit:
            stats.finish_reason = "stop"
    if text:
        yield text


def _advance(running: List[_Beam], nxt, spare: List[object], n_prompt: int, n_forks: int):
    """The chosen candidates become the running beams: give each a session holding its parent's
    cache, then evaluate its new token there."""
    children_of = {}
    for sc, bi, tok in nxt:
        children_of.setdefault(bi, []).append((sc, tok))
    used = set(children_of)
    spare.extend(b.session for bi, b in enumerate(running) if bi not in used)
    plan = []  # (session, parent, score, token)
    # Copies first, while every parent session still holds its parent's state.
    for bi, kids in children_of.items():
        parent = running[bi]
        for j, (sc, tok) in enumerate(kids):
            if j == 0:
                continue
            if spare:
                s = spare.pop()
                s.copy_from(parent.session, n_prompt)
            else:
                s = parent.session.fork()
                n_forks += 1
            plan.append((s, parent, sc, tok))
        plan.insert(0, (parent.session, parent, kids[0][0], kids[0][1]))
    # One decode step for all of them: the weights are read once for every beam's row.
    logits = _core.LLM.eval_step([s for s, _, _, _ in plan], np.asarray([tok for *_, tok in plan], dtype=np.int32))
    new = [_Beam(parent.tokens + [tok], sc, s, np.asarray(lg, dtype=np.float32))
           for (s, parent, sc, tok), lg in zip(plan, logits)]
    new.sort(key=lambda b: -b.score)  # best first, as HF keeps its running beams
    return new, n_forks
