#include "bindings/bindings.h"

namespace minicpmv::py {

void bind_text(pyb::module_& m) {}

}  // namespace minicpmv::py
