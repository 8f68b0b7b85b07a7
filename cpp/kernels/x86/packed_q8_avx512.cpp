// AVX-512 VNNI tile of the packed Q8_0 GEMM (kernels/packed_q8.h): 16 weight rows (one panel, the
// zmm lanes) x 16 tokens (one activation group). Per 32-block: 8 weight vectors loaded once feed
// the 16 tokens; each token's int32 sum starts at its c and takes 8 vpdpbusd whose s8 operand is
// 4 activation bytes broadcast from memory; then one convert and one FMA by d_w * d_a. All
// activation offsets are compile-time constants (the group layout), so no pointer per token.
// Bit-identical to gemm_tile_ref.
#include <immintrin.h>

// GCC 12's intrinsic headers trip -Wuninitialized on their own _mm512_undefined_* placeholders.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <cstring>

#include "kernels/packed_q8.h"

namespace minicpmv::kernels::packed {

namespace {

inline int32_t load_i32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// s += u8(w) . s8(4 bytes at p, broadcast to every lane): the broadcast folded into the
// instruction's memory operand ({1to16}), which GCC does not do for the intrinsic.
inline void dpbusd_bcast(__m512i& s, __m512i w, const uint8_t* p) {
  asm("vpdpbusd %[m]%{1to16%}, %[w], %[s]" : [s] "+v"(s) : [w] "v"(w), [m] "m"(*reinterpret_cast<const int32_t*>(p)));
}

}  // namespace

void gemm_tile_avx512(const uint8_t* panel, int64_t nb, const uint8_t* group, int64_t nt, float* y, size_t ys,
                      int64_t nrows) {
  constexpr int NT = static_cast<int>(kGroupTokens);
  __m512 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* wb = panel + b * kBlockBytes;
    const uint8_t* ab = group + b * kActBlockBytes;
    __m512i w[8];
    for (int k = 0; k < 8; ++k) w[k] = _mm512_load_si512(wb + 64 * k);
    const __m512 dw = _mm512_load_ps(reinterpret_cast<const float*>(wb + 512));
    const float* da = reinterpret_cast<const float*>(ab + 512);
    const int32_t* c = reinterpret_cast<const int32_t*>(ab + 576);
    // two tokens at a time, their vpdpbusd chains interleaved: each chain is 8 dependent
    // instructions, and the scheduler needs several in flight to issue one per cycle
#pragma GCC unroll 8
    for (int t = 0; t < NT; t += 2) {
      __m512i s0 = _mm512_set1_epi32(c[t]), s1 = _mm512_set1_epi32(c[t + 1]);
#pragma GCC unroll 8
      for (int k = 0; k < 8; ++k) {
        dpbusd_bcast(s0, w[k], ab + 32 * t + 4 * k);
        dpbusd_bcast(s1, w[k], ab + 32 * (t + 1) + 4 * k);
      }
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s0), _mm512_mul_ps(dw, _mm512_set1_ps(da[t])), acc[t]);
      acc[t + 1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s1), _mm512_mul_ps(dw, _mm512_set1_ps(da[t + 1])), acc[t + 1]);
    }
  }
  const __mmask16 m = nrows >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << nrows) - 1);
  for (int t = 0; t < NT; ++t)
    if (t < nt) _mm512_mask_storeu_ps(y + t * ys, m, acc[t]);
}

}  // namespace minicpmv::kernels::packed
