"""Beam search (python/minicpmv_edge/beam.py, on the engine's forked KV caches) against
transformers' own generate(num_beams=3, do_sample=False, repetition_penalty=1.2,
length_penalty=1.0, early_stopping=False) on the reference pipeline fed inputs_embeds
(tests/reference/pipeline_ref.py), which is what MiniCPM-V's chat(sampling=False) runs.
Token ids must be identical (exact: both sides pick arg-max candidates of float32 logits that
agree to ~1e-6, far below the gaps between the candidates of this random model).

The plain tiny model never emits a terminator in 12 tokens, so a second checkpoint scales the
lm_head rows of <|im_end|> and <|endoftext|> (x4, x3.2): terminators then compete with the other
tokens and finished hypotheses, length normalisation and HF's early-stopping rule all decide the
answers (checked: several cases end early on a terminator).
"""
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "reference"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline_ref import ReferencePipeline  # noqa: E402
from tiny_checkpoint import write_safetensors  # noqa: E402

from minicpmv_edge import _core  # noqa: E402
from minicpmv_edge.api import MiniCPMV  # noqa: E402

N_NEW = 12
BEAM = dict(sampling=False, max_new_tokens=N_NEW)  # chat() defaults: 3 beams, repetition penalty 1.2


def picture(w, h, seed):
    rng = np.random.default_rng(seed)
    a = np.zeros((h, w, 3), np.uint8)
    a[:] = rng.integers(0, 256, 3)
    for _ in range(5):
        x0, y0 = int(rng.integers(0, w - 10)), int(rng.integers(0, h - 10))
        a[y0:y0 + int(rng.integers(5, h // 2)), x0:x0 + int(rng.integers(5, w // 2))] = rng.integers(0, 256, 3)
    from PIL import Image

    return Image.fromarray(a)


def eos_checkpoint(src, dst, scale=4.0):
    """A copy of the HF checkpoint whose lm_head rows for the two terminators are scaled up."""
    from safetensors.torch import load_file

    src, dst = Path(src), Path(dst)
    shutil.copytree(src, dst, dirs_exist_ok=True)
    for f in sorted(src.glob("*.safetensors")):
        t = {k: v.float().numpy() for k, v in load_file(str(f)).items()}
        if "llm.lm_head.weight" in t:
            w = t["llm.lm_head.weight"].copy()
            w[151645] *= scale        # <|im_end|>
            w[151643] *= scale * 0.8  # <|endoftext|>
            t["llm.lm_head.weight"] = w
        write_safetensors(dst / f.name, t, "bfloat16")  # bf16 values stay exact
    return dst


def engine(llm, mm):
    return MiniCPMV(str(llm), str(mm), n_threads=2, n_ctx=1024, kv_type="f32")


@pytest.fixture(scope="module")
def plain(tiny_checkpoint_dir, tiny_f32):
    return ReferencePipeline(tiny_checkpoint_dir), engine(*tiny_f32)


@pytest.fixture(scope="module")
def eosy(tiny_checkpoint_dir, tmp_path_factory):
    from minicpmv_edge.convert.converter import convert_checkpoint

    d = eos_checkpoint(tiny_checkpoint_dir, tmp_path_factory.mktemp("eos-hf") / "MiniCPM-V-2_6")
    paths = convert_checkpoint(d, tmp_path_factory.mktemp("eos-gguf"), quant="f32", mmproj_type="f32",
                               progress=False)
    llm = [p for p in paths if "mmproj" not in p.name][0]
    mm = [p for p in paths if "mmproj" in p.name][0]
    return ReferencePipeline(d), engine(llm, mm)


def check(ref, model, messages, **opts):
    ids, embeds = ref.prepare(messages)
    expected = ref.beam_search(embeds, opts.get("max_new_tokens", N_NEW), num_beams=opts.get("num_beams", 3),
                               repetition_penalty=opts.get("repetition_penalty", 1.2),
                               min_new_tokens=opts.get("min_new_tokens", 0))
    answer = model.chat(messages, **{**BEAM, **opts})
    assert model.last_stats.tokens == expected
    assert answer == ref.decode(expected)
    return model.last_stats


def test_text_and_image_prompt(plain):
    ref, model = plain
    check(ref, model, [{"role": "user", "content": "Tell me a story about a cat."}])
    check(ref, model, [{"role": "user", "content": [picture(640, 480, 1), "What is in the image?"]}])
    # The cache is left consistent: a greedy turn afterwards still matches the reference.
    msgs = [{"role": "user", "content": [picture(640, 480, 1), "What is in the image?"]}]
    ids, embeds = ref.prepare(msgs)
    model.chat(msgs, sampling=False, num_beams=1, repetition_penalty=1.0, max_new_tokens=8)
    assert model.last_stats.tokens == ref.greedy(embeds, 8)


def test_terminators_finish_hypotheses(eosy):
    ref, model = eosy
    reasons = []
    for p in ("Tell me a story about a cat.", "Hi", "What is 2+2?"):
        reasons.append(check(ref, model, [{"role": "user", "content": p}]).finish_reason)
    reasons.append(check(ref, model, [{"role": "user", "content": [picture(200, 150, 2), "Describe it."]}]
                         ).finish_reason)
    assert reasons.count("stop") >= 2, reasons  # the finished-hypothesis path was exercised
    # min_new_tokens masks the terminators for the first steps (HF MinNewTokensLengthLogitsProcessor).
    st = check(ref, model, [{"role": "user", "content": "Tell me a story about a cat."}], min_new_tokens=5)
    assert st.n_generated >= 5
    # Other beam counts and penalties follow the same rules.
    check(ref, model, [{"role": "user", "content": "Write a poem."}], num_beams=4, repetition_penalty=1.5)
    check(ref, model, [{"role": "user", "content": "Hi"}], num_beams=2, repetition_penalty=1.0)


def test_fork_and_copy_from(plain, tiny_f32):
    ref, _ = plain
    llm = _core.LLM(str(tiny_f32[0]), n_ctx=64, n_threads=2, kv_type="f32")
    ids = [151644, 872, 198, 9707, 11, 1879, 0, 151645]
    a = llm.eval(np.asarray(ids, np.int32))
    f = llm.fork()
    assert (f.n_past, f.n_ctx) == (len(ids), 64)
    tol = 1e-4 * max(1.0, float(np.abs(a).max()))
    # Both continue with different tokens; each matches the reference on its own sequence.
    la = llm.eval(np.asarray([17], np.int32))
    lf = f.eval(np.asarray([42, 43], np.int32))
    emb = ref.llm.model.embed_tokens.weight.detach().numpy()
    assert np.abs(la - ref.last_logits(emb[ids + [17]])).max() < tol
    assert np.abs(lf - ref.last_logits(emb[ids + [42, 43]])).max() < tol
    # copy_from copies only positions >= start and takes the source's length.
    llm.copy_from(f, len(ids))
    assert llm.n_past == len(ids) + 2
    lc = llm.eval(np.asarray([5], np.int32))
    assert np.abs(lc - ref.last_logits(emb[ids + [42, 43, 5]])).max() < tol
    with pytest.raises(ValueError, match="itself"):
        llm.copy_from(llm)
    with pytest.raises(ValueError, match="start"):
        f.copy_from(llm, 100)
    other = _core.LLM(str(tiny_f32[0]), n_ctx=64, n_threads=2, kv_type="f32")
    with pytest.raises(ValueError, match="different models"):
        other.copy_from(llm)
    # An f16 cache is copied bit for bit: the fork continues exactly as the original would.
    h = _core.LLM(str(tiny_f32[0]), n_ctx=32, n_threads=2, kv_type="f16")
    h.eval(np.asarray(ids, np.int32))
    hf = h.fork()
    assert np.array_equal(h.eval(np.asarray([17, 18], np.int32)), hf.eval(np.asarray([17, 18], np.int32)))
    hf.eval(np.asarray([3], np.int32))
    h.copy_from(hf, len(ids))
    assert np.array_equal(h.eval(np.asarray([4], np.int32)), hf.eval(np.asarray([4], np.int32)))


def test_greedy_terminators_and_min_new_tokens(eosy):
    # The same terminator-prone model through the greedy path: it stops on a terminator, and
    # min_new_tokens masks them as HF's MinNewTokensLengthLogitsProcessor does.
    ref, model = eosy
    msgs = [{"role": "user", "content": "Tell me a story about a cat."}]
    ids, embeds = ref.prepare(msgs)
    greedy = dict(sampling=False, num_beams=1, repetition_penalty=1.0, max_new_tokens=N_NEW)
    model.chat(msgs, **greedy)
    assert model.last_stats.tokens == ref.greedy(embeds, N_NEW)
    assert model.last_stats.finish_reason == "stop" and model.last_stats.n_generated < N_NEW
    n_min = model.last_stats.n_generated + 3
    model.chat(msgs, min_new_tokens=n_min, **greedy)
    expected = ref.generate(embeds, N_NEW, do_sample=False, num_beams=1, repetition_penalty=1.0,
                            min_new_tokens=n_min)
    assert model.last_stats.tokens == expected and len(expected) >= n_min
