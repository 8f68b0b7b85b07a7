"""`minicpmv-edge convert HF_DIR -o OUT_DIR`: a Hugging Face MiniCPM-V 2.6 checkpoint ->
ggml-model-<QUANT>.gguf (language model) + mmproj-model-<type>.gguf (vision + resampler)."""


def add_arguments(parser):
    from ..convert import MMPROJ_CHOICES, QUANT_CHOICES

    parser.add_argument("hf_dir", metavar="HF_DIR",
                        help="checkpoint directory (config.json, *.safetensors + index, tokenizer files)")
    parser.add_argument("-o", "--output-dir", dest="output_dir", required=True, metavar="OUT_DIR",
                        help="directory for the GGUF files (created if needed)")
    parser.add_argument("--quant", default="q4_k_m", type=str.lower, choices=QUANT_CHOICES,
                        help="language-model weight type (default: q4_k_m, llama.cpp's Q4_K_M mix)")
    parser.add_argument("--mmproj-type", default="f16", type=str.lower, choices=MMPROJ_CHOICES,
                        help="vision/resampler weight type (default: f16, as the official mmproj)")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")
    parser.add_argument("--threads", type=int, default=0, metavar="N",
                        help="quantization threads (default: all cores)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--skip-llm", action="store_true", help="write only the mmproj file")
    parser.add_argument("--skip-mmproj", action="store_true", help="write only the language-model file")


def run(args):
    import sys

    from ..convert import convert_checkpoint

    if args.threads < 0:
        raise ValueError(f"--threads must be >= 0, got {args.threads}")
    if args.skip_llm and args.skip_mmproj:
        raise ValueError("--skip-llm and --skip-mmproj together leave nothing to write")
    written = convert_checkpoint(args.hf_dir, args.output_dir, args.quant, args.mmproj_type,
                                 force=args.force, threads=args.threads,
                                 progress=not args.no_progress,
                                 llm=not args.skip_llm, mmproj=not args.skip_mmproj)
    for p in written:
        print(p)
    print(f"converted {args.hf_dir} -> {', '.join(p.name for p in written)}", file=sys.stderr)
    return 0
