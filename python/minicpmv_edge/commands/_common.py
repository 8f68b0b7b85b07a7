"""Options shared by the verbs that load a model."""
import sys


def add_model_args(p, mmproj=True):
    p.add_argument("-m", "--model", required=True,
                   help="language-model GGUF, or a directory holding it and an mmproj GGUF")
    if mmproj:
        p.add_argument("--mmproj", help="vision tower + resampler GGUF (llama.cpp's mmproj layout)")
    p.add_argument("-t", "--threads", type=int, default=None, help="threads (default: all cores)")
    p.add_argument("-c", "--ctx", type=int, default=4096, help="context size in tokens (default 4096)")
    p.add_argument("-v", "--verbose", action="store_true", help="print timings to stderr")


def add_sampling_args(p, chat=True):
    g = p.add_argument_group("generation")
    g.add_argument("-n", "--max-new-tokens", type=int, default=2048 if chat else 256)
    g.add_argument("--temp", type=float, default=None, help="temperature (reference default 0.7)")
    g.add_argument("--top-k", type=int, default=None, help="top-k (reference default 100)")
    g.add_argument("--top-p", type=float, default=None, help="top-p (reference default 0.8)")
    g.add_argument("--min-p", type=float, default=0.0)
    g.add_argument("--repeat-penalty", type=float, default=None,
                   help="repetition penalty over the generated tokens (reference: 1.05 sampling, 1.2 beams)")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--greedy", action="store_true", help="no sampling: argmax (num_beams=1)")
    if chat:
        g.add_argument("--beams", type=int, default=None,
                       help="no sampling: beam search with this many beams (the reference's sampling=False uses 3)")
        g.add_argument("--max-slice-nums", type=int, default=None, help="slices per image (default 9; video 2)")
        g.add_argument("--no-image-id", action="store_true", help="do not tag images with <image_id>k</image_id>")
        g.add_argument("--system", default=None, help="system prompt (default: the template's)")
    g.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")


def chat_kwargs(args):
    kw = dict(max_new_tokens=args.max_new_tokens, temperature=args.temp, top_k=args.top_k, top_p=args.top_p,
              min_p=args.min_p, repetition_penalty=args.repeat_penalty, seed=args.seed, stop=args.stop or None,
              max_slice_nums=args.max_slice_nums, system_prompt=args.system)
    if args.no_image_id:
        kw["use_image_id"] = False
    if args.greedy or args.beams:
        kw["sampling"] = False
        kw["num_beams"] = 1 if args.greedy else args.beams
    return kw


def load_model(args, need_vision=False):
    from ..api import MiniCPMV

    m = MiniCPMV(args.model, getattr(args, "mmproj", None), n_threads=args.threads, n_ctx=args.ctx,
                 verbose=args.verbose)
    if need_vision and m.vision is None:
        raise ValueError("images or video need the mmproj file: pass --mmproj FILE "
                         "(or -m a directory holding the model and mmproj GGUFs)")
    return m


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def progress_printer(what):
    def cb(done, total):
        end = "\n" if done == total else ""
        print(f"\r{what} {done}/{total}", end=end, file=sys.stderr, flush=True)
    return cb
