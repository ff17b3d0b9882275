// Torch glue of the CUDA advantage kernels (advantage.cu): checks, output and scratch allocation,
// the current stream.  Built only in CUDA builds of the extension (R1CORE_WITH_CUDA).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // c10::cuda::getCurrentCUDAStream (= at::cuda::getCurrentCUDAStream)

#include "advantage/advantage.h"
#include "advantage/advantage_ops.h"

namespace r1core {

namespace {

AdvDtype adv_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return AdvDtype::kFloat32;
    case at::kDouble: return AdvDtype::kFloat64;
    default: R1_CHECK(false, "rewards must be float32 or float64 here, got ", t);
  }
  return AdvDtype::kFloat32;  // unreachable
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> advantage_cuda(const at::Tensor& rewards_gG, const std::string& scale,
                                                  const std::string& baseline, double eps, bool check_finite) {
  check_cuda(rewards_gG, "rewards");
  check_adv_args(rewards_gG, eps);
  const AdvScale sc = parse_adv_scale(scale);
  const AdvBaseline bl = parse_adv_baseline(baseline);
  const c10::cuda::CUDAGuard guard(rewards_gG.device());
  // float16/bfloat16 rewards: widened to float32 first (exact, one small extra kernel)
  const at::Tensor r_gG = rewards_gG.scalar_type() == at::kDouble ? rewards_gG : rewards_gG.to(at::kFloat);
  const AdvDtype dt = adv_dtype(r_gG.scalar_type());

  const int64_t n_groups = rewards_gG.size(0), G = rewards_gG.size(1);
  at::Tensor out = at::empty({n_groups, G}, rewards_gG.options().dtype(at::kFloat));
  at::Tensor bad = check_finite ? at::zeros({1}, rewards_gG.options().dtype(at::kInt)) : at::Tensor();
  if (n_groups == 0) return {out, bad};

  const size_t ws_bytes = advantage_workspace_bytes(sc);
  at::Tensor workspace = ws_bytes ? at::empty({static_cast<int64_t>(ws_bytes)}, rewards_gG.options().dtype(at::kByte))
                                  : at::Tensor();
  const cudaError_t err = advantage_launch(
      r_gG.const_data_ptr(), dt, n_groups, G, r_gG.stride(0), r_gG.stride(1), sc, bl,
      static_cast<float>(eps), out.mutable_data_ptr<float>(), check_finite ? bad.mutable_data_ptr<int>() : nullptr,
      ws_bytes ? workspace.mutable_data_ptr() : nullptr, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "advantage_cuda: kernel launch failed: ", cudaGetErrorString(err));
  return {out, bad};
}

}  // namespace r1core
