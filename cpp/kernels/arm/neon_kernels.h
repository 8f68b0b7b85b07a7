// Internal to kernels/arm/: the AArch64 kernels, written once over an int8 dot-product policy D
// and compiled twice: neon.cpp (D = widening multiply + pairwise add, any ARMv8 core) and
// dotprod.cpp (D = sdot, ARMv8.2 dotprod). Each includes this file inside its own anonymous
// namespace, so the two instantiations never meet.
//
// Unlike x86 (u8 x s8), sdot multiplies signed by signed, so weights are made signed first:
// Q4_0 codes - 8, Q6_K codes - 32 (no offset correction needed); Q4_1 / Q4_K codes 0..15 are
// non-negative int8 already and add back their mins from the activation sums.
// Tiles: 1 weight row x up to 4 tokens (NR) for quantized types, 4 x NR for floats.
// Q5_0 / Q5_1 / Q5_K use the scalar kernels (not among the model's formats).
//
// D must provide: static int32x4_t dot(int32x4_t acc, int8x16_t a, int8x16_t b)
//   (acc + per-lane sums of 4 adjacent products; only the total over lanes is used).

// The including file includes <arm_neon.h>, <cmath>, <cstring>, kernel_set.h, tiles.h and
// quant/f16.h before opening its namespaces (this file has no #include of its own).

inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
inline float half(const uint8_t* p) { return fp16_to_fp32(load_u16(p)); }

// ---------------------------------------------------------------- activation quantizers

void quantize_a8(const float* x, uint8_t* dst, int64_t cols) {
  const int64_t nb = cols / 32;
  int8_t* qs = reinterpret_cast<int8_t*>(dst);
  float* dd = reinterpret_cast<float*>(dst + cols);
  float* ss = dd + nb;
  for (int64_t b = 0; b < nb; ++b) {
    float32x4_t v[8];
    float32x4_t m = vdupq_n_f32(0.f);
    for (int i = 0; i < 8; ++i) v[i] = vld1q_f32(x + 32 * b + 4 * i), m = vmaxq_f32(m, vabsq_f32(v[i]));
    const float amax = vmaxvq_f32(m);
    const float d = amax / 127.f;
    const float id = d != 0.f ? 1.f / d : 0.f;
    int32x4_t sum = vdupq_n_s32(0);
    int16x8_t h[4];
    for (int i = 0; i < 4; ++i) {
      const int32x4_t a = vcvtaq_s32_f32(vmulq_n_f32(v[2 * i], id));  // ties away from zero
      const int32x4_t c = vcvtaq_s32_f32(vmulq_n_f32(v[2 * i + 1], id));
      sum = vaddq_s32(sum, vaddq_s32(a, c));
      h[i] = vcombine_s16(vmovn_s32(a), vmovn_s32(c));
    }
    vst1q_s8(qs + 32 * b, vcombine_s8(vmovn_s16(h[0]), vmovn_s16(h[1])));
    vst1q_s8(qs + 32 * b + 16, vcombine_s8(vmovn_s16(h[2]), vmovn_s16(h[3])));
    dd[b] = fp16_to_fp32(fp32_to_fp16(d));
    ss[b] = dd[b] * static_cast<float>(vaddvq_s32(sum));
  }
}

void quantize_a8k(const float* x, uint8_t* dst, int64_t cols) {
  const int64_t nb = cols / 256;
  int8_t* qs = reinterpret_cast<int8_t*>(dst);
  float* dd = reinterpret_cast<float*>(dst + cols);
  int16_t* bsums = reinterpret_cast<int16_t*>(dst + cols + 4 * nb);
  for (int64_t b = 0; b < nb; ++b) {
    const float* xb = x + 256 * b;
    float32x4_t m = vdupq_n_f32(0.f);
    for (int j = 0; j < 256; j += 4) m = vmaxq_f32(m, vabsq_f32(vld1q_f32(xb + j)));
    const float amax = vmaxvq_f32(m);
    if (amax == 0.f) {
      dd[b] = 0.f;
      std::memset(qs + 256 * b, 0, 256);
      std::memset(bsums + 16 * b, 0, 32);
      continue;
    }
    int k = 0;
    while (k < 255 && std::fabs(xb[k]) != amax) ++k;  // bounded: NaN input must not run off
    const float iscale = -127.f / xb[k];
    for (int g = 0; g < 16; ++g) {
      int32x4_t q[4];
      for (int i = 0; i < 4; ++i)
        q[i] = vminq_s32(vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(xb + 16 * g + 4 * i), iscale)), vdupq_n_s32(127));
      const int16x8_t h0 = vcombine_s16(vmovn_s32(q[0]), vmovn_s32(q[1]));
      const int16x8_t h1 = vcombine_s16(vmovn_s32(q[2]), vmovn_s32(q[3]));
      vst1q_s8(qs + 256 * b + 16 * g, vcombine_s8(vmovn_s16(h0), vmovn_s16(h1)));
      bsums[16 * b + g] = static_cast<int16_t>(vaddvq_s32(vaddq_s32(vaddq_s32(q[0], q[1]), vaddq_s32(q[2], q[3]))));
    }
    dd[b] = 1.f / iscale;
  }
}

// ---------------------------------------------------------------- float weights

struct LoadF32 {
  static float32x4_t load(const uint8_t* p, int64_t j) { return vld1q_f32(reinterpret_cast<const float*>(p) + j); }
  static float one(const uint8_t* p, int64_t j) { return reinterpret_cast<const float*>(p)[j]; }
};
struct LoadF16 {
  static float32x4_t load(const uint8_t* p, int64_t j) {
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(reinterpret_cast<const uint16_t*>(p) + j)));
  }
  static float one(const uint8_t* p, int64_t j) { return fp16_to_fp32(load_u16(p + 2 * j)); }
};
struct LoadBF16 {
  static float32x4_t load(const uint8_t* p, int64_t j) {
    return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(reinterpret_cast<const uint16_t*>(p) + j), 16));
  }
  static float one(const uint8_t* p, int64_t j) { return bf16_to_fp32(load_u16(p + 2 * j)); }
};

template <class L>
struct FloatTile {
  static constexpr int MR = 4;
  template <int NR>
  static void tile(int64_t cols, const uint8_t* const* w, const uint8_t* const* x, float out[][kTileTokens]) {
    float32x4_t acc[MR][NR];
    for (int r = 0; r < MR; ++r)
      for (int t = 0; t < NR; ++t) acc[r][t] = vdupq_n_f32(0.f);
    const float* xf[NR];
    for (int t = 0; t < NR; ++t) xf[t] = reinterpret_cast<const float*>(x[t]);
    int64_t j = 0;
    for (; j + 4 <= cols; j += 4) {
      float32x4_t wv[MR];
      for (int r = 0; r < MR; ++r) wv[r] = L::load(w[r], j);
      for (int t = 0; t < NR; ++t) {
        const float32x4_t xv = vld1q_f32(xf[t] + j);
        for (int r = 0; r < MR; ++r) acc[r][t] = vfmaq_f32(acc[r][t], wv[r], xv);
      }
    }
    for (int r = 0; r < MR; ++r)
      for (int t = 0; t < NR; ++t) {
        float s = vaddvq_f32(acc[r][t]);
        for (int64_t k = j; k < cols; ++k) s += L::one(w[r], k) * xf[t][k];
        out[r][t] = s;
      }
  }
};

// ---------------------------------------------------------------- Q4_0 / Q4_1 / Q8_0 x A8

template <class D, int kType>  // 0: Q4_0, 1: Q4_1, 2: Q8_0
struct Block32Tile {
  static constexpr int MR = 1;
  static constexpr int BS = kType == 0 ? 18 : kType == 1 ? 20 : 34;
  template <int NR>
  static void tile(int64_t cols, const uint8_t* const* w, const uint8_t* const* x, float out[][kTileTokens]) {
    const int64_t nb = cols / 32;
    float32x4_t acc[NR];
    float corr[NR];
    A8Row xa[NR];
    for (int t = 0; t < NR; ++t) xa[t] = A8Row(x[t], cols), acc[t] = vdupq_n_f32(0.f), corr[t] = 0.f;
    const uint8x16_t lo4 = vdupq_n_u8(0x0F);
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* blk = w[0] + b * BS;
      const float dw = half(blk);
      int8x16_t w0, w1;
      if (kType == 2) {
        w0 = vld1q_s8(reinterpret_cast<const int8_t*>(blk + 2));
        w1 = vld1q_s8(reinterpret_cast<const int8_t*>(blk + 18));
      } else {
        const uint8x16_t q = vld1q_u8(blk + (kType == 0 ? 2 : 4));
        w0 = vreinterpretq_s8_u8(vandq_u8(q, lo4));
        w1 = vreinterpretq_s8_u8(vshrq_n_u8(q, 4));
        if (kType == 0) w0 = vsubq_s8(w0, vdupq_n_s8(8)), w1 = vsubq_s8(w1, vdupq_n_s8(8));
      }
      const float m = kType == 1 ? half(blk + 2) : 0.f;
      for (int t = 0; t < NR; ++t) {
        const int8_t* xq = xa[t].qs + 32 * b;
        const int32x4_t s = D::dot(D::dot(vdupq_n_s32(0), w0, vld1q_s8(xq)), w1, vld1q_s8(xq + 16));
        acc[t] = vfmaq_n_f32(acc[t], vcvtq_f32_s32(s), dw * xa[t].d[b]);
        if (kType == 1) corr[t] += m * xa[t].s[b];
      }
    }
    for (int t = 0; t < NR; ++t) out[0][t] = vaddvq_f32(acc[t]) + corr[t];
  }
};

// ---------------------------------------------------------------- Q4_K / Q6_K x A8K

template <class D>
struct Q4KTile {
  static constexpr int MR = 1;
  template <int NR>
  static void tile(int64_t cols, const uint8_t* const* w, const uint8_t* const* x, float out[][kTileTokens]) {
    const int64_t nsb = cols / 256;
    float32x4_t acc[NR];
    float corr[NR];
    A8KRow xa[NR];
    for (int t = 0; t < NR; ++t) xa[t] = A8KRow(x[t], cols), acc[t] = vdupq_n_f32(0.f), corr[t] = 0.f;
    const uint8x16_t lo4 = vdupq_n_u8(0x0F);
    for (int64_t sb = 0; sb < nsb; ++sb) {
      const uint8_t* blk = w[0] + sb * 144;
      const float d = half(blk), dmin = half(blk + 2);
      uint32_t u[3];
      std::memcpy(u, blk + 4, 12);
      const uint32_t scm[4] = {u[0] & 0x3f3f3f3f, (u[2] & 0x0f0f0f0f) | ((u[0] & 0xc0c0c0c0) >> 2),
                               u[1] & 0x3f3f3f3f, ((u[2] >> 4) & 0x0f0f0f0f) | ((u[1] & 0xc0c0c0c0) >> 2)};
      uint8_t sm[16];
      std::memcpy(sm, scm, 16);  // sc[0..7], m[0..7]
      const int16x8_t m16 = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(sm + 8)));
      int32x4_t isum[NR];
      for (int t = 0; t < NR; ++t) isum[t] = vdupq_n_s32(0);
      for (int c = 0; c < 4; ++c) {
        const uint8x16_t q0 = vld1q_u8(blk + 16 + 32 * c), q1 = vld1q_u8(blk + 32 + 32 * c);
        const int8x16_t l0 = vreinterpretq_s8_u8(vandq_u8(q0, lo4)), l1 = vreinterpretq_s8_u8(vandq_u8(q1, lo4));
        const int8x16_t h0 = vreinterpretq_s8_u8(vshrq_n_u8(q0, 4)), h1 = vreinterpretq_s8_u8(vshrq_n_u8(q1, 4));
        for (int t = 0; t < NR; ++t) {
          const int8_t* xq = xa[t].qs + 256 * sb + 64 * c;
          const int32x4_t s1 = D::dot(D::dot(vdupq_n_s32(0), l0, vld1q_s8(xq)), l1, vld1q_s8(xq + 16));
          const int32x4_t s2 = D::dot(D::dot(vdupq_n_s32(0), h0, vld1q_s8(xq + 32)), h1, vld1q_s8(xq + 48));
          isum[t] = vmlaq_n_s32(vmlaq_n_s32(isum[t], s1, sm[2 * c]), s2, sm[2 * c + 1]);
        }
      }
      for (int t = 0; t < NR; ++t) {
        const int16_t* bs = xa[t].bsums + 16 * sb;
        const int16x8_t pairs = vpaddq_s16(vld1q_s16(bs), vld1q_s16(bs + 8));  // sums of 32
        const int32_t msum = vaddvq_s32(vmull_s16(vget_low_s16(m16), vget_low_s16(pairs))) +
                             vaddvq_s32(vmull_high_s16(m16, pairs));
        const float dx = xa[t].d[sb];
        acc[t] = vfmaq_n_f32(acc[t], vcvtq_f32_s32(isum[t]), d * dx);
        corr[t] -= dmin * dx * static_cast<float>(msum);
      }
    }
    for (int t = 0; t < NR; ++t) out[0][t] = vaddvq_f32(acc[t]) + corr[t];
  }
};

template <class D>
struct Q6KTile {
  static constexpr int MR = 1;
  template <int NR>
  static void tile(int64_t cols, const uint8_t* const* w, const uint8_t* const* x, float out[][kTileTokens]) {
    const int64_t nsb = cols / 256;
    float32x4_t acc[NR];
    A8KRow xa[NR];
    for (int t = 0; t < NR; ++t) xa[t] = A8KRow(x[t], cols), acc[t] = vdupq_n_f32(0.f);
    const uint8x16_t lo4 = vdupq_n_u8(0x0F), m3 = vdupq_n_u8(0x03);
    const int8x16_t o32 = vdupq_n_s8(32);
    for (int64_t sb = 0; sb < nsb; ++sb) {
      const uint8_t* blk = w[0] + sb * 210;
      const float d = half(blk + 208);
      const int8_t* sc = reinterpret_cast<const int8_t*>(blk + 192);
      int32x4_t isum[NR];
      for (int t = 0; t < NR; ++t) isum[t] = vdupq_n_s32(0);
      for (int h = 0; h < 2; ++h) {
        const uint8_t* ql = blk + 64 * h;
        const uint8_t* qh = blk + 128 + 32 * h;
        int8x16_t v[8];  // sub-blocks 8h .. 8h+7 (16 codes each), minus 32
        for (int i = 0; i < 2; ++i) {
          const uint8x16_t a = vld1q_u8(ql + 16 * i), b = vld1q_u8(ql + 32 + 16 * i), hb = vld1q_u8(qh + 16 * i);
          const uint8x16_t c0 = vorrq_u8(vandq_u8(a, lo4), vshlq_n_u8(vandq_u8(hb, m3), 4));
          const uint8x16_t c1 = vorrq_u8(vandq_u8(b, lo4), vshlq_n_u8(vandq_u8(vshrq_n_u8(hb, 2), m3), 4));
          const uint8x16_t c2 = vorrq_u8(vshrq_n_u8(a, 4), vshlq_n_u8(vandq_u8(vshrq_n_u8(hb, 4), m3), 4));
          const uint8x16_t c3 = vorrq_u8(vshrq_n_u8(b, 4), vshlq_n_u8(vshrq_n_u8(hb, 6), 4));
          v[0 + i] = vsubq_s8(vreinterpretq_s8_u8(c0), o32);
          v[2 + i] = vsubq_s8(vreinterpretq_s8_u8(c1), o32);
          v[4 + i] = vsubq_s8(vreinterpretq_s8_u8(c2), o32);
          v[6 + i] = vsubq_s8(vreinterpretq_s8_u8(c3), o32);
        }
        for (int t = 0; t < NR; ++t) {
          const int8_t* xq = xa[t].qs + 256 * sb + 128 * h;
          for (int e = 0; e < 8; ++e)
            isum[t] = vmlaq_n_s32(isum[t], D::dot(vdupq_n_s32(0), v[e], vld1q_s8(xq + 16 * e)), sc[8 * h + e]);
        }
      }
      for (int t = 0; t < NR; ++t) acc[t] = vfmaq_n_f32(acc[t], vcvtq_f32_s32(isum[t]), d * xa[t].d[sb]);
    }
    for (int t = 0; t < NR; ++t) out[0][t] = vaddvq_f32(acc[t]);
  }
};

template <class D>
void fill_common(KernelSet& ks, const char* name) {
  fill_ref(ks);  // Q5_0, Q5_1, Q5_K stay scalar on the ARM paths
  ks.name = name;
  ks.quantize_a8 = quantize_a8;
  ks.quantize_a8k = quantize_a8k;
  auto set = [&](DType t, GemmFn f) { ks.gemm[static_cast<int>(t)] = f; };
  set(DType::F32, gemm_tiled<FloatTile<LoadF32>>);
  set(DType::F16, gemm_tiled<FloatTile<LoadF16>>);
  set(DType::BF16, gemm_tiled<FloatTile<LoadBF16>>);
  set(DType::Q4_0, gemm_tiled<Block32Tile<D, 0>>);
  set(DType::Q4_1, gemm_tiled<Block32Tile<D, 1>>);
  set(DType::Q8_0, gemm_tiled<Block32Tile<D, 2>>);
  set(DType::Q4_K, gemm_tiled<Q4KTile<D>>);
  set(DType::Q6_K, gemm_tiled<Q6KTile<D>>);
}
