#include <pybind11/pybind11.h>

#include "bindings/bindings.h"
#include "minicpmv/error.h"

namespace pyb = pybind11;

PYBIND11_MODULE(_core, m) {
  m.doc() = "minicpmv-edge engine (C++): GGUF, block formats, kernels, models";

  // Errors: typed C++ errors become the Python exceptions a user expects.
  static pyb::exception<minicpmv::ContextOverflow> context_error(m, "ContextLimitError", PyExc_ValueError);
  pyb::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const minicpmv::FileError& e) {
      PyErr_SetString(e.not_found ? PyExc_FileNotFoundError : PyExc_OSError, e.what());
    } catch (const minicpmv::ContextOverflow& e) {
      context_error(e.what());
    } catch (const minicpmv::FormatError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const minicpmv::InvalidArgument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const minicpmv::Error& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    }
  });

  minicpmv::py::bind_gguf(m);
  minicpmv::py::bind_quant(m);
  minicpmv::py::bind_kernels(m);
  minicpmv::py::bind_text(m);
  minicpmv::py::bind_vision(m);
  minicpmv::py::bind_model(m);
  minicpmv::py::bind_vision_model(m);
}
