// Torch glue for the CUDA MoE permutation (moe_align.cu): validates, allocates, launches on the
// current stream.  Built only in CUDA builds of the extension (R1CORE_WITH_CUDA).
// Only the c10 stream and guard headers: ATen/cuda/CUDAContext.h pulls in cuBLAS, cuSPARSE and
// cuSOLVER headers, which a plain CUDA toolkit (or torch's pip CUDA wheels) need not ship.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // c10::cuda::getCurrentCUDAStream
#include <torch/extension.h>

#include "common.h"
#include "moe/moe_align.h"
#include "register.h"

namespace r1core {

// -> [sorted_ids [P_max], inverse [S], block_expert [P_max/B], seg_start [E+1], counts [E]], int32
// (layout in moe_align.h).  Ids must already lie in [0, E): the kernels skip others, the Python op checks.
std::vector<at::Tensor> moe_align_cuda(const at::Tensor& ids, int64_t num_experts, int64_t block) {
  check_cuda(ids, "ids");
  R1_CHECK(!ids.is_floating_point() && ids.scalar_type() != at::kBool, "ids must be an integer tensor, got ",
           ids.scalar_type());
  R1_CHECK(num_experts >= 1 && num_experts <= 3072, "num_experts must be in [1, 3072], got ", num_experts);
  R1_CHECK(block >= 1 && block <= 1024, "block must be in [1, 1024], got ", block);
  const int64_t S = ids.numel();
  R1_CHECK(S + num_experts * block < (int64_t(1) << 31), "too many assignments for int32 positions: ", S);
  const c10::cuda::CUDAGuard guard(ids.device());
  const at::Tensor ids64 = ids.to(at::kLong).contiguous();
  const int64_t P_max = (S + num_experts * (block - 1) + block - 1) / block * block;
  const auto opt = ids.options().dtype(at::kInt);
  at::Tensor sorted_ids = at::empty({P_max}, opt);
  at::Tensor inverse = at::empty({S}, opt);
  at::Tensor block_expert = at::empty({P_max / block}, opt);
  at::Tensor seg_start = at::empty({num_experts + 1}, opt);
  at::Tensor counts = at::empty({num_experts}, opt);
  at::Tensor workspace = at::empty({moe_align_workspace_size(S, (int)num_experts)}, opt);
  const cudaError_t err = moe_align_launch(
      ids64.data_ptr<int64_t>(), S, (int)num_experts, (int)block, P_max, sorted_ids.data_ptr<int32_t>(),
      inverse.data_ptr<int32_t>(), block_expert.data_ptr<int32_t>(), seg_start.data_ptr<int32_t>(),
      counts.data_ptr<int32_t>(), workspace.data_ptr<int32_t>(), c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "moe_align_launch failed: ", cudaGetErrorString(err));
  return {sorted_ids, inverse, block_expert, seg_start, counts};
}

void register_moe_cuda(pybind11::module_& m) {
  m.def("moe_align_cuda", &moe_align_cuda, pybind11::arg("ids"), pybind11::arg("num_experts"),
        pybind11::arg("block"),
        "Sort the T*k MoE assignments by expert, segments padded to `block` (CUDA).\n"
        "-> [sorted_ids, inverse, block_expert, seg_start, counts], int32 (see csrc/moe/moe_align.h)");
}

}  // namespace r1core
