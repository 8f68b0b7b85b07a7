"""minicpmv-edge generate -m FILE -p TEXT: plain completion with a language-model GGUF."""
import sys

from ._common import add_model_args, add_sampling_args, load_model, log, warn_if_cut


def add_arguments(p):
    add_model_args(p, mmproj=False)
    p.add_argument("-p", "--prompt", required=True, help="prompt text (special tokens are honoured)")
    add_sampling_args(p, chat=False)


def generate_kwargs(args):
    """The CLI options as MiniCPMV.generate() keywords; options not given keep the API's defaults."""
    kw = dict(max_new_tokens=args.max_new_tokens, seed=args.seed, greedy=args.greedy, stop=args.stop or None)
    for k, v in (("temperature", args.temp), ("top_k", args.top_k), ("top_p", args.top_p),
                 ("min_p", args.min_p), ("repetition_penalty", args.repeat_penalty)):
        if v is not None:
            kw[k] = v
    return kw


def run(args):
    m = load_model(args)
    for piece in m.generate(args.prompt, stream=True, **generate_kwargs(args)):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
    warn_if_cut(m)
    if args.verbose:
        log(m.last_stats.line())
    return 0
