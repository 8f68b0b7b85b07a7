"""The `minicpmv-edge` command line. Each verb lives in minicpmv_edge/commands/<verb>.py with
two functions: `add_arguments(parser)` and `run(args) -> int`; it is imported only when used."""
import argparse
import importlib
import os
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


# Third-party modules a verb may import lazily -> the package that provides them.
PIP_NAMES = {"cv2": "opencv-python-headless", "PIL": "pillow", "prompt_toolkit": "prompt_toolkit",
             "numpy": "numpy", "tqdm": "tqdm", "tokenizers": "tokenizers", "gguf": "gguf"}


def _import_error_message(e):
    """A one-line message for a missing module, with what to install."""
    name = getattr(e, "name", None)
    if not name:  # raised by our code with its own hint (e.g. "video needs OpenCV: pip install ...")
        return str(e)
    if name == f"{__package__}._core" or name.endswith("._core"):
        return (f"the C++ engine ({name}) is not built or does not load ({e}): "
                f"reinstall with `pip install -e .` from the source tree")
    if name.startswith(f"{__package__}."):
        return f"this installation lacks {name} ({e}); the feature that needs it is not available"
    top = name.split(".")[0]
    return f"this needs the Python module '{top}': pip install {PIP_NAMES.get(top, top)}"


def _silence_stdout():
    # `minicpmv-edge run ... | head -1`: the reader went away. Not an error; keep the interpreter's
    # final flush from printing a BrokenPipeError.
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv=None):
    # Model output is arbitrary Unicode: never die on a terminal or pipe with a narrow encoding.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="replace")
            except (ValueError, OSError):
                pass
    argv = list(sys.argv[1:] if argv is None else argv)
    # The only top-level options take no value, so the first word that is not an option is the
    # verb. An unknown one gets one line with the nearest verb (argparse prints the usage and a
    # list instead).
    verb = next((a for a in argv if not a.startswith("-")), None)
    if verb is not None and verb not in VERBS:
        import difflib

        close = difflib.get_close_matches(verb, list(VERBS), n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        print(f"minicpmv-edge: error: unknown verb '{verb}'{hint}; the verbs are {', '.join(VERBS)} "
              f"(minicpmv-edge --help)", file=sys.stderr)
        return 1
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "verb", None):
        parser.print_help()
        return 2
    if getattr(args, "_missing", False):
        print(f"minicpmv-edge: '{args.verb}' is not available in this build", file=sys.stderr)
        return 2
    mod = importlib.import_module(f".commands.{args._verb}", __package__)
    where = f"minicpmv-edge {args.verb}: error:"
    # Errors from bad input (files, formats, options, context size) are one line on stderr and
    # exit code 1. Anything else is a bug: it keeps its traceback. MINICPMV_EDGE_DEBUG=1 shows
    # the traceback of every error.
    debug = os.environ.get("MINICPMV_EDGE_DEBUG", "").lower() not in ("", "0", "false", "no")
    try:
        return mod.run(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except Exception as e:  # noqa: BLE001 - sorted below; unknown kinds are re-raised
        if debug:
            raise
        if isinstance(e, ImportError):
            msg = _import_error_message(e)
        elif isinstance(e, MemoryError):
            msg = "out of memory (try a smaller --ctx, or a smaller model file)"
        elif type(e).__name__ == "ContextLimitError":
            msg = f"{e} (the option is -c/--ctx)"
        elif isinstance(e, (ValueError, OSError, RuntimeError)):
            msg = str(e) or type(e).__name__
        else:
            raise
        print(f"{where} {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
