"""`minicpmv-edge inspect FILE`: architecture, version, metadata and tensor table of a GGUF file."""
import json
import os
import sys


def add_arguments(parser):
    parser.add_argument("file", help="a GGUF file (LLM or mmproj; ours or llama.cpp's)")
    parser.add_argument("--all-metadata", action="store_true",
                        help="print every metadata value in full (long arrays and strings included)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def run(args):
    from ..gguf_info import describe, format_text

    info = describe(args.file, all_metadata=args.all_metadata)
    try:
        if args.json:
            json.dump(info, sys.stdout, ensure_ascii=False)
            sys.stdout.write("\n")
        else:
            print(format_text(info, all_metadata=args.all_metadata))
        sys.stdout.flush()
    except BrokenPipeError:
        # `inspect big.gguf | head`: the reader went away; not an error. Silence the final flush.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
