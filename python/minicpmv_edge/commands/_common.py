"""Options shared by the verbs that load a model."""
import argparse
import sys


def _number(kind, lo=None, hi=None, lo_open=False, what=""):
    """An argparse type: `kind` within [lo, hi] (lo excluded when lo_open), with a clear message."""
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}")
        if v != v or (lo is not None and (v < lo or (lo_open and v == lo))) or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"{text} is out of range: {what}")
        return v
    return parse


positive_int = _number(int, 1, what="must be >= 1")
non_negative_int = _number(int, 0, what="must be >= 0")


def add_model_args(p, mmproj=True):
    p.add_argument("-m", "--model", required=True,
                   help="language-model GGUF, or a directory holding it and an mmproj GGUF "
                        "(several model files: the Q4_K_M one is used)")
    if mmproj:
        p.add_argument("--mmproj", help="vision tower + resampler GGUF (llama.cpp's mmproj layout)")
        p.add_argument("--vision-weights", choices=("native", "q8_0", "bf16", "auto"), default="native",
                       help="vision tower weights: as stored (native, closest to the reference), or "
                            "converted at load to int8 blocks (q8_0: faster, ~1.5%% error on the image "
                            "embeddings) or to bf16 (bf16: AVX512_BF16 CPUs, ~1.6x native, ~0.5%% error); "
                            "auto: bf16 where available, else q8_0 where the CPU has int8 dot products")
    p.add_argument("-t", "--threads", type=positive_int, default=None, help="threads (default: all cores)")
    p.add_argument("-c", "--ctx", type=positive_int, default=4096, help="context size in tokens (default 4096)")
    p.add_argument("-v", "--verbose", action="store_true", help="print the files used and timings to stderr")


def add_sampling_args(p, chat=True):
    # chat/run follow the reference chat() defaults; generate follows llama.cpp-like completion defaults.
    d = (dict(temp="0.7", top_k="100", top_p="0.8", min_p="0", rep="1.05 sampling, 1.2 beams") if chat else
         dict(temp="0.8", top_k="40", top_p="0.95", min_p="0.05", rep="1.0"))
    g = p.add_argument_group("generation")
    g.add_argument("-n", "--max-new-tokens", type=non_negative_int, default=2048 if chat else 256,
                   help=f"at most this many new tokens (default {2048 if chat else 256})")
    g.add_argument("--temp", type=_number(float, 0.0, what="must be >= 0"), default=None,
                   help=f"temperature (default {d['temp']})")
    g.add_argument("--top-k", type=non_negative_int, default=None, help=f"top-k, 0 = off (default {d['top_k']})")
    g.add_argument("--top-p", type=_number(float, 0.0, 1.0, lo_open=True, what="must be in (0, 1]"), default=None,
                   help=f"top-p (default {d['top_p']})")
    g.add_argument("--min-p", type=_number(float, 0.0, 1.0, what="must be in [0, 1]"), default=None,
                   help=f"min-p (default {d['min_p']})")
    g.add_argument("--repeat-penalty", type=_number(float, 0.0, lo_open=True, what="must be > 0"), default=None,
                   help=f"repetition penalty over the generated tokens (default {d['rep']})")
    g.add_argument("--seed", type=int, default=None, help="sampling seed (default: random)")
    g.add_argument("--greedy", action="store_true", help="no sampling: argmax (num_beams=1)")
    if chat:
        g.add_argument("--beams", type=positive_int, default=None,
                       help="no sampling: beam search with this many beams (the reference's sampling=False uses 3)")
        g.add_argument("--max-slice-nums", type=positive_int, default=None,
                       help="slices per image (default 9; video 2)")
        g.add_argument("--no-image-id", action="store_true", help="do not tag images with <image_id>k</image_id>")
        g.add_argument("--system", default=None, help="system prompt (default: the template's)")
    g.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")


def chat_kwargs(args):
    kw = dict(max_new_tokens=args.max_new_tokens, temperature=args.temp, top_k=args.top_k, top_p=args.top_p,
              min_p=0.0 if args.min_p is None else args.min_p, repetition_penalty=args.repeat_penalty,
              seed=args.seed, stop=args.stop or None, max_slice_nums=args.max_slice_nums,
              system_prompt=args.system)
    if args.no_image_id:
        kw["use_image_id"] = False
    if args.greedy or args.beams:
        kw["sampling"] = False
        kw["num_beams"] = 1 if args.greedy else args.beams
    return kw


def load_model(args, need_vision=False):
    from ..api import MiniCPMV

    m = MiniCPMV(args.model, getattr(args, "mmproj", None), n_threads=args.threads, n_ctx=args.ctx,
                 verbose=args.verbose, vision_weights=getattr(args, "vision_weights", "native"))
    if args.verbose:
        log(f"model: {m.model_path}" + (f"\nmmproj: {m.mmproj_path}" if m.mmproj_path else "\nmmproj: none (text only)"))
    if need_vision and m.vision is None:
        raise ValueError("images or video need the mmproj file: pass --mmproj FILE "
                         "(or -m a directory holding the model and mmproj GGUFs)")
    return m


def warn_if_cut(m):
    """Say so when the answer stopped because the context was full (the answer is cut short)."""
    if getattr(m.last_stats, "finish_reason", "") == "context":
        log(f"warning: the answer was cut short: the context ({m.n_ctx} tokens) is full; raise it with --ctx")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def progress_printer(what):
    # On a terminal one line counts up in place; in a log file only the final count is written.
    tty = sys.stderr.isatty()

    def cb(done, total):
        if tty:
            print(f"\r{what} {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)
        elif done == total:
            print(f"{what} {done}/{total}", file=sys.stderr, flush=True)
    return cb
