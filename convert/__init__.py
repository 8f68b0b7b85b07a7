"""Hugging Face MiniCPM-V 2.6 checkpoint -> GGUF (language model in llama.cpp's `qwen2` layout,
vision tower + resampler in llama.cpp's `clip` mmproj layout). Installed as minicpmv_edge.convert."""

from .converter import (MMPROJ_CHOICES, QUANT_CHOICES, convert_checkpoint, llm_output_name,
                        mmproj_output_name)

__all__ = ["convert_checkpoint", "llm_output_name", "mmproj_output_name", "QUANT_CHOICES",
           "MMPROJ_CHOICES"]
