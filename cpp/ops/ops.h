// Element-wise and row-wise operations of the forward passes (f32). Named after what they compute;
// the matrix products are in kernels/matmul.h.
#pragma once
#include <cstdint>

namespace minicpmv::ops {

// y = x / sqrt(mean(x^2) + eps) * w          (Qwen2 RMSNorm)
void rms_norm(const float* x, const float* w, float* y, int64_t n, float eps);
// y = (x - mean) / sqrt(var + eps) * w + b   (LayerNorm; var is the biased variance)
void layer_norm(const float* x, const float* w, const float* b, float* y, int64_t n, float eps);

// In place over n values.
void softmax(float* x, int64_t n);
void silu(float* x, int64_t n);
void gelu_tanh(float* x, int64_t n);  // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
void add(float* y, const float* x, int64_t n);            // y += x
void mul(float* y, const float* x, int64_t n);            // y *= x
void scale(float* y, float s, int64_t n);                 // y *= s
// rows x n: each row += bias
void add_bias(float* y, const float* bias, int64_t rows, int64_t n);

// NEOX-style rotary embedding ("rotate half") on n_heads vectors of head_dim at one position:
// for i < head_dim/2: (x[i], x[i + head_dim/2]) rotated by angle pos * theta^(-2i/head_dim).
// cos_sin holds head_dim/2 pairs (cos, sin) for that position (see rope_cache).
void rope_neox(float* x, int64_t n_heads, int64_t head_dim, const float* cos_sin);
// cos_sin[head_dim] = interleaved (cos, sin) for one position; computed in double then rounded,
// as transformers computes inv_freq in float32 then angles in float32 (see the cpp for the choice).
void rope_cache(float* cos_sin, int64_t pos, int64_t head_dim, double theta);

}  // namespace minicpmv::ops
