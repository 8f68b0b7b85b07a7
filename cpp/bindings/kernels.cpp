// _core.matmul / _core.isa_info: the kernels for tests and benchmarks (the models call them in C++).
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cctype>
#include <map>
#include <memory>
#include <mutex>

#include "bindings/bindings.h"
#include "kernels/matmul.h"
#include "minicpmv/error.h"
#include "runtime/cpu.h"
#include "runtime/threadpool.h"

namespace minicpmv::py {
namespace {

DType dtype_from(const pyb::object& t) {
  if (pyb::isinstance<pyb::int_>(t)) {
    const uint32_t id = t.cast<uint32_t>();
    if (!type_traits(id)) throw InvalidArgument("matmul: unknown type id " + std::to_string(id));
    return static_cast<DType>(id);
  }
  std::string name = pyb::str(t);
  auto lower = [](std::string v) {
    for (char& c : v) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return v;
  };
  for (uint32_t id = 0; id < 64; ++id) {
    const TypeTraits* tr = type_traits(id);
    if (tr && lower(name) == lower(tr->name)) return static_cast<DType>(id);
  }
  throw InvalidArgument("matmul: unknown weight type '" + name + "'");
}

ThreadPool& pool_of(int n) {
  static std::mutex mu;
  static std::map<int, std::unique_ptr<ThreadPool>> pools;
  std::lock_guard<std::mutex> lock(mu);
  auto& p = pools[n];
  if (!p) p = std::make_unique<ThreadPool>(n);
  return *p;
}

}  // namespace

void bind_kernels(pyb::module_& m) {
  m.def(
      "matmul",
      [](const pyb::object& type, pyb::array_t<uint8_t, pyb::array::c_style | pyb::array::forcecast> w, int64_t rows,
         int64_t cols, pyb::array_t<float, pyb::array::c_style | pyb::array::forcecast> x,
         const std::optional<std::string>& isa, int n_threads) {
        const DType t = dtype_from(type);
        const kernels::Isa path = isa ? kernels::isa_from_name(*isa) : kernels::active_isa();
        if (n_threads < 1) throw InvalidArgument("matmul: n_threads must be >= 1");
        if (rows <= 0 || cols <= 0) throw InvalidArgument("matmul: rows and cols must be positive");
        const int64_t bs = type_traits(t).block_size;
        if (cols % bs != 0)
          throw InvalidArgument("matmul: cols " + std::to_string(cols) + " is not a multiple of the " +
                                type_name(t) + " block size " + std::to_string(bs));
        const size_t need = row_size(t, cols) * static_cast<size_t>(rows);
        if (static_cast<size_t>(w.size()) != need)
          throw InvalidArgument("matmul: weight buffer has " + std::to_string(w.size()) + " bytes, " + type_name(t) +
                                " " + std::to_string(rows) + " x " + std::to_string(cols) + " needs " +
                                std::to_string(need));
        if (x.ndim() != 2 || x.shape(1) != cols)
          throw InvalidArgument("matmul: x must be float32 [n, " + std::to_string(cols) + "]");
        const int64_t n = x.shape(0);
        pyb::array_t<float> y({n, rows});
        kernels::Weight W = kernels::Weight::view(t, rows, cols, w.data());
        ThreadPool& pool = pool_of(n_threads);
        const float* xp = x.data();
        float* yp = y.mutable_data();
        {
          pyb::gil_scoped_release release;
          kernels::matmul(W, xp, n, yp, pool, path);
        }
        return y;
      },
      pyb::arg("type"), pyb::arg("w"), pyb::arg("rows"), pyb::arg("cols"), pyb::arg("x"),
      pyb::arg("isa") = pyb::none(), pyb::arg("n_threads") = 1,
      "Y[n, rows] = X[n, cols] . W^T for weights in a GGUF block format (type: name like 'q4_K' or ggml id).");

  m.def("isa_info", [] {
    pyb::dict d;
    d["best"] = kernels::isa_name(kernels::best_isa());
    d["active"] = kernels::isa_name(kernels::active_isa());
    pyb::list avail;
    for (kernels::Isa i : kernels::available_isas()) avail.append(kernels::isa_name(i));
    d["available"] = avail;
    pyb::dict flags;
    for (auto& f : cpu::feature_list()) flags[f.first.c_str()] = f.second;
    d["cpu"] = flags;
    return d;
  });
}

}  // namespace minicpmv::py
