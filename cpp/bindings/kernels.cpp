#include "bindings/bindings.h"

namespace minicpmv::py {

void bind_kernels(pyb::module_& m) {}

}  // namespace minicpmv::py
