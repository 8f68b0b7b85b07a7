"""minicpmv-edge demo: the whole pipeline on a small random-weight model, with no download.

It builds (once, cached) a small MiniCPM-V 2.6 checkpoint with random weights in the real
Hugging Face layout, converts it with our converter to the real GGUF files (Q4_K_M language
model in llama.cpp's qwen2 layout, f16 mmproj in its clip layout), draws a receipt-like test
image, and asks a question about it: slicing, vision tower, resampler, prompt, prefill, decode.
The weights are random, so the answer is gibberish; the timings are real.
"""
import os
import sys
import time
from pathlib import Path

from ._common import log, non_negative_int, positive_int

DEMO_VERSION = "v1"  # bump when the demo model's shapes or file formats change


def add_arguments(p):
    p.add_argument("--cache-dir", default=None,
                   help="where the demo model is kept (default: $XDG_CACHE_HOME/minicpmv-edge or ~/.cache/minicpmv-edge)")
    p.add_argument("--rebuild", action="store_true", help="rebuild the demo model even if it is cached")
    p.add_argument("-t", "--threads", type=positive_int, default=None, help="threads (default: all cores)")
    p.add_argument("-n", "--max-new-tokens", type=non_negative_int, default=32)
    p.add_argument("--image", default=None, help="use this image instead of the generated one")
    p.add_argument("-p", "--prompt", default="What is the total on this receipt?")


def cache_root(arg):
    if arg:
        return Path(arg).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "minicpmv-edge"


def build_demo_model(root: Path, threads=None, rebuild=False):
    """Returns the directory holding ggml-model-Q4_K_M.gguf and mmproj-model-f16.gguf."""
    from ..convert.converter import convert_checkpoint
    from ..convert.random_checkpoint import make_random_checkpoint

    out = root / f"demo-{DEMO_VERSION}"
    llm, mm = out / "ggml-model-Q4_K_M.gguf", out / "mmproj-model-f16.gguf"
    if llm.exists() and mm.exists() and not rebuild:
        return out
    import shutil

    # Build in a private directory and rename it into place at the end, so that an interrupted
    # build or two demos started at once never leave (or read) half-written files.
    work = root / f".demo-{DEMO_VERSION}-build-{os.getpid()}"
    hf, gguf_dir = work / "hf", work / f"demo-{DEMO_VERSION}"
    log(f"building the demo model in {out} (once; random weights) ...")
    t0 = time.perf_counter()
    try:
        make_random_checkpoint(hf, vocab="synthetic", hidden=512, layers=4, heads=4, kv_heads=2, ffn=1536,
                               vision_hidden=288, vision_layers=4, vision_heads=4, vision_ffn=1152, seed=2024)
        gguf_dir.mkdir(parents=True, exist_ok=True)
        convert_checkpoint(hf, gguf_dir, quant="q4_k_m", mmproj_type="f16", force=True, threads=threads or 0,
                           progress=True)
        if out.exists():
            if not rebuild and llm.exists() and mm.exists():  # another demo finished first: use its files
                return out
            shutil.rmtree(out)
        os.replace(gguf_dir, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"built in {time.perf_counter() - t0:.1f} s")
    return out


def receipt_image(width=1000, height=1400):
    """A receipt-like test image: text lines, a table, a logo."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), (250, 248, 240))
    d = ImageDraw.Draw(img)
    d.ellipse((60, 50, 200, 190), fill=(200, 60, 40))
    d.text((240, 80), "MINICPMV EDGE CAFE", fill=(20, 20, 20))
    d.text((240, 120), "12 Harbour Road - 2026-11-25 09:41", fill=(60, 60, 60))
    items = [("Flat white", "4.20"), ("Croissant", "3.10"), ("Orange juice", "3.80"), ("Bagel, cream cheese", "5.40")]
    y = 260
    for name, price in items:
        d.text((80, y), name, fill=(10, 10, 10))
        d.text((width - 220, y), price, fill=(10, 10, 10))
        d.line((80, y + 40, width - 80, y + 40), fill=(200, 200, 200), width=2)
        y += 80
    d.text((80, y + 40), "TOTAL", fill=(0, 0, 0))
    d.text((width - 220, y + 40), "16.50", fill=(0, 0, 0))
    for i in range(40):  # a barcode
        d.rectangle((100 + i * 20, height - 260, 100 + i * 20 + (6 if i % 3 else 12), height - 120), fill=(0, 0, 0))
    return img


def run(args):
    from ..api import MiniCPMV

    root = cache_root(args.cache_dir)
    model_dir = build_demo_model(root, args.threads, args.rebuild)
    print("NOTE: this demo model has RANDOM weights: the answer below is meaningless text.\n"
          "      It shows the pipeline and its speed; see README.md for real weights.", file=sys.stderr)
    t0 = time.perf_counter()
    m = MiniCPMV(str(model_dir), n_threads=args.threads, n_ctx=4096, vision_weights="auto")
    load_ms = (time.perf_counter() - t0) * 1e3
    # A path must be wrapped as an image part: a bare string in a message's content is text.
    image = {"type": "image", "image": args.image} if args.image else receipt_image()
    size = None if args.image else image.size
    print(f"model: {model_dir}  (loaded in {load_ms:.0f} ms)")
    print(f"image: {args.image or 'generated receipt %dx%d' % size}")
    print(f"question: {args.prompt}")
    print("answer: ", end="", flush=True)
    for piece in m.chat([{"role": "user", "content": [image, args.prompt]}], stream=True,
                        max_new_tokens=args.max_new_tokens, seed=0):
        sys.stdout.write(piece)
        sys.stdout.flush()
    print()
    s = m.last_stats
    print(f"timings: image {s.n_slices} slices encoded in {s.encode_ms:.0f} ms "
          f"({s.encode_ms / max(1, s.n_slices):.0f} ms/slice); prefill {s.n_prefill} tokens in {s.prefill_ms:.0f} ms "
          f"({s.prefill_tps:.1f} tok/s); decode {s.n_generated} tokens at {s.decode_tps:.1f} tok/s; "
          f"time to first token {s.encode_ms + s.prefill_ms:.0f} ms")
    from .. import _core

    info = _core.isa_info() if hasattr(_core, "isa_info") else {}
    if info:
        print(f"kernels: {info.get('active')} (this CPU: {', '.join(info.get('available', []))})")
    return 0
