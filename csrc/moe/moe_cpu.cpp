// MoE permutation on the CPU: a stable counting sort of the T·k assignments by expert, with each
// expert's segment padded to a multiple of `block` (the same layout as the CUDA kernel, see
// moe/moe_align.h; block = 1 gives the plain sorted order the CPU expert path uses).  O(S + E).
#include <torch/extension.h>

#include <vector>

#include "common.h"
#include "register.h"

namespace r1core {

#ifdef R1CORE_WITH_CUDA
void register_moe_cuda(pybind11::module_& m);
#endif

namespace {

template <typename Int>
void align_impl(const Int* ids, int64_t S, int64_t E, int64_t B, int32_t* sorted_ids, int32_t* inverse,
                int32_t* block_expert, int32_t* seg_start, int32_t* counts, int64_t P_max) {
  std::fill(counts, counts + E, 0);
  for (int64_t s = 0; s < S; ++s) {
    const int64_t e = static_cast<int64_t>(ids[s]);
    R1_CHECK(e >= 0 && e < E, "ids must lie in [0, E=", E, "), got ", e, " at flat position ", s);
    ++counts[e];
  }
  seg_start[0] = 0;
  for (int64_t e = 0; e < E; ++e) seg_start[e + 1] = seg_start[e] + (counts[e] + B - 1) / B * B;
  std::fill(sorted_ids, sorted_ids + P_max, static_cast<int32_t>(S));  // sentinel in padding slots
  std::vector<int32_t> cursor(seg_start, seg_start + E);
  for (int64_t s = 0; s < S; ++s) {
    const int32_t p = cursor[static_cast<int64_t>(ids[s])]++;
    sorted_ids[p] = static_cast<int32_t>(s);
    inverse[s] = p;
  }
  std::fill(block_expert, block_expert + P_max / B, -1);
  for (int64_t e = 0; e < E; ++e)
    for (int64_t b = seg_start[e] / B; b < seg_start[e + 1] / B; ++b) block_expert[b] = static_cast<int32_t>(e);
}

}  // namespace

// -> [sorted_ids [P_max], inverse [S], block_expert [P_max/B], seg_start [E+1], counts [E]], int32.
std::vector<at::Tensor> moe_align_cpu(const at::Tensor& ids, int64_t num_experts, int64_t block) {
  check_cpu(ids, "ids");
  R1_CHECK(!ids.is_floating_point() && ids.scalar_type() != at::kBool, "ids must be an integer tensor, got ",
           ids.scalar_type());
  R1_CHECK(num_experts >= 1, "num_experts must be >= 1, got ", num_experts);
  R1_CHECK(block >= 1 && block <= 1024, "block must be in [1, 1024], got ", block);
  const int64_t S = ids.numel();
  R1_CHECK(S + num_experts * block < (int64_t(1) << 31), "too many assignments for int32 positions: ", S);
  const int64_t P_max = (S + num_experts * (block - 1) + block - 1) / block * block;
  const auto opt = at::TensorOptions().dtype(at::kInt);
  at::Tensor sorted_ids = at::empty({P_max}, opt), inverse = at::empty({S}, opt);
  at::Tensor block_expert = at::empty({P_max / block}, opt);
  at::Tensor seg_start = at::empty({num_experts + 1}, opt), counts = at::empty({num_experts}, opt);
  const at::Tensor flat = ids.contiguous();
  AT_DISPATCH_INDEX_TYPES(flat.scalar_type() == at::kLong ? at::kLong : at::kInt, "moe_align_cpu", [&] {
    const at::Tensor typed = flat.to(flat.scalar_type() == at::kLong ? at::kLong : at::kInt);
    align_impl<index_t>(typed.data_ptr<index_t>(), S, num_experts, block, sorted_ids.data_ptr<int32_t>(),
                        inverse.data_ptr<int32_t>(), block_expert.data_ptr<int32_t>(), seg_start.data_ptr<int32_t>(),
                        counts.data_ptr<int32_t>(), P_max);
  });
  return {sorted_ids, inverse, block_expert, seg_start, counts};
}

void register_moe(pybind11::module_& m) {
  m.def("moe_align_cpu", &moe_align_cpu, pybind11::arg("ids"), pybind11::arg("num_experts"),
        pybind11::arg("block") = 1,
        "Stable counting sort of the T*k MoE assignments by expert, segments padded to `block` (CPU).\n"
        "-> [sorted_ids, inverse, block_expert, seg_start, counts], int32 (see csrc/moe/moe_align.h)");
#ifdef R1CORE_WITH_CUDA
  register_moe_cuda(m);
#endif
}

}  // namespace r1core
