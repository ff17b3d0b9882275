// MoE token permutation ("moe_align_block_size"): the T·k assignments sorted by expert, each expert's
// segment padded to a multiple of the grouped GEMM's BLOCK_M, so every M-block of the GEMM belongs
// to exactly one expert.  Plain CUDA launchers (no torch headers): the glue is moe_cuda.cpp.
//
// Legend: S = T·k assignments (s = t·k + j: token t's j-th expert), E experts, B the block size,
// P_max = ceil((S + E·(B-1)) / B)·B (an upper bound of the padded length, known without a sync),
// C = ceil(S / MOE_ALIGN_CHUNK) chunks of consecutive assignments.
//
// Outputs (all int32, device memory):
//   sorted_ids   [P_max]   assignment s at padded position p; S in padding slots and past the end
//   inverse      [S]       p for each s (sorted_ids[inverse[s]] == s)
//   block_expert [P_max/B] expert of each M-block; -1 past the padded end
//   seg_start    [E+1]     padded start of each expert's segment; seg_start[E] = padded length
//   counts       [E]       assignments per expert (tokens per expert)
// Stable: inside an expert's segment the assignments keep their order (deterministic GEMM sums).
// Ids outside [0, E) are skipped (never written anywhere); the caller validates them.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace r1core {

constexpr int MOE_ALIGN_CHUNK = 256;  // assignments per warp in the count and scatter passes

// int32 elements of scratch the launcher needs: C·E chunk counters.
int64_t moe_align_workspace_size(int64_t S, int E);

cudaError_t moe_align_launch(const int64_t* ids, int64_t S, int E, int B, int64_t P_max, int32_t* sorted_ids,
                             int32_t* inverse, int32_t* block_expert, int32_t* seg_start, int32_t* counts,
                             int32_t* workspace, cudaStream_t stream);

}  // namespace r1core
