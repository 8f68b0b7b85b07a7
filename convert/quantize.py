"""Which ggml type each tensor gets, and turning float32 rows into that type's bytes.

The block formats are computed by the C++ engine (`minicpmv_edge._core.quantize`). F32 / F16 /
BF16 are plain numpy casts (exact, round to nearest even). Q5_0, needed only as llama.cpp's
fallback for Q4_K rows that are not a multiple of 256, uses the C++ engine when it can and
gguf-py's numpy quantizer otherwise.
"""
import numpy as np

from .gguf_writer import GGML_TYPE_ID, GGML_TYPES

F32, F16, Q4_0, Q5_0, Q8_0, Q4_K, Q6_K, BF16 = (GGML_TYPE_ID[n] for n in
                                               ("f32", "f16", "q4_0", "q5_0", "q8_0", "q4_K", "q6_K", "bf16"))

# --quant choice -> (llama.cpp LLAMA_FTYPE number for general.file_type, default tensor type,
# file-name tag as llama.cpp users have it: ggml-model-<tag>.gguf)
LLM_QUANTS = {
    "f32": (0, F32, "f32"),
    "f16": (1, F16, "f16"),
    "q4_0": (2, Q4_0, "Q4_0"),
    "q8_0": (7, Q8_0, "Q8_0"),
    "q4_k_m": (15, Q4_K, "Q4_K_M"),
}
MMPROJ_TYPES = {"f32": 0, "f16": 1, "q8_0": 7}


def use_more_bits(i_layer, n_layers):
    """llama.cpp's rule for the layers whose attn_v / ffn_down get more bits in the _M mixes:
    the first and last eighth of the layers and every third layer in between."""
    return (i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8
            or (i_layer - n_layers // 8) % 3 == 2)


def _fallback(gtype, row_len):
    """llama.cpp's substitute when a row is not a whole number of blocks of the chosen type."""
    blck = GGML_TYPES[gtype][1]
    if row_len % blck == 0:
        return gtype
    sub = {Q4_K: Q5_0, Q6_K: Q8_0}.get(gtype, F16)
    if row_len % GGML_TYPES[sub][1]:
        sub = F16
    return sub


def llm_tensor_type(quant, gguf_name, shape, layer, n_layers):
    """ggml type of one language-model tensor (GGUF name, numpy-order shape) for --quant `quant`.

    As llama.cpp: 1-D tensors (norms, biases) stay F32. f32/f16/q8_0 are uniform over the 2-D
    weights (as convert_hf_to_gguf.py writes them). q4_0 and q4_k_m follow llama-quantize:
    output.weight -> Q6_K; for q4_k_m also attn_v and ffn_down -> Q6_K in the layers where
    use_more_bits() holds, token_embd and everything else Q4_K; rows that are not whole blocks
    fall back (Q4_K -> Q5_0, Q6_K -> Q8_0, else F16).
    """
    _, default, _ = LLM_QUANTS[quant]
    if len(shape) < 2:
        return F32
    row_len = shape[-1]
    if quant in ("f32", "f16", "q8_0"):
        return _fallback(default, row_len)
    t = default
    if gguf_name == "output.weight":
        # llama-quantize: Q8_0 when the row is not a multiple of the default type's block, else Q6_K
        t = Q8_0 if row_len % GGML_TYPES[default][1] else Q6_K
    elif quant == "q4_k_m" and layer is not None:
        if gguf_name.endswith("attn_v.weight") or gguf_name.endswith("ffn_down.weight"):
            if use_more_bits(layer, n_layers):
                t = Q6_K
    return _fallback(t, row_len)


def mmproj_tensor_type(mm_type, gguf_name, shape):
    """ggml type of one mmproj tensor. f16 follows llama.cpp's converter exactly: 4-D -> f16,
    2-D `.weight` -> f16, everything else (biases, norms, resampler.query, pos_embed_k) f32.
    q8_0: 2-D linear weights -> Q8_0 (when rows are whole blocks; else f16); the patch
    embedding (a conv kernel) and the position table (a lookup table) stay f16."""
    if mm_type == "f32":
        return F32
    is_weight = gguf_name.endswith(".weight")
    if len(shape) == 4:
        return F16
    if len(shape) == 2 and is_weight:
        if mm_type == "q8_0" and gguf_name not in ("v.position_embd.weight",):
            return _fallback(Q8_0, shape[-1])
        return F16
    return F32


def f32_to_bf16_bits(x):
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    # keep NaNs NaN (quiet bit) rather than letting the rounding carry turn them into inf
    rounded = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        rounded[nan] = ((u[nan] >> np.uint32(16)) | np.uint32(0x40)).astype(np.uint16)
    return rounded


_core_quantize = None


def _core():
    global _core_quantize
    if _core_quantize is None:
        try:
            from minicpmv_edge import _core as core
            _core_quantize = getattr(core, "quantize", False)
        except ImportError:
            _core_quantize = False
    return _core_quantize


def quantize_rows(gtype, x, n_threads=0):
    """float32 [rows, row_len] -> bytes of the rows in ggml type `gtype` (a numpy uint8 or typed array)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if gtype == F32:
        return x
    if gtype == F16:
        return x.astype(np.float16)
    if gtype == BF16:
        return f32_to_bf16_bits(x)
    name = GGML_TYPES[gtype][0]
    if not np.isfinite(x).all():
        raise ValueError("tensor contains non-finite values (inf/NaN)")
    q = _core()
    if q:
        try:
            return q(name, x, n_threads)
        except (ValueError, TypeError, NotImplementedError) as e:
            if gtype not in (Q5_0, Q8_0, Q4_0):
                raise
            err = e  # fall through to gguf-py for the simple block types
    else:
        err = None
    if gtype in (Q5_0, Q8_0, Q4_0):
        import gguf
        return gguf.quants.quantize(x, gguf.GGMLQuantizationType(gtype))
    raise RuntimeError(f"quantizing to {name} needs the C++ extension minicpmv_edge._core.quantize"
                       + (f" ({err})" if err else " (not available: rebuild the package)"))
