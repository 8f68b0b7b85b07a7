"""Beam-search decode speed: k beams stepped one session at a time (what beam.py did before)
against one LLM.eval_step per step (the k rows through the weights together). Not a test.

    python bench/bench_beam.py --model /work/bench-cache/ours/ggml-model-Q4_K_M.gguf --threads 2

Both ways run alternately in the same process on the same sessions (fixed random tokens), best of
--reps; prints steps/s and beam-tokens/s for each and the ratio.
"""
import argparse
import time

import numpy as np

from minicpmv_edge import _core


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--beams", type=int, default=3)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    llm = _core.LLM(a.model, n_ctx=a.prompt + 2 * a.reps * a.steps + 8, n_threads=a.threads)
    rng = np.random.default_rng(0)
    llm.eval(rng.integers(0, 1000, a.prompt).astype(np.int32))
    beams = [llm] + [llm.fork() for _ in range(a.beams - 1)]
    toks = rng.integers(0, 1000, (2 * a.reps * a.steps, a.beams)).astype(np.int32)
    row = 0
    best = {"one by one": 1e30, "eval_step": 1e30}
    for _ in range(a.reps):
        for way in best:
            t0 = time.perf_counter()
            for _ in range(a.steps):
                if way == "eval_step":
                    _core.LLM.eval_step(beams, toks[row])
                else:
                    for b, t in zip(beams, toks[row]):
                        b.eval(t[None])
                row += 1
            best[way] = min(best[way], time.perf_counter() - t0)
    print(f"{a.beams} beams, {a.threads} thread(s), {a.steps} steps, best of {a.reps}: {a.model}")
    for way, t in best.items():
        print(f"  {way:10s}  {a.steps / t:6.2f} steps/s  {a.beams * a.steps / t:6.2f} beam tokens/s")
    print(f"  ratio {best['one by one'] / best['eval_step']:.2f}x")


if __name__ == "__main__":
    main()
