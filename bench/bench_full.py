"""Full-size benchmark: minicpmv-edge against llama.cpp on the same files, same threads, same inputs.

    python bench/bench_full.py [--threads 1,2] [--cache DIR] [--json OUT] [--only llm|vision|ttft|rss]

Models (built once into --cache, default /work/bench-cache, never inside the repository): a
MiniCPM-V 2.6 checkpoint with random weights in the real shapes and layout (bench/full_checkpoint.py),
converted by our converter to Q4_K_M, Q4_0 and f16 (+ mmproj f16 and q8_0); the f16 file is also
quantized by llama.cpp's own quantizer (llama_model_quantize, default params) to Q4_K_M and Q4_0,
then the checkpoint and the f16 file are deleted. Both engines run on OUR files in the main table;
llama.cpp's files are compared with ours tensor by tensor (sizes, types) and, with
--sources ours,llama, also timed.

Every measurement runs in a fresh subprocess (one model in RAM at a time, clean peak RSS):
  bandwidth  STREAM-like 64-bit sum over a 2 GiB buffer, best of 5 (bench/stream_sum.cpp, compiled here)
  llm        prefill of a 512-token prompt, then 128 single-token decode steps (fixed random token
             ids, the same for both engines); decode also as GB/s of weights read per token
             (every tensor except token_embd, of which one row is read) and as a fraction of the
             bandwidth at the same thread count probed right before and right after that pair of runs
             (the larger of the two: the conservative denominator; the start-of-run probe is kept too)
  vision     ms per 448x448 slice through SigLIP + resampler (ours VisionEncoder.encode_image, once per
             --vision-weights option on the f16 mmproj; llama.cpp mtmd_tokenize + mtmd_encode_chunk on
             the file as stored), one warm-up, median of --reps
  ttft       1344x1344 image (overview + 3x3 slices = 10 x 64 rows) + short question, from the RGB
             array to the logits of the first answer token (ours MiniCPMV.chat, per --vision-weights
             option; llama.cpp mtmd
             encode of every chunk + llama_decode of text tokens and image embeddings)
  rss        peak RSS (VmHWM) of the ttft process: LLM Q4_K_M + mmproj f16 + KV for n_ctx 4096
Weights are paged in before timing (a short warm-up eval in each process), so the figures are
warm-cache steady state, not first-load times. Prints a table (metric | ours | llama.cpp | ratio,
ratio = ours / llama.cpp in the metric's own unit, "better" says which way is good) and writes JSON.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_CACHE = Path("/work/bench-cache")
DEFAULT_JSON = HERE / "out" / "bench_full.json"
QUESTION = "What is in this image? Describe it briefly."
N_CTX = 4096
N_BATCH = 512
CORE_PATH = None  # --core

LLM_FILES = {  # label -> file name in the cache
    "ours-Q4_K_M": "ours/ggml-model-Q4_K_M.gguf",
    "ours-Q4_0": "ours/ggml-model-Q4_0.gguf",
    "llama-Q4_K_M": "llama/ggml-model-Q4_K_M.gguf",
    "llama-Q4_0": "llama/ggml-model-Q4_0.gguf",
}
MMPROJ_F16 = "ours/mmproj-model-f16.gguf"
MMPROJ_Q8 = "ours/mmproj-model-q8_0.gguf"
F16_LLM = "ours/ggml-model-f16.gguf"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ----------------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------------
def _run_py(code: str, what: str):
    log(f"[models] {what}")
    t0 = time.time()
    subprocess.run([sys.executable, "-c", code], check=True)
    log(f"[models] {what}: {time.time() - t0:.0f} s")


def ensure_models(cache: Path, threads: int):
    """Build whatever is missing; keep only the files the benchmarks read."""
    need = [cache / f for f in LLM_FILES.values()] + [cache / MMPROJ_F16, cache / MMPROJ_Q8]
    if all(p.exists() for p in need):
        return
    hf = cache / "hf"
    ours = cache / "ours"
    llama = cache / "llama"
    ours.mkdir(parents=True, exist_ok=True)
    llama.mkdir(parents=True, exist_ok=True)

    def convert(quant, mm, llm, mmproj):
        _run_py(f"import sys; sys.path.insert(0, {str(HERE)!r})\n"
                f"from full_checkpoint import make_full_checkpoint\n"
                f"from minicpmv_edge.convert.converter import convert_checkpoint\n"
                f"make_full_checkpoint({str(hf)!r})\n"
                f"convert_checkpoint({str(hf)!r}, {str(ours)!r}, quant={quant!r}, mmproj_type={mm!r}, "
                f"threads={threads}, progress=False, llm={llm}, mmproj={mmproj}, force=True)",
                f"convert {quant if llm else ''} {('mmproj ' + mm) if mmproj else ''}")

    if not (cache / LLM_FILES["ours-Q4_K_M"]).exists() or not (cache / MMPROJ_F16).exists():
        convert("q4_k_m", "f16", not (cache / LLM_FILES["ours-Q4_K_M"]).exists(),
                not (cache / MMPROJ_F16).exists())
    if not (cache / LLM_FILES["ours-Q4_0"]).exists() or not (cache / MMPROJ_Q8).exists():
        convert("q4_0", "q8_0", not (cache / LLM_FILES["ours-Q4_0"]).exists(), not (cache / MMPROJ_Q8).exists())
    for q, ftype in (("Q4_K_M", 15), ("Q4_0", 2)):
        dst = cache / LLM_FILES[f"llama-{q}"]
        if dst.exists():
            continue
        if not (cache / F16_LLM).exists():
            convert("f16", "f16", True, False)
        _run_py("import ctypes, llama_cpp as L\n"
                "L.llama_backend_init()\n"
                "p = L.llama_model_quantize_default_params()\n"
                f"p.nthread = {threads}\n"
                f"p.ftype = {ftype}\n"
                f"rc = L.llama_model_quantize({str(cache / F16_LLM)!r}.encode(), {str(dst) + '.part'!r}.encode(), "
                "ctypes.byref(p))\n"
                "assert rc == 0, rc\n", f"llama.cpp quantize f16 -> {q}")
        os.replace(str(dst) + ".part", dst)
    # What no benchmark reads any more: the 16 GB checkpoint and the 15 GB f16 file.
    if all(p.exists() for p in need):
        for p in (hf, cache / F16_LLM):
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()


def gguf_summary(path: Path):
    """Bytes per token of decode (all tensors but token_embd, plus one row of it), types."""
    from gguf import GGUFReader

    r = GGUFReader(str(path))
    total = weights = 0
    types = {}
    for t in r.tensors:
        nb = int(t.n_bytes)
        total += nb
        if t.name == "token_embd.weight":
            weights += nb // int(t.shape[-1])  # one row (gguf-py shape is ggml order: [n_embd, n_vocab])
        else:
            weights += nb
        types[t.name] = t.tensor_type.name
    return {"file_bytes": path.stat().st_size, "tensor_bytes": total, "decode_bytes_per_token": weights,
            "types": types}


def compare_files(cache: Path):
    out = {}
    for q in ("Q4_K_M", "Q4_0"):
        a, b = cache / LLM_FILES[f"ours-{q}"], cache / LLM_FILES[f"llama-{q}"]
        if not (a.exists() and b.exists()):
            continue
        sa, sb = gguf_summary(a), gguf_summary(b)
        diff = {n: (sa["types"].get(n), sb["types"].get(n)) for n in set(sa["types"]) | set(sb["types"])
                if sa["types"].get(n) != sb["types"].get(n)}
        out[q] = {"ours_bytes": sa["file_bytes"], "llama_bytes": sb["file_bytes"],
                  "type_mismatches": len(diff), "examples": dict(sorted(diff.items())[:6])}
    return out


# ----------------------------------------------------------------------------------------------
# bandwidth
# ----------------------------------------------------------------------------------------------
def bandwidth(cache: Path, threads):
    exe = cache / "stream_sum"
    src = HERE / "stream_sum.cpp"
    if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
        subprocess.run(["g++", "-O3", "-march=native", "-pthread", str(src), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe), "2048"] + [str(t) for t in threads], check=True, capture_output=True,
                         text=True).stdout
    return {int(a): float(b) for a, b in (line.split() for line in out.strip().splitlines())}


# ----------------------------------------------------------------------------------------------
# workers (each runs in its own process)
# ----------------------------------------------------------------------------------------------
def peak_rss_mb():
    hwm = None
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    except OSError:
        pass
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prompt_tokens(n, seed):
    return np.random.default_rng(seed).integers(0, 151643, size=n).astype(np.int32)  # regular BPE ids


def test_image(size, seed):
    """A smooth image with some texture (what a photo looks like to the resizer), uint8 RGB."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.stack([128 + 100 * np.sin(6 * x + 3 * y), 128 + 100 * np.cos(5 * y), 255 * x * y], -1)
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


class LlamaText:
    """llama.cpp through its C API (llama_cpp low-level bindings): load, decode token / embedding batches."""

    def __init__(self, path, n_threads, vocab_only=False):
        import llama_cpp as L

        self.L = L
        L.llama_backend_init()
        mp = L.llama_model_default_params()
        mp.n_gpu_layers = 0
        mp.vocab_only = vocab_only
        self.model = L.llama_model_load_from_file(str(path).encode(), mp)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        self.ctx = None
        self.n_embd = L.llama_model_n_embd(self.model)
        if vocab_only:
            return
        cp = L.llama_context_default_params()
        cp.n_ctx = N_CTX
        cp.n_batch = N_BATCH
        cp.n_ubatch = N_BATCH
        cp.n_threads = n_threads
        cp.n_threads_batch = n_threads
        self.ctx = L.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise RuntimeError("llama_init_from_model failed")
        self.tok_batch = L.llama_batch_init(N_BATCH, 0, 1)
        self.n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(self.model))

    def _run(self, batch, n, pos0, want_logits):
        for i in range(n):
            batch.pos[i] = pos0 + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = 1 if (want_logits and i == n - 1) else 0
        batch.n_tokens = n
        rc = self.L.llama_decode(self.ctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")

    def eval_tokens(self, tokens, pos0):
        """Decode tokens at positions pos0...; returns the last position's logits (argmax, as a check)."""
        tokens = [int(t) for t in tokens]
        for s in range(0, len(tokens), N_BATCH):
            part = tokens[s:s + N_BATCH]
            for i, t in enumerate(part):
                self.tok_batch.token[i] = t
            self._run(self.tok_batch, len(part), pos0 + s, s + N_BATCH >= len(tokens))
        return self.last_logits()

    def eval_embd(self, ptr, n, pos0, want_logits):
        """Decode n embedding rows (float32 pointer) at positions pos0..."""
        L = self.L
        for s in range(0, n, N_BATCH):
            m = min(N_BATCH, n - s)
            b = L.llama_batch_init(m, self.n_embd, 1)
            ctypes.memmove(b.embd, ctypes.cast(ptr, ctypes.c_void_p).value + s * self.n_embd * 4,
                           m * self.n_embd * 4)
            self._run(b, m, pos0 + s, want_logits and s + m >= n)
            L.llama_batch_free(b)

    def last_logits(self):
        self.L.llama_synchronize(self.ctx)
        p = self.L.llama_get_logits_ith(self.ctx, -1)
        return np.ctypeslib.as_array(p, shape=(self.n_vocab,))

    def clear(self):
        self.L.llama_memory_clear(self.L.llama_get_memory(self.ctx), True)


def worker_llm(cfg):
    T, n_prompt, n_decode = cfg["threads"], cfg["prompt_tokens"], cfg["decode_tokens"]
    toks = prompt_tokens(n_prompt + n_decode + 16, seed=1)
    prompt, gen, warm = toks[:n_prompt], toks[n_prompt:n_prompt + n_decode], toks[-16:]
    res = {}
    t0 = time.perf_counter()
    if cfg["engine"] == "ours":
        from minicpmv_edge import _core

        llm = _core.LLM(cfg["model"], n_ctx=N_CTX, n_threads=T, n_batch=N_BATCH)
        res["load_s"] = time.perf_counter() - t0
        llm.eval(warm)  # page the weights in
        llm.reset()
        t0 = time.perf_counter()
        logits = llm.eval(prompt)
        res["prefill_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for t in gen:
            logits = llm.eval(np.asarray([t], dtype=np.int32))
        res["decode_s"] = time.perf_counter() - t0
    else:
        lt = LlamaText(cfg["model"], T)
        res["load_s"] = time.perf_counter() - t0
        lt.eval_tokens(warm, 0)
        lt.clear()
        t0 = time.perf_counter()
        logits = lt.eval_tokens(prompt, 0)
        res["prefill_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i, t in enumerate(gen):
            logits = lt.eval_tokens([t], n_prompt + i)
        res["decode_s"] = time.perf_counter() - t0
    res["last_argmax"] = int(np.argmax(logits))
    res["prefill_tps"] = n_prompt / res["prefill_s"]
    res["decode_tps"] = n_decode / res["decode_s"] if n_decode else None
    return res


def _mtmd(mmproj, model, T):
    import llama_cpp.mtmd_cpp as M

    mp = M.mtmd_context_params_default()
    mp.use_gpu = False
    mp.n_threads = T
    mp.print_timings = False
    mctx = M.mtmd_init_from_file(str(mmproj).encode(), model, mp)
    if not mctx:
        raise RuntimeError(f"mtmd_init_from_file failed on {mmproj}")
    return M, mctx


def _mtmd_chunks(M, mctx, img, text):
    buf = (ctypes.c_uint8 * img.size).from_buffer_copy(np.ascontiguousarray(img).tobytes())
    bmp = M.mtmd_bitmap_init(img.shape[1], img.shape[0], buf)
    txt = M.mtmd_input_text()
    raw = text.encode()
    txt.text, txt.text_len, txt.add_special, txt.parse_special = raw, len(raw), False, True
    chunks = M.mtmd_input_chunks_init()
    arr = (M.mtmd_bitmap_p_ctypes * 1)(bmp)
    rc = M.mtmd_tokenize(mctx, chunks, ctypes.byref(txt), arr, 1)
    if rc != 0:
        raise RuntimeError(f"mtmd_tokenize returned {rc}")
    out = [M.mtmd_input_chunks_get(chunks, i) for i in range(M.mtmd_input_chunks_size(chunks))]
    return out, chunks, bmp


def worker_vision(cfg):
    T, reps = cfg["threads"], cfg["reps"]
    img = test_image(448, seed=2)
    times = []
    res = {}
    if cfg["engine"] == "ours":
        from minicpmv_edge import _core

        enc = _core.VisionEncoder(cfg["mmproj"], n_threads=T, weights=cfg.get("weights", "native"))
        res["weight_format"] = enc.weight_format
        for r in range(reps + 1):
            t0 = time.perf_counter()
            emb, lay = enc.encode_image(img, 9)
            times.append(time.perf_counter() - t0)
        res["rows"] = list(emb.shape)
    else:
        lt = LlamaText(cfg["model"], T, vocab_only=True)
        M, mctx = _mtmd(cfg["mmproj"], lt.model, T)
        marker = M.mtmd_default_marker().decode()
        for r in range(reps + 1):
            t0 = time.perf_counter()
            chunks, handle, bmp = _mtmd_chunks(M, mctx, img, marker)
            n_img = 0
            for ch in chunks:
                if M.mtmd_input_chunk_get_type(ch) == M.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                    rc = M.mtmd_encode_chunk(mctx, ch)
                    if rc != 0:
                        raise RuntimeError(f"mtmd_encode_chunk returned {rc}")
                    n_img += M.mtmd_input_chunk_get_n_tokens(ch)
            times.append(time.perf_counter() - t0)
            M.mtmd_input_chunks_free(handle)
            M.mtmd_bitmap_free(bmp)
        res["rows"] = n_img
    res["times_ms"] = [t * 1e3 for t in times]
    res["ms_per_slice"] = float(np.median(times[1:])) * 1e3
    return res


def worker_ttft(cfg):
    T = cfg["threads"]
    warm_img, img = test_image(448, seed=3), test_image(1344, seed=4)
    res = {}
    if cfg["engine"] == "ours":
        from minicpmv_edge.api import MiniCPMV

        m = MiniCPMV(cfg["model"], mmproj=cfg["mmproj"], n_threads=T, n_ctx=N_CTX,
                     vision_weights=cfg.get("weights", "native"))
        res["weight_format"] = m.vision.weight_format
        opts = dict(sampling=False, num_beams=1, max_new_tokens=1)
        m.chat([{"role": "user", "content": [warm_img, QUESTION]}], **opts)  # page weights in
        m.reset()
        t0 = time.perf_counter()
        m.chat([{"role": "user", "content": [img, QUESTION]}], **opts)
        wall = time.perf_counter() - t0
        st = m.last_stats
        # max_new_tokens=1 still evaluates the sampled token once: that step is not part of TTFT.
        res.update(ttft_s=wall - st.decode_ms / 1e3, encode_s=st.encode_ms / 1e3, prefill_s=st.prefill_ms / 1e3,
                   n_pos=st.n_prompt, n_slices=st.n_slices)
    else:
        lt = LlamaText(cfg["model"], T)
        M, mctx = _mtmd(cfg["mmproj"], lt.model, T)
        marker = M.mtmd_default_marker().decode()
        text = (f"<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                f"<|im_start|>user\n{marker}\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n")

        def run(image):
            enc = pre = 0.0
            t0 = time.perf_counter()
            chunks, handle, bmp = _mtmd_chunks(M, mctx, image, text)
            pos, n_img = 0, 0
            for k, ch in enumerate(chunks):
                last = k == len(chunks) - 1
                if M.mtmd_input_chunk_get_type(ch) == M.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                    t1 = time.perf_counter()
                    if M.mtmd_encode_chunk(mctx, ch) != 0:
                        raise RuntimeError("mtmd_encode_chunk failed")
                    enc += time.perf_counter() - t1
                    n = M.mtmd_input_chunk_get_n_tokens(ch)
                    t1 = time.perf_counter()
                    lt.eval_embd(M.mtmd_get_output_embd(mctx), n, pos, last)
                    pre += time.perf_counter() - t1
                    pos += M.mtmd_input_chunk_get_n_pos(ch)
                    n_img += 1
                else:
                    nt = ctypes.c_size_t(0)
                    p = M.mtmd_input_chunk_get_tokens_text(ch, ctypes.byref(nt))
                    toks = [p[i] for i in range(nt.value)]
                    t1 = time.perf_counter()
                    if toks:
                        lt.eval_tokens(toks, pos)
                    pre += time.perf_counter() - t1
                    pos += len(toks)
            first = int(np.argmax(lt.last_logits()))
            wall = time.perf_counter() - t0
            M.mtmd_input_chunks_free(handle)
            M.mtmd_bitmap_free(bmp)
            return wall, enc, pre, pos, n_img, first

        run(warm_img)
        lt.clear()
        wall, enc, pre, pos, n_img, _ = run(img)
        res.update(ttft_s=wall, encode_s=enc, prefill_s=pre, n_pos=pos, n_slices=n_img)
    return res


WORKERS = {"llm": worker_llm, "vision": worker_vision, "ttft": worker_ttft}


def use_core(path):
    """Load minicpmv_edge._core from `path` (a build of our own with symbols, for a stable binary
    during a long run and for perf) instead of the installed one."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("minicpmv_edge._core", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sys.modules["minicpmv_edge._core"] = mod


def worker_main(cfg):
    if cfg.get("core"):
        use_core(cfg["core"])
    res = {"load_start": loadavg()}
    t0 = time.time()
    res.update(WORKERS[cfg["task"]](cfg))
    ru = resource.getrusage(resource.RUSAGE_SELF)
    try:  # current split at the end: anonymous (heap, repacked copies, KV) vs file-backed (mmap'd weights)
        st = {ln.split(":")[0]: int(ln.split()[1]) / 1024 for ln in Path("/proc/self/status").read_text().splitlines()
              if ln.startswith(("RssAnon:", "RssFile:"))}
        res.update(rss_anon_mb_end=st.get("RssAnon"), rss_file_mb_end=st.get("RssFile"))
    except (OSError, ValueError, IndexError):
        pass
    res.update(peak_rss_mb=peak_rss_mb(), wall_s=time.time() - t0, cpu_s=ru.ru_utime + ru.ru_stime,
               load_end=loadavg())
    print("RESULT " + json.dumps(res), flush=True)


def run_worker(cfg, logdir: Path):
    """Runs one measurement in a fresh process; its stderr goes to a log file in the cache."""
    if CORE_PATH:
        cfg = dict(cfg, core=CORE_PATH)
    name = f"{cfg['task']}-{cfg['engine']}-{cfg.get('label', '')}-t{cfg['threads']}.log"
    logf = logdir / name
    log(f"  {cfg['task']:6s} {cfg['engine']:9s} {cfg.get('label', ''):13s} t={cfg['threads']} (load {loadavg()}) ...")
    with open(logf, "w") as ef:
        p = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(cfg)],
                           stdout=subprocess.PIPE, stderr=ef, text=True, env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        tail = logf.read_text(errors="replace").strip().splitlines()[-5:]
        log(f"    FAILED (exit {p.returncode}); see {logf}: " + " | ".join(tail))
        return {"error": f"exit {p.returncode}", "log": str(logf)}
    r = json.loads(lines[-1][len("RESULT "):])
    log("    " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()
                          if k not in ("times_ms",)))
    return r


# ----------------------------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------------------------
def ratio(a, b):
    try:
        return a / b if a and b else None
    except TypeError:
        return None


def fmt(v, unit=""):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return f"{v:.3g}{unit}" if abs(v) < 1000 else f"{v:.0f}{unit}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--cache", default=str(DEFAULT_CACHE), help="model cache directory (outside the repo)")
    ap.add_argument("--json", default=str(DEFAULT_JSON), help="where to write the JSON results")
    ap.add_argument("--only", choices=["llm", "vision", "ttft", "rss"], action="append",
                    help="run only these measurements (repeatable); default all")
    ap.add_argument("--quants", default="Q4_K_M,Q4_0", help="LLM types for the llm measurement")
    ap.add_argument("--sources", default="ours,llama",
                    help="whose quantized files to time in llm: ours (our converter), llama (llama_model_quantize) or both")
    ap.add_argument("--engines", default="ours,llama.cpp")
    ap.add_argument("--mmprojs", default="f16,q8_0", help="mmproj types for the vision measurement")
    ap.add_argument("--vision-weights", default="native,bf16",
                    help="our vision_weights options timed on the f16 mmproj (vision and ttft; llama.cpp runs "
                         "the file as stored once): native = the f16 weights (faithful), bf16 / q8_0 = converted "
                         "at load (faster, less exact: see the README)")
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--decode-tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions of the vision slice (after 1 warm-up)")
    ap.add_argument("--build-threads", type=int, default=2)
    ap.add_argument("--core", help="path of a minicpmv_edge._core build to use instead of the installed one")
    ap.add_argument("--no-build", action="store_true", help="do not build missing model files; skip what is missing")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        return worker_main(json.loads(a.worker))

    global CORE_PATH
    if a.core:
        CORE_PATH = str(Path(a.core).resolve())
        use_core(CORE_PATH)
    cache = Path(a.cache).resolve()
    if REPO in cache.parents or cache == REPO:
        ap.error(f"--cache {cache} is inside the repository: model files must stay outside it")
    threads = [int(t) for t in a.threads.split(",") if t.strip()]
    only = set(a.only or ["llm", "vision", "ttft", "rss"])
    engines = [e.strip() for e in a.engines.split(",") if e.strip()]
    vision_weights = [w.strip() for w in a.vision_weights.split(",") if w.strip()]
    if "rss" in only and "native" not in vision_weights:
        vision_weights.insert(0, "native")
    logdir = cache / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    if not a.no_build:
        ensure_models(cache, a.build_threads)

    results = {"command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]), "date_utc": time.strftime(
        "%Y-%m-%d %H:%M:%S", time.gmtime()), "load_at_start": loadavg(), "threads": threads,
        "nproc": os.cpu_count(), "cache": str(cache), "rows": []}
    try:
        from minicpmv_edge import _core
        results["our_isa"] = str(_core.isa_info())
        results["our_core"] = {"path": _core.__file__,
                               "mtime_utc": time.strftime("%H:%M:%S", time.gmtime(os.path.getmtime(_core.__file__)))}
    except Exception as e:  # informative only
        results["our_isa"] = f"? ({e})"
    log(f"[bench] load {loadavg()}; bandwidth ...")
    bw = bandwidth(cache, threads)
    results["bandwidth_GBps"] = bw
    results["bandwidth_method"] = "bench/stream_sum.cpp: 64-bit integer sum over 2 GiB, best of 5, g++ -O3 -march=native"
    results["files"] = compare_files(cache)
    rows = results["rows"]

    def add(metric, t, ours, llama, unit, better, extra=None):
        rows.append({"metric": metric, "threads": t, "ours": ours, "llama.cpp": llama, "unit": unit,
                     "ratio": ratio(ours, llama), "better": better, **(extra or {})})

    raw = results.setdefault("raw", {})
    mm_f16 = str(cache / MMPROJ_F16)
    q4km = str(cache / LLM_FILES["ours-Q4_K_M"])
    for t in threads:
        if "llm" in only:
            for src in [s.strip() for s in a.sources.split(",") if s.strip()]:
                for q in [q.strip() for q in a.quants.split(",") if q.strip()]:
                    label = f"{src}-{q}"
                    path = cache / LLM_FILES[label]
                    if not path.exists():
                        log(f"  (skipping {label}: {path} is missing)")
                        continue
                    bpt = gguf_summary(path)["decode_bytes_per_token"]
                    # bandwidth probed right before and right after this pair of runs: memory speed
                    # drifts with the host's load, and the fraction should compare like with like
                    bw_before = bandwidth(cache, [t])[t]
                    r = {e: run_worker({"task": "llm", "engine": e, "label": label, "model": str(path), "threads": t,
                                        "prompt_tokens": a.prompt_tokens, "decode_tokens": a.decode_tokens}, logdir)
                         for e in engines}
                    bw_after = bandwidth(cache, [t])[t]
                    bw_local = max(bw_before, bw_after)  # the conservative denominator
                    raw[f"llm {label} t{t}"] = r
                    o, l = r.get("ours", {}), r.get("llama.cpp", {})
                    add(f"prefill {a.prompt_tokens} tok, {label}", t, o.get("prefill_tps"), l.get("prefill_tps"),
                        "tok/s", "higher")
                    add(f"decode {a.decode_tokens} tok, {label}", t, o.get("decode_tps"), l.get("decode_tps"),
                        "tok/s", "higher",
                        {"same_last_argmax": (o.get("last_argmax") == l.get("last_argmax")) if o and l else None})
                    gbs = {e: (r[e]["decode_tps"] * bpt / 1e9 if "decode_tps" in r.get(e, {}) else None)
                           for e in ("ours", "llama.cpp")}
                    add(f"decode weight GB/s, {label}", t, gbs["ours"], gbs["llama.cpp"], "GB/s", "higher",
                        {"bytes_per_token": bpt,
                         "bandwidth_around_GBps": {"before": bw_before, "after": bw_after},
                         "fraction_of_bandwidth": {e: (v / bw_local if v else None) for e, v in gbs.items()},
                         "fraction_of_start_bandwidth": {e: (v / bw[t] if v else None) for e, v in gbs.items()}})
                    add(f"peak RSS llm-only {label}", t, o.get("peak_rss_mb"), l.get("peak_rss_mb"), "MB", "lower")
        if "vision" in only:
            for mm_name, mm in (("f16", MMPROJ_F16), ("q8_0", MMPROJ_Q8)):
                if mm_name not in a.mmprojs.split(","):
                    continue
                if not (cache / mm).exists():
                    log(f"  (skipping mmproj {mm_name}: missing)")
                    continue
                base = {"task": "vision", "threads": t, "mmproj": str(cache / mm), "model": q4km, "reps": a.reps}
                llama = (run_worker(dict(base, engine="llama.cpp", label=f"mmproj-{mm_name}"), logdir)
                         if "llama.cpp" in engines else {})
                raw[f"vision {mm_name} t{t} llama.cpp"] = llama
                for w in (vision_weights if mm_name == "f16" else ["native"]):
                    o = (run_worker(dict(base, engine="ours", label=f"mmproj-{mm_name}-{w}", weights=w), logdir)
                         if "ours" in engines else {})
                    raw[f"vision {mm_name} t{t} ours {w}"] = o
                    add(f"vision 448x448 slice, mmproj {mm_name}, ours {w}", t, o.get("ms_per_slice"),
                        llama.get("ms_per_slice"), "ms", "lower")
        if "ttft" in only or ("rss" in only and t == max(threads)):
            base = {"task": "ttft", "threads": t, "model": q4km, "mmproj": mm_f16}
            l = run_worker(dict(base, engine="llama.cpp", label="Q4_K_M+f16"), logdir) if "llama.cpp" in engines else {}
            raw[f"ttft t{t} llama.cpp"] = l
            # RSS is measured on the faithful default (native: the f16 weights mapped, no copy).
            for w in (vision_weights if "ttft" in only else ["native"]):
                o = (run_worker(dict(base, engine="ours", label=f"Q4_K_M+f16-{w}", weights=w), logdir)
                     if "ours" in engines else {})
                raw[f"ttft t{t} ours {w}"] = o
                if "ttft" in only:
                    add(f"TTFT 1344x1344 + question, ours {w}", t, o.get("ttft_s"), l.get("ttft_s"), "s", "lower",
                        {"n_pos": {"ours": o.get("n_pos"), "llama.cpp": l.get("n_pos")},
                         "n_slices": {"ours": o.get("n_slices"), "llama.cpp": l.get("n_slices")}})
                    add("  of which vision encode", t, o.get("encode_s"), l.get("encode_s"), "s", "lower")
                    add("  of which prefill", t, o.get("prefill_s"), l.get("prefill_s"), "s", "lower")
                if "rss" in only and t == max(threads) and w == "native":
                    add("peak RSS Q4_K_M+mmproj f16, n_ctx 4096", t, o.get("peak_rss_mb"), l.get("peak_rss_mb"),
                        "MB", "lower")
    results["load_at_end"] = loadavg()
    results["elapsed_s"] = time.time() - t_start

    # table
    print(f"\n{results['command']}   ({results['date_utc']} UTC, {os.cpu_count()} cores, "
          f"load {results['load_at_start']} -> {results['load_at_end']})")
    print("read bandwidth: " + ", ".join(f"{t} thr {v:.2f} GB/s" for t, v in bw.items())
          + "  [bench/stream_sum.cpp, sum over 2 GiB, best of 5]")
    w = max([len(r["metric"]) for r in rows] + [10])
    print(f"{'metric':{w}s}  thr  {'ours':>9s}  {'llama.cpp':>9s}  {'ours/llama':>10s}  unit   better")
    for r in rows:
        print(f"{r['metric']:{w}s}  {r['threads']:3d}  {fmt(r['ours']):>9s}  {fmt(r['llama.cpp']):>9s}  "
              f"{fmt(r['ratio']):>10s}  {r['unit']:5s}  {r['better']}")
        if "fraction_of_bandwidth" in r:
            fb = r["fraction_of_bandwidth"]
            ba = r["bandwidth_around_GBps"]
            print(f"{'':{w}s}       of bandwidth: ours {fmt(fb['ours'])}, llama.cpp {fmt(fb['llama.cpp'])}"
                  f"  ({r['bytes_per_token'] / 1e9:.2f} GB weights/token; bandwidth probed around the runs "
                  f"{ba['before']:.1f} / {ba['after']:.1f} GB/s)")
        if r.get("same_last_argmax") is not None:
            print(f"{'':{w}s}       both engines' argmax after the last decode step agree: {r['same_last_argmax']}")
        if "n_pos" in r:
            print(f"{'':{w}s}       positions {r['n_pos']}, image chunks {r['n_slices']}")
    for q, c in results.get("files", {}).items():
        print(f"files {q}: ours {c['ours_bytes'] / 1e9:.3f} GB, llama.cpp-quantized {c['llama_bytes'] / 1e9:.3f} GB, "
              f"{c['type_mismatches']} tensors with a different type {c['examples'] or ''}")
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
