// Group-normalised GRPO advantage (docs/spec.md §1) on CPU, and the registration of the advantage entry points.
//
// Legend: rewards viewed as [n_groups, G] with any strides (sg between groups, sj within a group).
// Per group, in double: d_j = r_j - r_0 (shift by the first reward: exact 0 for a group of equal
// rewards, no cancellation for 1e4 + noise), mean and M2 of d in two passes, then
//   A_j = (d_j - mean) * factor / den,  factor = 1 (baseline "mean") or G/(G-1) ("rloo":
//   r_j - (sum - r_j)/(G-1) = G/(G-1) (r_j - mean)),  den = std_g + eps, std_all + eps or 1.
// A zero denominator (a constant group with eps = 0) gives 0.  Parallel over groups (at::parallel_for);
// the group's rewards stay in L1 across the three short passes, so memory traffic is one read of
// the rewards and one float32 write.  scale "batch" first reduces Chan-combinable (count, mean, M2)
// per fixed chunk of groups, combined in chunk order: the result does not depend on the thread count.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <atomic>
#include <cmath>
#include <vector>

#include "advantage/advantage_ops.h"
#include "register.h"

namespace r1core {
namespace {

constexpr int64_t kChunkGroups = 1024;  // scale "batch": groups per partial moment (fixed: deterministic)

struct Moments {
  double n = 0.0, mean = 0.0, m2 = 0.0;
};

// Chan et al.: the (count, mean, M2) of the union of two disjoint sets.
inline Moments chan(const Moments& a, const Moments& b) {
  const double n = a.n + b.n;
  if (n == 0.0) return a;
  const double delta = b.mean - a.mean, w_b = b.n / n;
  return {n, a.mean + delta * w_b, a.m2 + b.m2 + delta * delta * a.n * w_b};
}

// Count, mean and M2 of (r_j - ref) over one group, two passes in double; `bad` is set by a
// non-finite reward.
template <typename T>
inline Moments group_moments(const T* rg, int64_t G, int64_t sj, double ref, bool& bad) {
  double s = 0.0;
  for (int64_t j = 0; j < G; ++j) {
    const double x = static_cast<double>(rg[j * sj]);
    bad |= !std::isfinite(x);
    s += x - ref;
  }
  const double mean = s / static_cast<double>(G);
  double m2 = 0.0;
  for (int64_t j = 0; j < G; ++j) {
    const double c = (static_cast<double>(rg[j * sj]) - ref) - mean;
    m2 += c * c;
  }
  return {static_cast<double>(G), mean, m2};
}

inline double inverse_or_zero(double factor, double den) { return den > 0.0 ? factor / den : 0.0; }

template <typename T>
void advantage_kernel(const T* r, int64_t n_groups, int64_t G, int64_t sg, int64_t sj, AdvScale scale,
                      AdvBaseline baseline, double eps, bool check_finite, float* out) {
  const double factor = baseline == AdvBaseline::kRloo ? static_cast<double>(G) / static_cast<double>(G - 1) : 1.0;
  std::atomic<bool> any_bad{false};

  double inv_batch = 0.0;
  if (scale == AdvScale::kBatch) {  // moments of every reward, shifted by the first one
    const double ref = static_cast<double>(r[0]);
    const int64_t n_chunks = (n_groups + kChunkGroups - 1) / kChunkGroups;
    std::vector<Moments> part(n_chunks);
    at::parallel_for(0, n_chunks, 1, [&](int64_t c0, int64_t c1) {
      bool bad = false;
      for (int64_t c = c0; c < c1; ++c) {
        Moments acc;
        for (int64_t g = c * kChunkGroups; g < std::min(n_groups, (c + 1) * kChunkGroups); ++g) {
          acc = chan(acc, group_moments(r + g * sg, G, sj, ref, bad));
        }
        part[c] = acc;
      }
      if (bad) any_bad.store(true, std::memory_order_relaxed);
    });
    Moments all;
    for (const Moments& p : part) all = chan(all, p);
    inv_batch = inverse_or_zero(factor, std::sqrt(all.m2 / (all.n - 1.0)) + eps);
  }

  const int64_t grain = std::max<int64_t>(1, at::internal::GRAIN_SIZE / G);
  at::parallel_for(0, n_groups, grain, [&](int64_t g0, int64_t g1) {
    bool bad = false;
    for (int64_t g = g0; g < g1; ++g) {
      const T* rg = r + g * sg;
      const double r0 = static_cast<double>(rg[0]);
      const Moments m = group_moments(rg, G, sj, r0, bad);
      double inv = factor;
      if (scale == AdvScale::kGroup) {
        inv = inverse_or_zero(factor, std::sqrt(m.m2 / static_cast<double>(G - 1)) + eps);
      } else if (scale == AdvScale::kBatch) {
        inv = inv_batch;
      }
      float* og = out + g * G;
      for (int64_t j = 0; j < G; ++j) {
        og[j] = static_cast<float>(((static_cast<double>(rg[j * sj]) - r0) - m.mean) * inv);
      }
    }
    if (bad) any_bad.store(true, std::memory_order_relaxed);
  });
  R1_CHECK(!check_finite || !any_bad.load(), "rewards must be finite, found NaN or inf");
}

}  // namespace

at::Tensor advantage_cpu(const at::Tensor& rewards_gG, const std::string& scale, const std::string& baseline,
                         double eps, bool check_finite) {
  check_cpu(rewards_gG, "rewards");
  check_adv_args(rewards_gG, eps);
  const AdvScale sc = parse_adv_scale(scale);
  const AdvBaseline bl = parse_adv_baseline(baseline);
  const int64_t n_groups = rewards_gG.size(0), G = rewards_gG.size(1);
  at::Tensor out = at::empty({n_groups, G}, rewards_gG.options().dtype(at::kFloat));
  if (n_groups == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, rewards_gG.scalar_type(), "advantage_cpu", [&] {
    advantage_kernel<scalar_t>(rewards_gG.const_data_ptr<scalar_t>(), n_groups, G, rewards_gG.stride(0),
                               rewards_gG.stride(1), sc, bl, eps, check_finite, out.mutable_data_ptr<float>());
  });
  return out;
}

void register_advantage(pybind11::module_& m) {
  namespace py = pybind11;
  m.def("advantage_cpu", &advantage_cpu,
        "Group-normalised GRPO advantage on CPU: rewards [n_groups, G] -> float32 [n_groups, G]",
        py::arg("rewards"), py::arg("scale"), py::arg("baseline"), py::arg("eps"), py::arg("check_finite") = true,
        py::call_guard<py::gil_scoped_release>());
#ifdef R1CORE_WITH_CUDA
  m.def("advantage_cuda", &advantage_cuda,
        "Group-normalised GRPO advantage on CUDA (async): -> (advantages float32 [n_groups, G], "
        "non-finite flag int32 [1] or None)",
        py::arg("rewards"), py::arg("scale"), py::arg("baseline"), py::arg("eps"), py::arg("check_finite") = true,
        py::call_guard<py::gil_scoped_release>());
#endif
}

}  // namespace r1core
