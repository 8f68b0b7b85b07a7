// The pybind11 module minicpmv_edge._core is split by engine layer; each file binds its layer
// and holds no logic of its own.
#pragma once
#include <pybind11/pybind11.h>

namespace minicpmv::py {
namespace pyb = pybind11;
void bind_gguf(pyb::module_& m);
void bind_quant(pyb::module_& m);
void bind_kernels(pyb::module_& m);
void bind_text(pyb::module_& m);
void bind_vision(pyb::module_& m);
void bind_model(pyb::module_& m);          // language model (Qwen2)
void bind_vision_model(pyb::module_& m);   // SigLIP + resampler
}  // namespace minicpmv::py
