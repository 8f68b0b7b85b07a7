"""minicpmv-edge chat: an interactive conversation (text, images, video) with history.

Commands: /image PATH (attach to the next question), /video PATH, /reset, /quit, /help.
Multi-line input: end a line with a backslash to continue, or wrap a block in triple quotes.
"""
import os
import sys

from ._common import add_model_args, add_sampling_args, chat_kwargs, load_model, log, progress_printer

HELP = """commands:
  /image PATH   attach an image to your next message (repeat for several)
  /video PATH   attach a video (about 1 frame per second, at most 64 frames)
  /reset        start a new conversation
  /quit         leave (also Ctrl-D)
  multi-line: end a line with \\ to continue, or type \"\"\" ... \"\"\""""


def add_arguments(p):
    add_model_args(p)
    p.add_argument("--image", action="append", default=[], help="image(s) for the first message")
    p.add_argument("--video", help="video for the first message")
    add_sampling_args(p)


def _reader():
    """A line reader with history: prompt_toolkit on a terminal, plain input() otherwise.
    When stdin is not a terminal (a pipe, a file) no prompts are printed, so that stdout holds
    only the answers, one after the other."""
    if not sys.stdin.isatty():
        return lambda prompt: input().rstrip("\r")  # a script written on Windows ends lines with \r\n
    if not sys.stdout.isatty():  # `chat > answers.txt`: prompts on the terminal, answers in the file

        def read(prompt):
            sys.stderr.write(prompt)
            sys.stderr.flush()
            return input()
        return read
    try:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory, InMemoryHistory

        hist_path = os.path.expanduser("~/.minicpmv_edge_history")
        try:
            history = FileHistory(hist_path)
        except OSError:
            history = InMemoryHistory()
        session = PromptSession(history=history)
        return lambda prompt: session.prompt(prompt)
    except ImportError:
        pass
    try:
        import readline  # noqa: F401  (history and editing for input())
    except ImportError:
        pass
    return lambda prompt: input(prompt)


def read_message(read):
    line = read(">>> ")
    if line.strip() == '"""':
        lines = []
        while True:
            nxt = read("... ")
            if nxt.strip() == '"""':
                return "\n".join(lines)
            lines.append(nxt)
    lines = []
    while line.endswith("\\"):
        lines.append(line[:-1])
        line = read("... ")
    lines.append(line)
    return "\n".join(lines)


def run(args):
    from ..api import ContextLimitError

    m = load_model(args, need_vision=bool(args.image or args.video))
    kw = chat_kwargs(args)
    stream = kw.get("num_beams", 1) <= 1
    read = _reader()
    history = []
    # Paths must be wrapped as image parts: a bare string in a message's content is text.
    attach = [{"type": "image", "image": p} for p in args.image]
    if args.video:
        attach.append({"type": "video", "video": args.video})
    log("minicpmv-edge chat: /help for commands" + ("" if m.vision else " (text only: no mmproj loaded)"))
    while True:
        try:
            text = read_message(read)
        except EOFError:
            print(file=sys.stderr)
            return 0
        except KeyboardInterrupt:
            print("^C", file=sys.stderr)
            continue
        cmd = text.strip()
        if not cmd:
            continue
        if cmd in ("/quit", "/exit", "/q"):
            return 0
        if cmd == "/help":
            log(HELP)
            continue
        if cmd == "/reset":
            history.clear()
            attach.clear()
            m.reset()
            log("(new conversation)")
            continue
        if cmd in ("/image", "/video"):
            log(f"usage: {cmd} PATH")
            continue
        if cmd.startswith("/image ") or cmd.startswith("/video "):
            kind, _, path = cmd.partition(" ")
            path = os.path.expanduser(path.strip().strip("'\""))
            if m.vision is None:
                log("this model has no mmproj loaded: images cannot be used")
                continue
            if not os.path.isfile(path):
                log(f"no such file: {path}")
                continue
            attach.append({"type": "image", "image": path} if kind == "/image" else {"type": "video", "video": path})
            log(f"({kind[1:]} attached to your next message: {path})")
            continue
        if cmd.startswith("/"):
            log(f"unknown command {cmd.split()[0]}; /help lists them")
            continue
        content = attach + [text]
        attach = []
        msgs = history + [{"role": "user", "content": content}]
        prog = progress_printer("encoding") if any(not isinstance(c, str) for c in content) else None
        answer = []
        try:
            out = m.chat(msgs, stream=stream, progress=prog, **kw)
            if stream:
                for piece in out:
                    answer.append(piece)
                    sys.stdout.write(piece)
                    sys.stdout.flush()
            else:
                answer.append(out)
                sys.stdout.write(out)
            sys.stdout.write("\n")
        except KeyboardInterrupt:
            sys.stdout.write("\n")
            log("(interrupted)")
        except BrokenPipeError:
            raise  # the reader of stdout is gone: nothing more to say (cli.main ends quietly)
        except (ValueError, OSError, ImportError, RuntimeError) as e:
            # A bad image or video, a full context...: say it and keep the conversation going.
            sys.stdout.write("\n" if answer else "")
            log(f"error: {e}")
            if isinstance(e, ContextLimitError):
                log("(/reset starts a new conversation)")
            continue
        history = msgs + [{"role": "assistant", "content": "".join(answer).strip()}]
        if m.last_stats.finish_reason == "context":
            log(f"warning: the answer was cut short: the context ({m.n_ctx} tokens) is full; /reset starts over")
        if args.verbose:
            log(m.last_stats.line())
