// Block layouts of the quantized formats, byte-identical to ggml's (GGUF stores these blocks
// as-is). A row of n elements is n / QK consecutive blocks. Scales `d`, `m`, `dmin` are IEEE
// half floats stored as uint16_t (see quant/f16.h).
#pragma once
#include <cstdint>

namespace minicpmv {

constexpr int QK4_0 = 32, QK4_1 = 32, QK5_0 = 32, QK5_1 = 32, QK8_0 = 32, QK8_1 = 32;
constexpr int QK_K = 256;       // super-block size of the K-quants
constexpr int K_SCALE_SIZE = 12;

// Q4_0: x = d * (q - 8), q in [0, 15]. qs[j] holds element j (low nibble) and j + 16 (high).
struct block_q4_0 {
  uint16_t d;
  uint8_t qs[QK4_0 / 2];
};
static_assert(sizeof(block_q4_0) == 18, "q4_0 block");

// Q4_1: x = d * q + m, q in [0, 15]; nibbles as Q4_0.
struct block_q4_1 {
  uint16_t d, m;
  uint8_t qs[QK4_1 / 2];
};
static_assert(sizeof(block_q4_1) == 20, "q4_1 block");

// Q5_0: x = d * (q - 16), q = low nibble (as Q4_0) | bit j of qh << 4 (bits 0..15 for elements
// 0..15, bits 16..31 for 16..31).
struct block_q5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[QK5_0 / 2];
};
static_assert(sizeof(block_q5_0) == 22, "q5_0 block");

// Q5_1: x = d * q + m, q as Q5_0.
struct block_q5_1 {
  uint16_t d, m;
  uint8_t qh[4];
  uint8_t qs[QK5_1 / 2];
};
static_assert(sizeof(block_q5_1) == 24, "q5_1 block");

// Q8_0: x = d * q, q int8. Also the activation partner of Q4_0/Q4_1/Q5_x/Q8_0 weights.
struct block_q8_0 {
  uint16_t d;
  int8_t qs[QK8_0];
};
static_assert(sizeof(block_q8_0) == 34, "q8_0 block");

// Q8_1: as Q8_0 plus s = d * sum(qs) (activation partner of Q4_1 / Q5_1: folds in the offset m).
struct block_q8_1 {
  uint16_t d, s;
  int8_t qs[QK8_1];
};
static_assert(sizeof(block_q8_1) == 36, "q8_1 block");

// Q4_K: 8 sub-blocks of 32; x = d * sc[j] * q - dmin * m[j], q in [0, 15]; the 6-bit sc/m pairs
// are packed in `scales` (get_scale_min_k4). qs: 4 groups of 32 bytes, each holding sub-block 2g
// in the low nibbles and 2g + 1 in the high nibbles.
struct block_q4_K {
  uint16_t d, dmin;
  uint8_t scales[K_SCALE_SIZE];
  uint8_t qs[QK_K / 2];
};
static_assert(sizeof(block_q4_K) == 144, "q4_K block");

// Sub-block j (0..7) of a Q4_K / Q5_K super-block: its 6-bit scale and min. Bytes 0-3 hold the
// scales of sub-blocks 0-3 (low 6 bits), bytes 4-7 their mins; sub-blocks 4-7 keep their low 4
// bits in the nibbles of bytes 8-11 (scale low, min high) and their top 2 bits in the spare top
// bits of bytes 0-3 (scales) and 4-7 (mins).
inline void get_scale_min_k4(int j, const uint8_t* s, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = static_cast<uint8_t>((s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
  }
}

// Q5_K: as Q4_K with a fifth bit per element in qh (bit 2g / 2g + 1 of qh[l] for element l of
// sub-blocks 2g / 2g + 1).
struct block_q5_K {
  uint16_t d, dmin;
  uint8_t scales[K_SCALE_SIZE];
  uint8_t qh[QK_K / 8];
  uint8_t qs[QK_K / 2];
};
static_assert(sizeof(block_q5_K) == 176, "q5_K block");

// Q6_K: 16 sub-blocks of 16; x = d * scales[j] * (q - 32), q 6-bit = 4 low bits in ql + 2 high
// bits in qh; scales int8.
struct block_q6_K {
  uint8_t ql[QK_K / 2];
  uint8_t qh[QK_K / 4];
  int8_t scales[QK_K / 16];
  uint16_t d;
};
static_assert(sizeof(block_q6_K) == 210, "q6_K block");

// Q8_K: activation partner of the K-quants. f32 scale, int8 values, bsums = sums of each 16.
struct block_q8_K {
  float d;
  int8_t qs[QK_K];
  int16_t bsums[QK_K / 16];
};
static_assert(sizeof(block_q8_K) == 292, "q8_K block");

}  // namespace minicpmv
