// MoE permutation on the GPU in four small passes (see moe_align.h for the outputs):
//   1. count   one warp per chunk of 256 assignments: per-chunk expert histogram (shared atomics)
//   2. scan    one block per expert: exclusive scan of its chunk counts (-> each chunk's base inside
//              the expert) and its total; then one block scans the padded sizes (-> seg_start)
//   3. fill    grid over P_max: padding slots get the sentinel S, every M-block its expert
//   4. scatter one warp per chunk: each assignment's rank among equal experts earlier in its warp
//              batch (__match_any_sync) plus the running per-expert base -> a stable scatter
// Bytes: ids read twice (16·S), sorted_ids/inverse written once (4·(P_max + S)), plus C·E·4·3 of
// chunk counters (1 MiB at S = 256k, E = 256): a few microseconds, launch-latency bound.
#include "moe/moe_align.h"

namespace r1core {
namespace {

constexpr int WARPS = 4;  // warps (= chunks) per block in passes 1 and 4

__global__ void count_kernel(const int64_t* __restrict__ ids, int64_t S, int E, int64_t C,
                             int32_t* __restrict__ chunk_counts /* [C, E] */) {
  extern __shared__ int32_t hist[];  // [WARPS, E]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t chunk = (int64_t)blockIdx.x * WARPS + warp;
  int32_t* h = hist + warp * E;
  for (int e = lane; e < E; e += 32) h[e] = 0;
  __syncwarp();
  if (chunk < C) {
    for (int i = lane; i < MOE_ALIGN_CHUNK; i += 32) {
      const int64_t s = chunk * MOE_ALIGN_CHUNK + i;
      if (s < S) {
        const int64_t e = ids[s];
        if (e >= 0 && e < E) atomicAdd(&h[e], 1);
      }
    }
    __syncwarp();
    for (int e = lane; e < E; e += 32) chunk_counts[chunk * E + e] = h[e];
  }
}

// Exclusive scan of one value per thread over a block of SCAN_THREADS threads; *total gets the sum.
constexpr int SCAN_THREADS = 256;

__device__ int32_t block_exclusive_scan(int32_t v, int32_t* total) {
  __shared__ int32_t warp_sums[SCAN_THREADS / 32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  int32_t incl = v;
  for (int off = 1; off < 32; off *= 2) {
    const int32_t u = __shfl_up_sync(0xffffffffu, incl, off);
    if (lane >= off) incl += u;
  }
  if (lane == 31) warp_sums[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    int32_t w = lane < SCAN_THREADS / 32 ? warp_sums[lane] : 0;
    for (int off = 1; off < 32; off *= 2) {
      const int32_t u = __shfl_up_sync(0xffffffffu, w, off);
      if (lane >= off) w += u;
    }
    if (lane < SCAN_THREADS / 32) warp_sums[lane] = w;
  }
  __syncthreads();
  const int32_t excl = (warp > 0 ? warp_sums[warp - 1] : 0) + incl - v;
  *total = warp_sums[SCAN_THREADS / 32 - 1];
  __syncthreads();  // warp_sums is reused by the next call
  return excl;
}

// One block per expert: exclusive scan of its chunk counts over the chunks, in place (-> each chunk's
// base inside the expert's segment), and the expert's total.
__global__ void scan_chunks_kernel(int E, int64_t C, int32_t* __restrict__ chunk_counts, int32_t* __restrict__ counts) {
  const int e = blockIdx.x;
  int32_t carry = 0;
  for (int64_t c0 = 0; c0 < C; c0 += SCAN_THREADS) {
    const int64_t c = c0 + threadIdx.x;
    const int32_t v = c < C ? chunk_counts[c * E + e] : 0;
    int32_t tile_total;
    const int32_t excl = block_exclusive_scan(v, &tile_total);
    if (c < C) chunk_counts[c * E + e] = carry + excl;
    carry += tile_total;
  }
  if (threadIdx.x == 0) counts[e] = carry;
}

// One block: padded segment sizes and their exclusive scan over the experts -> seg_start [E+1].
__global__ void scan_experts_kernel(int E, int B, const int32_t* __restrict__ counts, int32_t* __restrict__ seg_start) {
  int32_t carry = 0;
  for (int e0 = 0; e0 < E; e0 += SCAN_THREADS) {
    const int e = e0 + threadIdx.x;
    const int32_t padded = e < E ? (counts[e] + B - 1) / B * B : 0;
    int32_t tile_total;
    const int32_t excl = block_exclusive_scan(padded, &tile_total);
    if (e < E) seg_start[e] = carry + excl;
    carry += tile_total;
  }
  if (threadIdx.x == 0) seg_start[E] = carry;
}

// The expert whose padded segment holds position p: the last e with seg_start[e] <= p.
__device__ __forceinline__ int segment_of(const int32_t* seg_start, int E, int64_t p) {
  int lo = 0, hi = E - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (seg_start[mid] <= p) lo = mid; else hi = mid - 1;
  }
  return lo;
}

__global__ void fill_kernel(int64_t S, int E, int B, int64_t P_max, const int32_t* __restrict__ seg_start,
                            const int32_t* __restrict__ counts, int32_t* __restrict__ sorted_ids,
                            int32_t* __restrict__ block_expert) {
  const int64_t total = seg_start[E];
  for (int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; p < P_max; p += (int64_t)gridDim.x * blockDim.x) {
    if (p >= total) {
      sorted_ids[p] = (int32_t)S;
      if (p % B == 0) block_expert[p / B] = -1;
      continue;
    }
    const int e = segment_of(seg_start, E, p);
    if (p - seg_start[e] >= counts[e]) sorted_ids[p] = (int32_t)S;  // padding slot
    if (p % B == 0) block_expert[p / B] = e;
  }
}

__global__ void scatter_kernel(const int64_t* __restrict__ ids, int64_t S, int E, int64_t C,
                               const int32_t* __restrict__ chunk_counts, const int32_t* __restrict__ seg_start,
                               int32_t* __restrict__ sorted_ids, int32_t* __restrict__ inverse) {
  extern __shared__ int32_t base_all[];  // [WARPS, E]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t chunk = (int64_t)blockIdx.x * WARPS + warp;
  if (chunk >= C) return;  // whole warp leaves together: no later __syncwarp is left waiting
  int32_t* base = base_all + warp * E;
  for (int e = lane; e < E; e += 32) base[e] = seg_start[e] + chunk_counts[chunk * E + e];
  __syncwarp();
  const unsigned lt_mask = (1u << lane) - 1u;
  for (int i = 0; i < MOE_ALIGN_CHUNK; i += 32) {
    const int64_t s = chunk * MOE_ALIGN_CHUNK + i + lane;
    int e = -1;
    if (s < S) {
      const int64_t v = ids[s];
      e = (v >= 0 && v < E) ? (int)v : -1;
    }
    const unsigned same = __match_any_sync(0xffffffffu, e);
    if (e >= 0) {
      const int32_t p = base[e] + __popc(same & lt_mask);
      sorted_ids[p] = (int32_t)s;
      inverse[s] = p;
    }
    __syncwarp();
    if (e >= 0 && lane == __ffs(same) - 1) base[e] += __popc(same);
    __syncwarp();
  }
}

}  // namespace

int64_t moe_align_workspace_size(int64_t S, int E) {
  const int64_t C = (S + MOE_ALIGN_CHUNK - 1) / MOE_ALIGN_CHUNK;
  return (C > 0 ? C : 1) * E;
}

cudaError_t moe_align_launch(const int64_t* ids, int64_t S, int E, int B, int64_t P_max, int32_t* sorted_ids,
                             int32_t* inverse, int32_t* block_expert, int32_t* seg_start, int32_t* counts,
                             int32_t* workspace, cudaStream_t stream) {
  const int64_t C = (S + MOE_ALIGN_CHUNK - 1) / MOE_ALIGN_CHUNK;
  const int64_t warp_blocks = (C + WARPS - 1) / WARPS;
  const size_t warp_smem = sizeof(int32_t) * WARPS * E;
  if (warp_smem > 48 * 1024) return cudaErrorInvalidValue;  // E > 3072: more than a block's default smem
  if (C > 0) {
    count_kernel<<<(unsigned)warp_blocks, WARPS * 32, warp_smem, stream>>>(ids, S, E, C, workspace);
  }
  scan_chunks_kernel<<<E, SCAN_THREADS, 0, stream>>>(E, C, workspace, counts);
  scan_experts_kernel<<<1, SCAN_THREADS, 0, stream>>>(E, B, counts, seg_start);
  if (P_max > 0) {
    const int64_t fill_blocks = (P_max + 255) / 256;
    fill_kernel<<<(unsigned)(fill_blocks < 4096 ? fill_blocks : 4096), 256, 0, stream>>>(
        S, E, B, P_max, seg_start, counts, sorted_ids, block_expert);
  }
  if (C > 0) {
    scatter_kernel<<<(unsigned)warp_blocks, WARPS * 32, warp_smem, stream>>>(ids, S, E, C, workspace, seg_start,
                                                                           sorted_ids, inverse);
  }
  return cudaGetLastError();
}

}  // namespace r1core
