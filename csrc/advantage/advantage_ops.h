// The torch-facing entry points of the advantage op (docs/spec.md §1) and their option parsing, shared by
// the CPU kernel (advantage_cpu.cpp, which also registers both) and the CUDA glue (advantage_cuda.cpp).
#pragma once
#include <ATen/ATen.h>

#include <cmath>
#include <string>
#include <tuple>

#include "advantage/advantage_enums.h"
#include "common.h"

namespace r1core {

inline AdvScale parse_adv_scale(const std::string& s) {
  if (s == "group") return AdvScale::kGroup;
  if (s == "batch") return AdvScale::kBatch;
  R1_CHECK(s == "none", "scale must be one of 'group', 'batch', 'none', got '", s, "'");
  return AdvScale::kNone;
}

inline AdvBaseline parse_adv_baseline(const std::string& s) {
  if (s == "mean") return AdvBaseline::kMean;
  R1_CHECK(s == "rloo", "baseline must be one of 'mean', 'rloo', got '", s, "'");
  return AdvBaseline::kRloo;
}

// Checks shared by both devices: rewards [n_groups, G], a float dtype, G >= 2, eps finite and >= 0.
inline void check_adv_args(const at::Tensor& rewards_gG, double eps) {
  check_dim(rewards_gG, 2, "rewards");
  const auto dt = rewards_gG.scalar_type();
  R1_CHECK(dt == at::kFloat || dt == at::kDouble || dt == at::kHalf || dt == at::kBFloat16,
           "rewards must be float32, float64, float16 or bfloat16, got ", dt);
  R1_CHECK(rewards_gG.size(1) >= 2, "group_size must be >= 2, got ", rewards_gG.size(1));
  R1_CHECK(std::isfinite(eps) && eps >= 0.0, "eps must be finite and >= 0, got ", eps);
}

// rewards_gG [n_groups, G] (any strides) -> advantages [n_groups, G] float32.  Raises ValueError
// on a non-finite reward when check_finite (the check is fused into the kernel's pass).
at::Tensor advantage_cpu(const at::Tensor& rewards_gG, const std::string& scale, const std::string& baseline,
                         double eps, bool check_finite);

#ifdef R1CORE_WITH_CUDA
// The same on a CUDA tensor, asynchronously: returns (advantages, flag) where flag is an int32 [1]
// tensor set to 1 when a reward is not finite (undefined -> None when check_finite is false).
// Reading the flag is the caller's choice of device sync.
std::tuple<at::Tensor, at::Tensor> advantage_cuda(const at::Tensor& rewards_gG, const std::string& scale,
                                                  const std::string& baseline, double eps, bool check_finite);
#endif

}  // namespace r1core
