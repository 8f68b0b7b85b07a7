#include "bindings/bindings.h"

namespace minicpmv::py {

void bind_gguf(pyb::module_& m) {}

}  // namespace minicpmv::py
