"""minicpmv-edge: an on-device runtime for MiniCPM-V 2.6 (GGUF files, int4/int8 CPU kernels).

The math lives in the C++ engine (``minicpmv_edge._core``); this package does I/O and the user
surface: the chat API, image and video decoding, the ``minicpmv-edge`` command line.
"""
__version__ = "0.1.0"


def __getattr__(name):
    # Lazy so that `import minicpmv_edge` stays cheap (the CLI imports only what a verb needs).
    if name in ("MiniCPMV", "ContextLimitError"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'minicpmv_edge' has no attribute {name!r}")
