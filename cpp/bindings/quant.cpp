// _core.dequantize / _core.quantize / _core.type_info: the block formats of quant/ seen from Python.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <memory>
#include <string>

#include "bindings/bindings.h"
#include "minicpmv/error.h"
#include "quant/quant.h"
#include "quant/types.h"
#include "runtime/threadpool.h"

namespace minicpmv::py {
namespace {

pyb::array_t<float> dequantize(const std::string& type_name_arg, const pyb::buffer& data, int64_t n) {
  const DType type = dtype_from_name(type_name_arg);
  const TypeTraits& tr = type_traits(type);
  if (n < 0 || n % tr.block_size != 0)
    throw InvalidArgument("dequantize " + std::string(tr.name) + ": n = " + std::to_string(n) +
                          " is not a multiple of the block size " + std::to_string(tr.block_size));
  const pyb::buffer_info buf = data.request();
  const int64_t nbytes = buf.size * buf.itemsize;
  bool contiguous = true;
  for (ssize_t k = buf.ndim - 1, stride = buf.itemsize; k >= 0; --k) {
    if (buf.shape[k] > 1 && buf.strides[k] != stride) contiguous = false;
    stride *= buf.shape[k];
  }
  if (!contiguous) throw InvalidArgument("dequantize: data must be C-contiguous");
  const size_t want = row_size(type, n);
  if (static_cast<size_t>(nbytes) != want)
    throw InvalidArgument("dequantize " + std::string(tr.name) + ": " + std::to_string(n) +
                          " elements need " + std::to_string(want) + " bytes, got " +
                          std::to_string(nbytes));
  pyb::array_t<float> out(n);
  {
    pyb::gil_scoped_release release;
    dequantize_row(type, buf.ptr, out.mutable_data(), n);
  }
  return out;
}

pyb::array_t<uint8_t> quantize(const std::string& type_name_arg,
                               const pyb::array_t<float, pyb::array::c_style | pyb::array::forcecast>& x,
                               int n_threads) {
  const DType type = dtype_from_name(type_name_arg);
  if (!can_quantize(type)) throw InvalidArgument(std::string("quantize: cannot write type ") + type_name(type));
  if (x.ndim() != 2)
    throw InvalidArgument("quantize: x must be 2-D (rows, cols), got " + std::to_string(x.ndim()) + "-D");
  if (n_threads < 0) throw InvalidArgument("quantize: n_threads must be >= 0 (0 = all cores)");
  const int64_t rows = x.shape(0), cols = x.shape(1);
  const TypeTraits& tr = type_traits(type);
  if (cols % tr.block_size != 0)
    throw InvalidArgument("quantize to " + std::string(tr.name) + ": " + std::to_string(cols) +
                          " columns is not a multiple of the block size " + std::to_string(tr.block_size));
  const int64_t rb = static_cast<int64_t>(row_size(type, cols));
  pyb::array_t<uint8_t> out({rows, rb});
  const float* src = x.data();
  uint8_t* dst = out.mutable_data();
  {
    pyb::gil_scoped_release release;
    std::unique_ptr<ThreadPool> own;
    if (n_threads > 0) own = std::make_unique<ThreadPool>(n_threads);
    quantize_rows(type, src, dst, rows, cols, own.get());
  }
  return out;
}

pyb::dict type_info(const std::string& type_name_arg) {
  const DType type = dtype_from_name(type_name_arg);
  const TypeTraits& tr = type_traits(type);
  pyb::dict d;
  d["name"] = tr.name;
  d["block_size"] = tr.block_size;
  d["type_size"] = tr.type_size;
  d["id"] = static_cast<uint32_t>(type);
  d["can_quantize"] = can_quantize(type);
  d["supported"] = tr.supported;  // the engine can dequantize / multiply weights of this type
  return d;
}

}  // namespace

void bind_quant(pyb::module_& m) {
  m.def("dequantize", &dequantize, pyb::arg("type"), pyb::arg("data"), pyb::arg("n"),
        "Raw blocks (bytes or a contiguous numpy array) of `type` -> float32[n].");
  m.def("quantize", &quantize, pyb::arg("type"), pyb::arg("x"), pyb::arg("n_threads") = 0,
        "float32 (rows, cols) -> uint8 (rows, row_bytes) blocks of `type`, rows split across threads "
        "(0 = the default pool).");
  m.def("type_info", &type_info, pyb::arg("type"),
        "dict(name, block_size, type_size, id, can_quantize, supported) of a ggml type name.");
}

}  // namespace minicpmv::py
