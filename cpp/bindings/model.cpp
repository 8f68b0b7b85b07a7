#include "bindings/bindings.h"

namespace minicpmv::py {

void bind_model(pyb::module_& m) {}

}  // namespace minicpmv::py
