// Group-normalised GRPO advantage (docs/spec.md §1) on CUDA: plain launchers (raw pointers, sizes, a stream;
// no torch headers).  The torch glue is advantage_cuda.cpp.
//
// Legend: rewards viewed as [n_groups, G] with element strides (stride_g, stride_j); out is
// [n_groups, G] float32, contiguous.  Per group: d_j = r_j - r_0 (exact 0 for equal rewards, stable
// for large offsets; in double for float64 rewards, else float), c_j = d_j - mean(d),
// A_j = c_j * factor / den with factor 1 ("mean") or G/(G-1) ("rloo") and den = std_g + eps,
// std_all + eps or 1 (Bessel-corrected std; a zero den gives A = 0).
//
// Launches: scale group/none = 1 kernel.  scale batch = 2: a moments kernel (<= 256 blocks, each
// a deterministic (count, mean, M2) partial of rewards - rewards[0]) and the main kernel, whose
// blocks first combine the partials (Chan) into the global std.  G <= 1024: a team of
// min(next_pow2(G), 32) lanes per group, the group in registers (two passes, no re-read); wider
// groups: one 256-thread block per group, three passes over global memory (L1/L2-resident).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "advantage/advantage_enums.h"

namespace r1core {

// float16/bfloat16 rewards are widened to float32 by the caller (exact; keeps the build small).
enum class AdvDtype : int { kFloat32 = 0, kFloat64 = 1 };

// Bytes of device scratch advantage_launch needs (the batch scale's partial moments; 0 otherwise).
size_t advantage_workspace_bytes(AdvScale scale);

// rewards: device pointer of `dtype`; out: float32 [n_groups * G]; bad_flag: int32 [1] that the
// kernel sets to 1 when it meets a non-finite reward (nullptr: no check; zero it before the call);
// workspace: advantage_workspace_bytes(scale) bytes (may be nullptr when that is 0).
// Requires n_groups >= 1, G >= 2, eps >= 0.  Asynchronous on `stream`; returns the launch error.
cudaError_t advantage_launch(const void* rewards, AdvDtype dtype, int64_t n_groups, int64_t G, int64_t stride_g,
                             int64_t stride_j, AdvScale scale, AdvBaseline baseline, float eps, float* out,
                             int* bad_flag, void* workspace, cudaStream_t stream);

}  // namespace r1core
