"""Hugging Face MiniCPM-V 2.6 checkpoint -> GGUF (language model in llama.cpp's `qwen2` layout,
vision tower + resampler in llama.cpp's `clip` mmproj layout). Installed as minicpmv_edge.convert."""
