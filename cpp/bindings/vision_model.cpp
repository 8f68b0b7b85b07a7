#include "bindings/bindings.h"

namespace minicpmv::py {

void bind_vision_model(pyb::module_& m) {}

}  // namespace minicpmv::py
