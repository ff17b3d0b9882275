// Placeholder until the advantage kernels land: registers nothing.
#include <torch/extension.h>

#include "register.h"

namespace r1core {
void register_advantage(pybind11::module_& m) { (void)m; }
}  // namespace r1core
