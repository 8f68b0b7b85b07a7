#include "bindings/bindings.h"

namespace minicpmv::py {

void bind_quant(pyb::module_& m) {}

}  // namespace minicpmv::py
