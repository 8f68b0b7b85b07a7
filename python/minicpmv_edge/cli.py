"""The `minicpmv-edge` command line. Each verb lives in minicpmv_edge/commands/<verb>.py with
two functions: `add_arguments(parser)` and `run(args) -> int`; it is imported only when used."""
import argparse
import importlib
import sys

# verb -> one-line help. The order is the order of `minicpmv-edge --help`.
VERBS = {
    "demo": "build a small random-weight model (cached) and run an image question end to end",
    "chat": "interactive chat with a model (text, images, video)",
    "run": "answer one prompt (with images or a video) and exit; text on stdout, logs on stderr",
    "generate": "generate text from a prompt with a language-model GGUF",
    "convert": "convert a Hugging Face MiniCPM-V 2.6 checkpoint to GGUF (LLM + mmproj)",
    "inspect": "print a GGUF file's architecture, metadata and tensor table",
}


def build_parser():
    parser = argparse.ArgumentParser(prog="minicpmv-edge", description="minicpmv-edge: run MiniCPM-V 2.6 on this device")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"minicpmv-edge {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, help_text in VERBS.items():
        p = sub.add_parser(verb, help=help_text, description=help_text)
        p.set_defaults(_verb=verb)
        try:
            mod = importlib.import_module(f".commands.{verb}", __package__)
        except ModuleNotFoundError as e:
            if e.name != f"{__package__}.commands.{verb}":
                raise
            p.set_defaults(_missing=True)
            continue
        mod.add_arguments(p)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "verb", None):
        parser.print_help()
        return 2
    if getattr(args, "_missing", False):
        print(f"minicpmv-edge: '{args.verb}' is not available in this build", file=sys.stderr)
        return 2
    mod = importlib.import_module(f".commands.{args._verb}", __package__)
    try:
        return mod.run(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, FileExistsError, ValueError, OSError) as e:
        print(f"minicpmv-edge {args.verb}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
