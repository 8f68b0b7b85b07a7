"""minicpmv-edge run -m MODEL [--mmproj F] [--image P ...] [--video P] -p QUESTION: one answer, then exit.
The answer goes to stdout; progress and timings to stderr."""
import sys

from ._common import add_model_args, add_sampling_args, chat_kwargs, load_model, log, progress_printer, warn_if_cut


def add_arguments(p):
    add_model_args(p)
    p.add_argument("--image", action="append", default=[], help="image file (repeatable: several images)")
    p.add_argument("--video", help="video file (about 1 frame per second, at most 64 frames)")
    p.add_argument("-p", "--prompt", required=True, help="the question")
    p.add_argument("--no-stream", action="store_true", help="print the answer at the end, not as it comes")
    add_sampling_args(p)


def build_content(images, video, text):
    # Paths must be wrapped as image parts: a bare string in a message's content is text.
    content = [{"type": "image", "image": p} for p in images]
    if video:
        content.append({"type": "video", "video": video})
    content.append(text)
    return content


def run(args):
    m = load_model(args, need_vision=bool(args.image or args.video))
    kw = chat_kwargs(args)
    msgs = [{"role": "user", "content": build_content(args.image, args.video, args.prompt)}]
    stream = not args.no_stream and kw.get("num_beams", 1) <= 1
    prog = progress_printer("encoding image") if (args.image or args.video) and args.verbose else None
    out = m.chat(msgs, stream=stream, progress=prog, **kw)
    if stream:
        for piece in out:
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
    else:
        sys.stdout.write(out + "\n")
    sys.stdout.flush()
    warn_if_cut(m)
    if args.verbose:
        log(m.last_stats.line())
    return 0
