"""The `minicpmv-edge` command line, driven as a user drives it: through a subprocess.

Every verb runs on a tiny random model (synthetic vocabulary, converted by our converter). The
answers are checked against the Python API (MiniCPMV) called in this process with the same
settings: the CLI must be a faithful front end of the API (the API itself is tested against
transformers in test_chat.py / test_qwen2.py). Greedy decoding on the same files and threads is
deterministic, so the comparison is exact. Video frame counts are checked against the official
MiniCPM-V 2.6 sampling rule (every round(fps)-th frame), computed here independently.
Bad inputs must give one clear line on stderr and exit code 1 (argparse usage errors: 2), never a
Python traceback.
"""
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import require

PROMPT = "What is in the image?"


# ----------------------------------------------------------------------------- helpers
def _env(**extra):
    env = dict(os.environ)
    env.pop("MINICPMV_EDGE_DEBUG", None)
    env["PYTHONUTF8"] = "1"
    env.update(extra)
    return env


def cli(*args, stdin=None, env=None, timeout=300):
    """Run `python -m minicpmv_edge ARGS`; stdout/stderr decoded as UTF-8 with no newline
    translation (model text may hold a bare \\r)."""
    r = subprocess.run([sys.executable, "-m", "minicpmv_edge", *map(str, args)],
                       input=stdin.encode() if isinstance(stdin, str) else stdin,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env or _env(), timeout=timeout)
    r.out = r.stdout.decode("utf-8")
    r.err = r.stderr.decode("utf-8")
    return r


def assert_ok(r):
    assert r.returncode == 0, f"exit {r.returncode}\nstderr:\n{r.err}"
    assert "Traceback" not in r.err, r.err


def assert_clean_error(r, *needles, code=1):
    """One line on stderr, 'minicpmv-edge VERB: error: ...', exit code 1; no traceback."""
    assert r.returncode == code, f"exit {r.returncode}\nstdout:\n{r.out}\nstderr:\n{r.err}"
    assert "Traceback" not in r.err, r.err
    lines = [l for l in r.err.splitlines() if l.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{r.err}"
    assert lines[0].startswith("minicpmv-edge ") and ": error: " in lines[0], lines[0]
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"
    assert " object at 0x" not in lines[0], f"a Python repr leaked into the message: {lines[0]!r}"
    assert r.out == "", f"stdout should be empty on error, got {r.out!r}"


def answer_of(r):
    """The answer printed by run/generate: stdout minus the final newline."""
    assert r.out.endswith("\n"), repr(r.out)
    return r.out[:-1]


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def hf_dir(work):
    from minicpmv_edge.convert.random_checkpoint import make_random_checkpoint

    # hidden 128: one resampler head of 128, as the real embed_dim // 128 rule; tiny everything else.
    return make_random_checkpoint(work / "hf", vocab="synthetic", hidden=128, layers=2, heads=4, kv_heads=2,
                                  ffn=256, vision_hidden=32, vision_layers=1, vision_heads=4, vision_ffn=64,
                                  seed=11)


@pytest.fixture(scope="module")
def model_dir(hf_dir, work):
    """ggml-model-f32.gguf + mmproj-model-f32.gguf, written by `minicpmv-edge convert`."""
    out = work / "gguf"
    r = cli("convert", hf_dir, "-o", out, "--quant", "f32", "--mmproj-type", "f32", "--no-progress")
    assert_ok(r)
    written = [Path(l) for l in r.out.splitlines()]
    assert sorted(p.name for p in written) == ["ggml-model-f32.gguf", "mmproj-model-f32.gguf"]
    return out


@pytest.fixture(scope="module")
def llm_file(model_dir):
    return model_dir / "ggml-model-f32.gguf"


@pytest.fixture(scope="module")
def mmproj_file(model_dir):
    return model_dir / "mmproj-model-f32.gguf"


@pytest.fixture(scope="module")
def api(model_dir):
    """The Python API on the same files, with the CLI's defaults (n_ctx 4096, all cores)."""
    from minicpmv_edge import MiniCPMV

    return MiniCPMV(str(model_dir), n_ctx=4096)


@pytest.fixture(scope="module")
def media(work):
    from PIL import Image

    rng = np.random.RandomState(0)
    d = work / "media"
    d.mkdir()
    Image.fromarray((rng.rand(120, 160, 3) * 255).astype(np.uint8)).save(d / "a.png")
    Image.fromarray((rng.rand(90, 70, 3) * 255).astype(np.uint8)).save(d / "b.jpg", quality=95)
    (d / "garbage.png").write_bytes(b"this is not a PNG file\x00\x01" * 20)
    return d


@pytest.fixture(scope="module")
def videos(media):
    try:
        import cv2
    except ImportError:
        cv2 = None
    require(cv2 is not None, "OpenCV (pip install opencv-python-headless) for the video tests")
    path, empty = media / "clip.avi", media / "empty.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 4.0, (64, 48))
    assert w.isOpened()
    for i in range(10):
        w.write(np.full((48, 64, 3), (i * 25, 255 - i * 20, 40), np.uint8))
    w.release()
    w = cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 4.0, (64, 48))
    w.release()
    # Independent expectation (official example: one frame every round(fps) frames), from what
    # OpenCV reports for the written file.
    cap = cv2.VideoCapture(str(path))
    n, fps = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    assert (n, round(fps)) == (10, 4)
    return path, empty, len(range(0, n, round(fps)))


# ----------------------------------------------------------------------------- basics
def test_version_help_and_usage_errors():
    from minicpmv_edge import __version__

    r = cli("--version")
    assert_ok(r)
    assert r.out.strip() == f"minicpmv-edge {__version__}"
    for verb in ("demo", "chat", "run", "generate", "convert", "inspect"):
        r = cli(verb, "--help")
        assert_ok(r)
        assert r.out.startswith(f"usage: minicpmv-edge {verb}"), r.out[:200]
    r = cli()  # no verb: the overview, exit 2 (usage)
    assert r.returncode == 2 and "demo" in r.out and "inspect" in r.out
    # Bad options (argparse usage errors): exit 2, the last stderr line says what is wrong.
    # An unknown verb: one line naming it, the nearest verb and the list; exit 1.
    for word, needle in (("frob", "the verbs are demo, chat, run"), ("rn", "did you mean 'run'?")):
        r = cli(word, "-m", "x")
        assert r.returncode == 1 and r.out == "" and "Traceback" not in r.err, r.err
        assert r.err.count("\n") == 1 and f"unknown verb '{word}'" in r.err and needle in r.err, r.err
    for args, needle in ((["run", "-m", "x.gguf"], "the following arguments are required: -p/--prompt"),
                         (["run", "-m", "x.gguf", "-p", "hi", "-t", "0"], "-t/--threads: 0 is out of range"),
                         (["run", "-m", "x.gguf", "-p", "hi", "--top-p", "2"], "--top-p: 2 is out of range"),
                         (["generate", "-m", "x.gguf", "-p", "hi", "-n", "many"], "expected an integer")):
        r = cli(*args)
        assert r.returncode == 2, (args, r.err)
        assert "Traceback" not in r.err
        assert needle in r.err.strip().splitlines()[-1], r.err


def test_console_script():
    exe = shutil.which("minicpmv-edge") or str(Path(sys.executable).parent / "minicpmv-edge")
    require(os.path.exists(exe), "the minicpmv-edge console script (pip install -e .)")
    r = subprocess.run([exe, "--version"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("minicpmv-edge "), r.stderr


# ----------------------------------------------------------------------------- demo
def test_demo_builds_once_then_reuses_cache(tmp_path, media):
    cache = tmp_path / "cache"
    t0 = time.perf_counter()
    r1 = cli("demo", "--cache-dir", cache, "-n", "8")
    t_first = time.perf_counter() - t0
    assert_ok(r1)
    assert "building the demo model" in r1.err
    assert "RANDOM weights" in r1.err
    lines = r1.out.splitlines()
    assert any(l.startswith("answer: ") for l in lines), r1.out
    timing = [l for l in lines if l.startswith("timings: ")]
    assert len(timing) == 1 and "slices encoded" in timing[0] and "tok/s" in timing[0], r1.out
    assert "generated receipt 1000x1400" in r1.out

    files = sorted(p for p in cache.rglob("*") if p.is_file())
    assert [p.name for p in files] == ["ggml-model-Q4_K_M.gguf", "mmproj-model-f16.gguf"], files
    assert sum(p.stat().st_size for p in files) < 64 << 20, "the demo model should stay small"
    stamps = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in files}

    # Second run: the cached files are used as they are (no build step, same inodes and times).
    t0 = time.perf_counter()
    r2 = cli("demo", "--cache-dir", cache, "-n", "4", "--image", media / "a.png", "-p", "Describe it.")
    t_second = time.perf_counter() - t0
    assert_ok(r2)
    assert "building" not in r2.err and "RANDOM weights" in r2.err
    assert stamps == {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in files}
    assert sorted(p for p in cache.rglob("*") if p.is_file()) == files  # no leftover build dirs
    assert "answer: " in r2.out and "timings: image 1 slices" in r2.out, r2.out
    assert t_second < t_first, (t_first, t_second)


# ----------------------------------------------------------------------------- run
def _api_chat(api, content, **kw):
    api.reset()
    return api.chat([{"role": "user", "content": content}], sampling=False, num_beams=kw.pop("num_beams", 1),
                    **kw)


def test_run_image_greedy_matches_api(model_dir, media, api):
    img = media / "a.png"
    r1 = cli("run", "-m", model_dir, "-p", PROMPT, "--image", img, "--greedy", "-n", "8")
    assert_ok(r1)
    assert r1.err == "", f"run without -v should be silent on stderr, got {r1.err!r}"
    r2 = cli("run", "-m", model_dir, "-p", PROMPT, "--image", img, "--greedy", "-n", "8", "-v")
    assert_ok(r2)
    assert r1.out == r2.out, "greedy decoding must be deterministic"
    assert "images 1 (1 slices)" in r2.err, r2.err  # the image really went through the vision tower
    expected = _api_chat(api, [{"type": "image", "image": str(img)}, PROMPT], max_new_tokens=8)
    assert answer_of(r1) == expected
    assert api.last_stats.n_generated > 0


def test_run_several_images_and_no_stream(model_dir, media, api):
    a, b = media / "a.png", media / "b.jpg"
    r = cli("run", "-m", model_dir, "-p", "Compare them.", "--image", a, "--image", b, "--greedy", "-n", "6",
            "-v", "--no-stream")
    assert_ok(r)
    assert "images 2 (2 slices)" in r.err, r.err
    expected = _api_chat(api, [{"type": "image", "image": str(a)}, {"type": "image", "image": str(b)},
                               "Compare them."], max_new_tokens=6)
    assert answer_of(r) == expected


def test_run_sampling_seed_and_beams(model_dir, api):
    args = ("run", "-m", model_dir, "-p", "Tell me a story.", "-n", "8")
    r1, r2 = cli(*args, "--seed", "7"), cli(*args, "--seed", "7")
    assert_ok(r1)
    assert r1.out == r2.out, "same seed, same answer"
    api.reset()
    expected = api.chat([{"role": "user", "content": "Tell me a story."}], max_new_tokens=8, seed=7)
    assert answer_of(r1) == expected  # the reference sampling defaults are the API's
    r = cli(*args, "--beams", "2")
    assert_ok(r)
    assert answer_of(r) == _api_chat(api, ["Tell me a story."], max_new_tokens=8, num_beams=2)


def test_run_video(model_dir, videos, api):
    clip, _, n_frames = videos
    r = cli("run", "-m", model_dir, "-p", "What happens?", "--video", clip, "--greedy", "-n", "6", "-v")
    assert_ok(r)
    # 64x48 frames are one slice each (video uses max_slice_nums 2; a small frame is not sliced).
    assert f"images {n_frames} ({n_frames} slices)" in r.err, r.err
    expected = _api_chat(api, [{"type": "video", "video": str(clip)}, "What happens?"], max_new_tokens=6)
    assert answer_of(r) == expected


def test_model_directory_choice(hf_dir, model_dir, work):
    d = work / "multi"
    d.mkdir()
    for p in model_dir.iterdir():
        os.link(p, d / p.name)
    r = cli("convert", hf_dir, "-o", d, "--quant", "q4_k_m", "--skip-mmproj", "--no-progress")
    assert_ok(r)
    r = cli("run", "-m", d, "-p", "hi", "--greedy", "-n", "2", "-v")
    assert_ok(r)
    assert f"model: {d / 'ggml-model-Q4_K_M.gguf'}" in r.err.splitlines(), r.err
    assert f"mmproj: {d / 'mmproj-model-f32.gguf'}" in r.err.splitlines(), r.err
    # Two model files and none of them Q4_K_M: ambiguous, say so.
    (d / "ggml-model-Q4_K_M.gguf").rename(d / "ggml-model-Q8_0.gguf")
    assert_clean_error(cli("run", "-m", d, "-p", "hi"), "several model files", "ggml-model-f32.gguf",
                       "ggml-model-Q8_0.gguf")


# ----------------------------------------------------------------------------- generate
def test_generate_matches_api(llm_file):
    from minicpmv_edge import MiniCPMV

    m = MiniCPMV(str(llm_file))
    r = cli("generate", "-m", llm_file, "-p", "Once upon a time", "--greedy", "-n", "8")
    assert_ok(r)
    assert r.err == ""
    assert answer_of(r) == m.generate("Once upon a time", greedy=True, max_new_tokens=8)
    # Sampling with only a seed given: the CLI must keep the API's generate() defaults.
    r = cli("generate", "-m", llm_file, "-p", "Once upon a time", "--seed", "3", "-n", "8")
    assert_ok(r)
    assert answer_of(r) == m.generate("Once upon a time", seed=3, max_new_tokens=8)
    # A context exactly as long as the prompt: the answer is cut after one token, and the CLI says so.
    n = len(m.tokenize("Once upon a time"))
    short = MiniCPMV(str(llm_file), n_ctx=n)
    expected = short.generate("Once upon a time", greedy=True, max_new_tokens=50)
    assert short.last_stats.finish_reason == "context"
    r = cli("generate", "-m", llm_file, "-p", "Once upon a time", "--greedy", "-n", "50", "-c", n)
    assert_ok(r)
    assert answer_of(r) == expected
    assert "warning: the answer was cut short" in r.err and "--ctx" in r.err, r.err


# ----------------------------------------------------------------------------- chat
CHAT_SCRIPT = """/image {img}
What is in the image?
And the colour?
/reset
first line \\
second line
\"\"\"
block one
block two
\"\"\"
/help
/bogus
/image {missing}
/quit
this line is never read
"""


def test_chat_from_stdin_matches_api(model_dir, media, api):
    img = media / "a.png"
    r = cli("chat", "-m", model_dir, "--greedy", "-n", "6",
            stdin=CHAT_SCRIPT.format(img=img, missing=media / "nothere.png"))
    assert_ok(r)
    for needle in ("(image attached to your next message", "(new conversation)", "commands:",
                   "unknown command /bogus", f"no such file: {media / 'nothere.png'}"):
        assert needle in r.err, (needle, r.err)

    def conv(turns):
        api.reset()
        history, answers = [], []
        for content in turns:
            history.append({"role": "user", "content": content})
            a = api.chat(history, sampling=False, num_beams=1, max_new_tokens=6)
            answers.append(a)
            history.append({"role": "assistant", "content": a.strip()})
        return answers

    expected = conv([[{"type": "image", "image": str(img)}, "What is in the image?"], ["And the colour?"]])
    # The backslash goes, the rest of the line (its space too) stays.
    expected += conv([["first line \nsecond line"], ["block one\nblock two"]])
    # stdin is not a terminal: no prompts on stdout, only the answers, one per line.
    assert r.out == "".join(a + "\n" for a in expected)


def test_chat_eof_and_errors_keep_going(model_dir, media, api):
    script = f"/image {media / 'garbage.png'}\nhi\nhello\n"  # no /quit: EOF ends the chat
    r = cli("chat", "-m", model_dir, "--greedy", "-n", "4", stdin=script)
    assert_ok(r)
    assert "error: " in r.err and "garbage.png" in r.err and "not a readable image" in r.err, r.err
    api.reset()
    expected = api.chat([{"role": "user", "content": "hello"}], sampling=False, num_beams=1, max_new_tokens=4)
    assert r.out == expected + "\n"
    # A message that does not fit the context: an error, then the chat goes on after /reset.
    script = "hello\r\n" + "more words " * 40 + "\r\n/reset\r\nhi\r\n"  # \r\n: a script from Windows
    r = cli("chat", "-m", model_dir, "--greedy", "-n", "4", "-c", "60", stdin=script)
    assert_ok(r)
    assert "error: the conversation needs" in r.err and "/reset starts a new conversation" in r.err, r.err
    api.reset()
    expected = api.chat([{"role": "user", "content": "hi"}], sampling=False, num_beams=1, max_new_tokens=4)
    assert r.out.endswith("\n" + expected + "\n"), (r.out, expected)
    # Text-only model and empty input.
    r = cli("chat", "-m", model_dir / "ggml-model-f32.gguf", stdin="")
    assert_ok(r)
    assert "text only" in r.err and r.out == ""


def test_chat_first_image_option_and_video_command(model_dir, media, videos, api):
    clip = videos[0]
    r = cli("chat", "-m", model_dir, "--image", media / "b.jpg", "--greedy", "-n", "4",
            stdin=f"Describe it.\n/video {clip}\nWhat happens?\n")
    assert_ok(r)
    assert "(video attached to your next message" in r.err, r.err
    api.reset()
    msgs = [{"role": "user", "content": [{"type": "image", "image": str(media / "b.jpg")}, "Describe it."]}]
    a1 = api.chat(msgs, sampling=False, num_beams=1, max_new_tokens=4)
    msgs += [{"role": "assistant", "content": a1.strip()},
             {"role": "user", "content": [{"type": "video", "video": str(clip)}, "What happens?"]}]
    a2 = api.chat(msgs, sampling=False, num_beams=1, max_new_tokens=4)
    assert r.out == a1 + "\n" + a2 + "\n"


def test_chat_on_a_terminal(model_dir, api, tmp_path):
    """A pseudo-terminal switches the reader to prompt_toolkit: type a line, then Ctrl-D."""
    pty = pytest.importorskip("pty")
    api.reset()
    expected = api.chat([{"role": "user", "content": "hello"}], sampling=False, num_beams=1, max_new_tokens=4)
    env = _env(TERM="xterm-256color", HOME=str(tmp_path))  # HOME: the history file goes there
    pid, fd = pty.fork()
    if pid == 0:  # child
        try:
            os.execve(sys.executable, [sys.executable, "-m", "minicpmv_edge", "chat", "-m", str(model_dir),
                                       "--greedy", "-n", "4"], env)
        finally:
            os._exit(127)
    buf = bytearray()

    def read_until(pred, timeout):
        end = time.time() + timeout
        while time.time() < end and not pred():
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    return
                if not data:
                    return
                buf.extend(data)

    try:
        read_until(lambda: b">>>" in buf, 60)
        assert b">>>" in buf, bytes(buf)
        os.write(fd, b"hello\r")
        want = expected.replace("\n", "\r\n").encode()
        read_until(lambda: want + b"\r\n" in buf, 60)
        assert want + b"\r\n" in buf, (want, bytes(buf))
        n = buf.count(b">>>")
        read_until(lambda: buf.count(b">>>") > n, 30)  # the next prompt
        os.write(fd, b"\x04")  # Ctrl-D
        read_until(lambda: False, 5)
    finally:
        for _ in range(100):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail(f"chat did not exit on Ctrl-D; output: {bytes(buf)!r}")
        os.close(fd)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (status, bytes(buf))
    assert b"Traceback" not in buf
    assert (tmp_path / ".minicpmv_edge_history").read_text().count("hello") == 1


def test_chat_typed_on_a_terminal_answers_to_a_file(model_dir, api):
    """`chat > answers.txt` at a terminal: the prompts go to stderr, stdout holds only the answers."""
    import pty

    api.reset()
    expected = api.chat([{"role": "user", "content": "hello"}], sampling=False, num_beams=1, max_new_tokens=4)
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen([sys.executable, "-m", "minicpmv_edge", "chat", "-m", str(model_dir), "--greedy",
                              "-n", "4"], stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
        os.write(master, b"hello\n/quit\n")
        out, err = p.communicate(timeout=120)
    finally:
        os.close(master)
        os.close(slave)
    assert p.returncode == 0, err.decode()
    assert out.decode() == expected + "\n"
    assert err.decode().count(">>> ") == 2 and "Traceback" not in err.decode()


# ----------------------------------------------------------------------------- inspect, convert
def test_inspect_smoke(llm_file):
    import gguf
    r = cli("inspect", llm_file)
    assert_ok(r)
    reader = gguf.GGUFReader(str(llm_file))  # independent reader: gguf-py
    assert "architecture  qwen2" in r.out
    assert f"tensors       {len(reader.tensors)} " in r.out
    assert all(t.name in r.out for t in reader.tensors)


def test_convert_refuses_to_overwrite(hf_dir, model_dir):
    target = model_dir / "ggml-model-f32.gguf"
    stamp = target.stat().st_mtime_ns
    r = cli("convert", hf_dir, "-o", model_dir, "--quant", "f32", "--mmproj-type", "f32", "--no-progress")
    assert_clean_error(r, str(target), "--force")
    assert target.stat().st_mtime_ns == stamp


# ----------------------------------------------------------------------------- bad inputs
@pytest.fixture(scope="module")
def bad(work, llm_file, media):
    d = work / "bad"
    d.mkdir()
    (d / "empty").mkdir()
    (d / "empty" / "notes.txt").write_text("no gguf here")
    data = llm_file.read_bytes()
    (d / "truncated.gguf").write_bytes(data[: len(data) // 3])
    (d / "cut.png").write_bytes((media / "a.png").read_bytes()[:300])
    return d


def test_bad_inputs_give_one_clear_line(model_dir, llm_file, mmproj_file, media, videos, bad):
    _, empty_video, _ = videos
    q = ["-p", PROMPT, "-n", "2"]
    cases = [
        (["run", "-m", bad / "missing.gguf", *q], ["not found", "missing.gguf"]),
        (["run", "-m", bad / "empty", *q], ["no language-model .gguf", "empty"]),
        (["run", "-m", mmproj_file, *q], ["expected general.architecture qwen2, found clip",
                                          "mmproj-model-f32.gguf"]),
        (["run", "-m", bad / "truncated.gguf", *q], ["truncated.gguf", "truncated"]),
        (["run", "-m", llm_file, "--mmproj", llm_file, *q], ["ggml-model-f32.gguf", "clip"]),
        (["run", "-m", llm_file, "--mmproj", bad / "nope.gguf", *q], ["mmproj", "nope.gguf"]),
        (["run", "-m", media / "a.png", *q], ["a.png", "not a GGUF file"]),
        (["run", "-m", model_dir, "--image", bad / "missing.png", *q], ["not found", "missing.png"]),
        (["run", "-m", model_dir, "--image", media / "garbage.png", *q], ["garbage.png", "not a readable image"]),
        (["run", "-m", model_dir, "--image", bad / "cut.png", *q], ["cut.png", "truncated"]),
        (["run", "-m", model_dir, "--image", bad / "empty", *q], ["empty", "directory"]),
        (["run", "-m", model_dir, "--video", empty_video, *q], ["empty.avi", "no frames"]),
        (["run", "-m", model_dir, "--video", bad / "missing.mp4", *q], ["not found", "missing.mp4"]),
        (["run", "-m", llm_file, "--image", media / "a.png", *q], ["--mmproj"]),
        (["run", "-m", model_dir, "--image", media / "a.png", "-c", "64", *q], ["context", "--ctx"]),
        (["generate", "-m", llm_file, "-p", "a longer prompt than the context", "-c", "4"], ["context", "--ctx"]),
        (["chat", "-m", bad / "missing.gguf"], ["not found", "missing.gguf"]),
        (["inspect", bad / "truncated.gguf"], ["truncated.gguf"]),
        (["convert", bad / "empty", "-o", bad / "out", "--no-progress"], ["empty"]),
    ]
    for args, needles in cases:
        r = cli(*args, stdin="")
        try:
            assert_clean_error(r, *needles)
        except AssertionError as e:
            raise AssertionError(f"minicpmv-edge {' '.join(map(str, args))}: {e}") from None


def test_missing_optional_module_is_a_hint(model_dir, videos, tmp_path):
    """OpenCV absent: `--video` says what to install instead of a traceback."""
    clip, _, _ = videos
    fake = tmp_path / "nocv2"
    fake.mkdir()
    (fake / "cv2.py").write_text("raise ModuleNotFoundError(\"No module named 'cv2'\", name='cv2')\n")
    env = _env(PYTHONPATH=os.pathsep.join([str(fake), os.environ.get("PYTHONPATH", "")]))
    r = cli("run", "-m", model_dir, "--video", clip, "-p", "hi", "-n", "2", env=env)
    assert_clean_error(r, "opencv")
