// r1core._C: the C++ CPU kernels always, the CUDA kernels in a CUDA build (R1CORE_WITH_CUDA).
#include <torch/extension.h>

#include "register.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "r1core C++/CUDA kernels";
#ifdef R1CORE_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  r1core::register_advantage(m);
  r1core::register_grpo_loss(m);
  r1core::register_moe(m);
}
