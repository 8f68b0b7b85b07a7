// Flash-style full (bidirectional, unmasked) attention of one block of query rows against one head
// whose K and V were packed once: the inner kernel of model/attention_full (the SigLIP tower's self
// attention; head_dim 72, 1024 keys per 448x448 slice).
//
//   out[r] = softmax_j(q[r] . k[j]) v[j]        (q already multiplied by the softmax scale)
//
// Packed layouts of one head (n_kv keys, head dim d, dp = d rounded up to 16, nkp = n_kv rounded
// up to 16), zero past the real keys / dims:
//   kt: [nkp / 16][d][16]   K^T in strips of 16 keys: one vector load is one dim of 16 keys, so
//                           q.K^T is pure FMA against a broadcast query element;
//   vp: [nkp][dp]           V rows padded to whole vectors (d = 72 -> 80: 5 zmm, no masked tail).
// Keys are visited in tiles of kTile with an online softmax (running max m and sum l per row, the
// output rescaled by exp(m_old - m_new) when the max grows): no score row of all n_kv keys exists.
// Padded keys get a score of -inf in the last tile, so they add nothing.
#pragma once
#include <cstdint>

namespace minicpmv::kernels::vattn {

constexpr int64_t kTile = 64;  // keys per online-softmax step (a multiple of 16)
constexpr int64_t kRows = 48;  // query rows per block, at most (a multiple of the 4-row micro tiles)

inline int64_t padded_keys(int64_t n_kv) { return (n_kv + 15) / 16 * 16; }
inline int64_t padded_dim(int64_t d) { return (d + 15) / 16 * 16; }
// Floats of per-thread scratch a block needs: scores [kRows][kTile], output [kRows][dp], m and l,
// and (bf16 variant) the probabilities as bf16 pairs [kRows][kTile / 2].
inline int64_t scratch_floats(int64_t d) { return kRows * (kTile + padded_dim(d) + 2 + kTile / 2) + 64; }

// The bf16 variant (vdpbf16ps: pairs of bf16 products summed into f32 lanes; only for the "bf16"
// weights option, on CPUs with AVX512_BF16). Its packed head, bf16 with round-to-nearest-even:
//   ktb: [nkp / 16][d2][16][2]   d2 = d rounded up to even / 2: one vector = dims (2c, 2c+1) of
//                               16 keys; zero past d
//   vpb: [nkp / 2][dp][2]        one vector = keys (2j, 2j+1) of 16 dims
// The block's queries are bf16 pairs too (q2, d2 per row); scores, the online softmax and the output
// stay f32; the probabilities are rounded to bf16 for P.V.
inline int64_t half_dim(int64_t d) { return (d + 1) / 2; }

struct Block {
  const float* q = nullptr;  // rows x d, contiguous (stride d), pre-scaled
  int64_t rows = 0;          // 1 .. kRows
  const float* kt = nullptr; // packed K^T of the head
  const float* vp = nullptr; // packed V of the head
  int64_t n_kv = 0, d = 0;
  float* out = nullptr;      // row r at out + r * out_stride, d floats written
  int64_t out_stride = 0;
  const uint32_t* q2 = nullptr;   // bf16 variant: rows x d2 query pairs, pre-scaled
  const uint16_t* ktb = nullptr;  // bf16 variant: packed K^T
  const uint16_t* vpb = nullptr;  // bf16 variant: packed V
};

using BlockFn = void (*)(const Block& b, float* scratch);

// Scalar twin (the reference the SIMD versions are tested against); same tiles, std::exp.
void block_ref(const Block& b, float* scratch);
#if defined(MINICPMV_X86)
void block_avx2(const Block& b, float* scratch);         // AVX2 + FMA
void block_avx512(const Block& b, float* scratch);       // AVX-512F
void block_avx512_bf16(const Block& b, float* scratch);  // AVX-512F + AVX512_BF16 (q2, ktb, vpb)
#endif
// Scalar twin of the bf16 variant: the same bf16 inputs, pair products summed in f32.
void block_bf16_ref(const Block& b, float* scratch);

// Pack keys [j0, j1) (j1 <= nkp; keys >= n_kv become zeros) of one head whose rows start at k / v
// (k + j * k_stride is key j's head slice) into kt / vp.
void pack_keys(const float* k, int64_t k_stride, const float* v, int64_t v_stride, int64_t n_kv, int64_t d,
               int64_t j0, int64_t j1, float* kt, float* vp);
// The same into the bf16 layouts (j0 even, j1 <= nkp even).
void pack_keys_bf16(const float* k, int64_t k_stride, const float* v, int64_t v_stride, int64_t n_kv, int64_t d,
                    int64_t j0, int64_t j1, uint16_t* ktb, uint16_t* vpb);
// A block's queries for the bf16 variant: q2[r * d2 + c2] = bf16(scale q[r][2c2]) | bf16(scale q[r][2c2+1]) << 16
// (zero past d), rows r < rows of q (q + r * q_stride).
void queries_bf16(const float* q, int64_t q_stride, int64_t rows, int64_t d, float scale, uint32_t* q2);
#if defined(MINICPMV_X86)
void queries_bf16_avx512(const float* q, int64_t q_stride, int64_t rows, int64_t d, float scale, uint32_t* q2);
// The same for one strip of 16 keys (j0 a multiple of 16, j1 = j0 + 16) with AVX-512 conversions
// (vcvtneps2bf16: nearest even as fp32_to_bf16, but denormal inputs become zeros): the scalar
// packing took ~1/3 of the bf16 kernel's time at the tower's shape.
void pack_keys_bf16_avx512(const float* k, int64_t k_stride, const float* v, int64_t v_stride, int64_t n_kv,
                           int64_t d, int64_t j0, int64_t j1, uint16_t* ktb, uint16_t* vpb);
#endif

}  // namespace minicpmv::kernels::vattn
