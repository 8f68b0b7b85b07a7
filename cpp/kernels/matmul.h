// Matrix products for every weight format: the one entry point the models call.
//
//   Y[n x rows] = X[n x cols] . W^T        (X, Y: f32, row-major)
//
// n == 1 is the decode matvec; n > 1 the prefill / vision matmul. For block-quantized weights the
// activations are quantized on the fly to the format's int8 partner (Q8_0 blocks, or Q8_K for
// K-quants) and the products run in integer dot-product instructions, as llama.cpp does.
// The kernel path (ref | avx2 | avx512 | neon | dotprod | i8mm) is chosen once from the CPU's
// features; MINICPMV_ISA forces one.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "quant/types.h"

namespace minicpmv {
class ThreadPool;

namespace kernels {

enum class Isa { Ref, Avx2, Avx512, Neon, Dotprod, I8mm };
const char* isa_name(Isa isa);
Isa best_isa();           // the best path this CPU supports
Isa active_isa();         // best_isa(), or MINICPMV_ISA if set (InvalidArgument if unsupported here)
void set_isa(Isa isa);    // for tests and benchmarks; InvalidArgument if this CPU cannot run it
bool isa_available(Isa isa);        // this CPU (and this build's architecture) can run it
std::vector<Isa> available_isas();  // every path isa_available() accepts, ref first
Isa isa_from_name(const std::string& name);  // "ref", "avx2", ...; InvalidArgument if unknown
bool matmul_supports(DType type);   // a kernel exists for weights of this type

// How a Weight's bytes are laid out.
//   Rows:     row-major rows of row_size(type, cols) bytes, as GGUF stores them.
//   Q8Rows16: Q8_0 repacked in panels of 16 rows for the int8 GEMM (kernels/packed_q8.h); data()
//             is the packed buffer (row_bytes() == 0: no row addressing), which the Weight owns.
enum class Layout { Rows, Q8Rows16 };

// A weight matrix [rows x cols] ready for the kernels. By default it points into the caller's
// memory (the mapped GGUF file: no copy). A repacked layout owns its bytes (shared by copies).
class Weight {
 public:
  Weight() = default;
  // `data` holds rows * row_size(type, cols) bytes, row-major, and must outlive the Weight.
  static Weight view(DType type, int64_t rows, int64_t cols, const void* data);
  // A repacked layout (layout != Rows) of `bytes` the Weight keeps alive.
  static Weight repacked(DType type, Layout layout, int64_t rows, int64_t cols, std::shared_ptr<void> bytes);

  DType type() const { return type_; }
  Layout layout() const { return layout_; }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  const void* data() const { return data_; }
  size_t row_bytes() const { return row_bytes_; }
  bool empty() const { return data_ == nullptr; }

 private:
  DType type_ = DType::F32;
  Layout layout_ = Layout::Rows;
  int64_t rows_ = 0, cols_ = 0;
  const void* data_ = nullptr;
  size_t row_bytes_ = 0;
  std::shared_ptr<void> owned_;  // the repacked bytes
};

// Y = X . W^T. X has n rows of W.cols() floats, Y n rows of W.rows() floats.
void matmul(const Weight& W, const float* X, int64_t n, float* Y, ThreadPool& pool);
// The same on a given path (tests, benchmarks); InvalidArgument if this CPU cannot run it.
void matmul(const Weight& W, const float* X, int64_t n, float* Y, ThreadPool& pool, Isa isa);

// One product of a fused call: Y[n x w->rows()] = X . w^T.
struct MatmulOut {
  const Weight* w = nullptr;
  float* y = nullptr;
};
constexpr int kMaxMatmulMulti = 8;

// Several weights with the same cols times one X (a layer's q/k/v, or gate/up): the activations
// are quantized once per distinct activation layout and all weights' rows run as ONE pool job, so
// a decode token pays one barrier instead of one per weight and small matrices (k, v) are not cut
// into tiny pieces. Weights may differ in type and rows. Each Y equals what matmul(*w, X, n, y)
// writes, bit for bit. InvalidArgument: no weights, more than kMaxMatmulMulti, an empty weight or
// null output, or cols that differ from the first weight's.
void matmul_multi(const MatmulOut* outs, int count, const float* X, int64_t n, ThreadPool& pool);
void matmul_multi(const MatmulOut* outs, int count, const float* X, int64_t n, ThreadPool& pool, Isa isa);

}  // namespace kernels
}  // namespace minicpmv
