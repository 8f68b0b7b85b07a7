#include "bindings/bindings.h"

namespace minicpmv::py {

void bind_vision(pyb::module_& m) {}

}  // namespace minicpmv::py
