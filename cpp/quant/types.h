// Tensor element types. The numeric values are ggml's `ggml_type` ids, which GGUF files store in
// their tensor infos, so they must never change.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace minicpmv {

enum class DType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  BF16 = 30,
};

struct TypeTraits {
  const char* name;     // ggml's name: "f32", "q4_K", ...
  int64_t block_size;   // elements per block (1 for plain types)
  size_t type_size;     // bytes per block
  bool supported;       // this engine can read it (dequantize / matmul)
};

// Traits of a type id read from a file. Returns nullptr for ids this engine does not know at all.
const TypeTraits* type_traits(uint32_t type_id);
const TypeTraits& type_traits(DType t);
const char* type_name(DType t);

// The type named `name` as ggml writes it ("f32", "q4_K", ...), case-insensitive ("Q4_K" and
// "q4_k" both work: users type either). InvalidArgument naming the known types otherwise.
DType dtype_from_name(const std::string& name);

// Bytes of one row of n elements; n must be a multiple of the block size (checked by callers
// that read files: GGUF validation rejects rows that are not).
inline size_t row_size(DType t, int64_t n) {
  const TypeTraits& tr = type_traits(t);
  return static_cast<size_t>(n / tr.block_size) * tr.type_size;
}

}  // namespace minicpmv
