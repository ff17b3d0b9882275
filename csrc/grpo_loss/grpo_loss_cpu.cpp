// Placeholder until the grpo_loss kernels land: registers nothing.
#include <torch/extension.h>

#include "register.h"

namespace r1core {
void register_grpo_loss(pybind11::module_& m) { (void)m; }
}  // namespace r1core
