// Group-normalised GRPO advantage (docs/spec.md §1) on CUDA; the maths and launch plan are in advantage.h.
//
// Bytes: N float32 rewards in, N float32 out, read once (the group's registers hold it between the
// two passes), so 8N bytes for scale group/none.  Team layout: lane l of a team holds elements
// l, l + TPG, l + 2·TPG, ... of its group, so a warp's loads are coalesced for contiguous rewards
// (G = 16: two groups per warp, 128 contiguous bytes).  Reductions: xor-shuffles inside the team
// (float; the shifted values are small), block reductions and cross-block combines in double.
// Every result is deterministic: fixed partitions, fixed reduction trees, no float atomics.
#include <algorithm>
#include <cstdint>

#include "advantage/advantage.h"

namespace r1core {
namespace {

constexpr int kThreads = 256;              // threads per block, every kernel
constexpr int kWarps = kThreads / 32;
constexpr int kMaxPartials = kThreads;     // scale batch: one partial per thread of the combine
constexpr int64_t kMaxTeamG = 1024;        // 32 lanes x 32 registers; wider groups take a block each
constexpr int64_t kMaxBlocks = 1 << 20;    // grids are grid-stride loops beyond this

struct Params {
  int64_t n_groups, G, sg, sj;  // rewards [n_groups, G], element strides
  AdvScale scale;
  AdvBaseline baseline;
  float eps;
};

struct Moments {
  double n, mean, m2;  // count, mean, sum of squared deviations
};

// Chan et al.: the moments of the union of two disjoint sets (either may be empty).
__device__ __forceinline__ Moments chan(Moments a, Moments b) {
  const double n = a.n + b.n;
  if (n == 0.0) return a;
  const double delta = b.mean - a.mean, w_b = b.n / n;
  return {n, a.mean + delta * w_b, a.m2 + b.m2 + delta * delta * a.n * w_b};
}

// The shift runs in double for float64 rewards and in float for float32 ones.
template <typename T>
struct ShiftOf {
  using type = float;
};
template <>
struct ShiftOf<double> {
  using type = double;
};

__device__ __forceinline__ float load_shift(const float* p) { return *p; }
__device__ __forceinline__ double load_shift(const double* p) { return *p; }

// Sum over a team of TPG consecutive lanes (TPG a power of two <= 32); every lane gets the sum.
template <int TPG, typename V>
__device__ __forceinline__ V team_sum(V v) {
#pragma unroll
  for (int o = TPG / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o, TPG);
  return v;
}

// Sum over the block (every thread must call; every thread gets the sum).  sh: kWarps doubles.
__device__ __forceinline__ double block_sum(double v, double* sh) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();  // the previous call's readers are done with sh
  if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
  __syncthreads();
  double total = 0.0;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) total += sh[w];
  return total;
}

__device__ __forceinline__ double inverse_or_zero(double factor, double den) { return den > 0.0 ? factor / den : 0.0; }

__device__ __forceinline__ double rloo_factor(const Params& p) {
  return p.baseline == AdvBaseline::kRloo ? static_cast<double>(p.G) / static_cast<double>(p.G - 1) : 1.0;
}

// scale batch: combine the n_partials (count, mean, M2) partials into factor / (std_all + eps).
// Every thread of the block must call.  partials: double [3, n_partials].
__device__ double batch_inverse(const double* __restrict__ partials, int n_partials, const Params& p,
                                double* sh) {
  const int i = threadIdx.x;
  const bool has = i < n_partials;
  const double n_i = has ? partials[i] : 0.0;
  const double mean_i = has ? partials[n_partials + i] : 0.0;
  const double m2_i = has ? partials[2 * n_partials + i] : 0.0;
  const double n = block_sum(n_i, sh);
  const double mean = block_sum(n_i * mean_i, sh) / n;
  const double dm = mean_i - mean;
  const double m2 = block_sum(m2_i + n_i * dm * dm, sh);
  return inverse_or_zero(rloo_factor(p), sqrt(m2 / (n - 1.0)) + p.eps);
}

__device__ __forceinline__ void write_partial(double* partials, int n_partials, Moments m) {
  partials[blockIdx.x] = m.n;
  partials[n_partials + blockIdx.x] = m.mean;
  partials[2 * n_partials + blockIdx.x] = m.m2;
}

// ---------------------------------------------------------------------------------------------
// Teams: G <= TPG * EPL <= 1024, a group in the registers of TPG lanes (EPL elements each).
// ---------------------------------------------------------------------------------------------

// Loads the lane's elements of group g minus `ref` into d (0 where j >= G or g invalid), returns
// the team's mean and M2 and leaves d centred.  `bad` is set by a non-finite reward.
template <typename T, int TPG, int EPL>
__device__ __forceinline__ void team_load_centre(const T* __restrict__ rg, bool valid, typename ShiftOf<T>::type ref,
                                                 const Params& p, int lane, float (&d)[EPL], float& mean,
                                                 float& m2, bool& bad) {
  using S = typename ShiftOf<T>::type;
  float s = 0.f;
#pragma unroll
  for (int e = 0; e < EPL; ++e) {
    const int64_t j = static_cast<int64_t>(e) * TPG + lane;
    d[e] = 0.f;
    if (valid && j < p.G) {
      const S x = load_shift(rg + j * p.sj);
      bad |= !isfinite(x);
      d[e] = static_cast<float>(x - ref);
      s += d[e];
    }
  }
  mean = team_sum<TPG>(s) / static_cast<float>(p.G);
  float q = 0.f;
#pragma unroll
  for (int e = 0; e < EPL; ++e) {
    const int64_t j = static_cast<int64_t>(e) * TPG + lane;
    if (valid && j < p.G) {
      d[e] -= mean;
      q += d[e] * d[e];
    }
  }
  m2 = team_sum<TPG>(q);
}

template <typename T, int TPG, int EPL>
__global__ void __launch_bounds__(kThreads)
    advantage_team_kernel(const T* __restrict__ r, float* __restrict__ out, int* __restrict__ bad_flag,
                          const double* __restrict__ partials, int n_partials, Params p) {
  using S = typename ShiftOf<T>::type;
  constexpr int kTeams = kThreads / TPG;
  __shared__ double sh[kWarps];
  const int team = threadIdx.x / TPG, lane = threadIdx.x % TPG;
  const float factor = static_cast<float>(rloo_factor(p));
  float inv = factor;  // scale none
  if (p.scale == AdvScale::kBatch) inv = static_cast<float>(batch_inverse(partials, n_partials, p, sh));

  const int64_t n_tiles = (p.n_groups + kTeams - 1) / kTeams;
  bool bad = false;
  for (int64_t tile = blockIdx.x; tile < n_tiles; tile += gridDim.x) {  // uniform across the block
    const int64_t g = tile * kTeams + team;
    const bool valid = g < p.n_groups;
    const T* rg = r + (valid ? g : 0) * p.sg;
    const S r0 = valid ? load_shift(rg) : S(0);
    float d[EPL], mean, m2;
    team_load_centre<T, TPG, EPL>(rg, valid, r0, p, lane, d, mean, m2, bad);
    if (p.scale == AdvScale::kGroup) {
      const float den = sqrtf(m2 / static_cast<float>(p.G - 1)) + p.eps;
      inv = den > 0.f ? factor / den : 0.f;
    }
    if (valid) {
      float* og = out + g * p.G;
#pragma unroll
      for (int e = 0; e < EPL; ++e) {
        const int64_t j = static_cast<int64_t>(e) * TPG + lane;
        if (j < p.G) og[j] = d[e] * inv;
      }
    }
  }
  if (bad_flag != nullptr && bad) *bad_flag = 1;  // every writer writes 1: a benign race
}

// scale batch, pass 1: block b writes the moments of rewards - rewards[0] over its tiles.
template <typename T, int TPG, int EPL>
__global__ void __launch_bounds__(kThreads)
    batch_moments_team_kernel(const T* __restrict__ r, double* __restrict__ partials, int n_partials, Params p) {
  using S = typename ShiftOf<T>::type;
  constexpr int kTeams = kThreads / TPG;
  __shared__ double sh_n[kTeams], sh_mean[kTeams], sh_m2[kTeams];
  const int team = threadIdx.x / TPG, lane = threadIdx.x % TPG;
  const S ref = load_shift(r);
  const int64_t n_tiles = (p.n_groups + kTeams - 1) / kTeams;
  Moments acc{0.0, 0.0, 0.0};
  bool bad = false;  // the main kernel reports it
  for (int64_t tile = blockIdx.x; tile < n_tiles; tile += gridDim.x) {
    const int64_t g = tile * kTeams + team;
    const bool valid = g < p.n_groups;
    float d[EPL], mean, m2;
    team_load_centre<T, TPG, EPL>(r + (valid ? g : 0) * p.sg, valid, ref, p, lane, d, mean, m2, bad);
    if (valid) acc = chan(acc, Moments{static_cast<double>(p.G), mean, m2});
  }
  if (lane == 0) {
    sh_n[team] = acc.n;
    sh_mean[team] = acc.mean;
    sh_m2[team] = acc.m2;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    Moments all{0.0, 0.0, 0.0};
    for (int t = 0; t < kTeams; ++t) all = chan(all, Moments{sh_n[t], sh_mean[t], sh_m2[t]});
    write_partial(partials, n_partials, all);
  }
}

// ---------------------------------------------------------------------------------------------
// Wide groups (G > 1024): one block per group, double accumulation, three passes over the group.
// ---------------------------------------------------------------------------------------------
template <typename T>
__device__ __forceinline__ double load_double(const T* rg, int64_t j, const Params& p) {
  return static_cast<double>(load_shift(rg + j * p.sj));
}

// Mean and M2 of group rg minus ref over the whole block (every thread must call).
template <typename T>
__device__ Moments block_group_moments(const T* __restrict__ rg, double ref, const Params& p, double* sh, bool& bad) {
  double s = 0.0;
  for (int64_t j = threadIdx.x; j < p.G; j += kThreads) {
    const double x = load_double(rg, j, p);
    bad |= !isfinite(x);
    s += x - ref;
  }
  const double mean = block_sum(s, sh) / static_cast<double>(p.G);
  double q = 0.0;
  for (int64_t j = threadIdx.x; j < p.G; j += kThreads) {
    const double c = (load_double(rg, j, p) - ref) - mean;
    q += c * c;
  }
  return {static_cast<double>(p.G), mean, block_sum(q, sh)};
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    advantage_wide_kernel(const T* __restrict__ r, float* __restrict__ out, int* __restrict__ bad_flag,
                          const double* __restrict__ partials, int n_partials, Params p) {
  __shared__ double sh[kWarps];
  const double factor = rloo_factor(p);
  double inv = factor;  // scale none
  if (p.scale == AdvScale::kBatch) inv = batch_inverse(partials, n_partials, p, sh);
  bool bad = false;
  for (int64_t g = blockIdx.x; g < p.n_groups; g += gridDim.x) {
    const T* rg = r + g * p.sg;
    const double r0 = static_cast<double>(load_shift(rg));  // r0 is exact in double (and in S)
    const Moments m = block_group_moments(rg, r0, p, sh, bad);
    if (p.scale == AdvScale::kGroup) inv = inverse_or_zero(factor, sqrt(m.m2 / static_cast<double>(p.G - 1)) + p.eps);
    float* og = out + g * p.G;
    for (int64_t j = threadIdx.x; j < p.G; j += kThreads) {
      og[j] = static_cast<float>(((load_double(rg, j, p) - r0) - m.mean) * inv);
    }
  }
  if (bad_flag != nullptr && bad) *bad_flag = 1;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    batch_moments_wide_kernel(const T* __restrict__ r, double* __restrict__ partials, int n_partials, Params p) {
  __shared__ double sh[kWarps];
  const double ref = static_cast<double>(load_shift(r));
  Moments acc{0.0, 0.0, 0.0};
  bool bad = false;  // the main kernel reports it
  for (int64_t g = blockIdx.x; g < p.n_groups; g += gridDim.x) {
    acc = chan(acc, block_group_moments(r + g * p.sg, ref, p, sh, bad));  // identical in every thread
  }
  if (threadIdx.x == 0) write_partial(partials, n_partials, acc);
}

// ---------------------------------------------------------------------------------------------
// host
// ---------------------------------------------------------------------------------------------
int grid_for(int64_t work_items) { return static_cast<int>(std::min(work_items, kMaxBlocks)); }

template <typename T, int TPG, int EPL>
cudaError_t launch_team(const T* r, float* out, int* bad, double* partials, const Params& p, cudaStream_t stream) {
  constexpr int kTeams = kThreads / TPG;
  const int64_t n_tiles = (p.n_groups + kTeams - 1) / kTeams;
  int n_partials = 0;
  if (p.scale == AdvScale::kBatch) {
    n_partials = static_cast<int>(std::min<int64_t>(kMaxPartials, n_tiles));
    batch_moments_team_kernel<T, TPG, EPL><<<n_partials, kThreads, 0, stream>>>(r, partials, n_partials, p);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  advantage_team_kernel<T, TPG, EPL><<<grid_for(n_tiles), kThreads, 0, stream>>>(r, out, bad, partials, n_partials, p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_wide(const T* r, float* out, int* bad, double* partials, const Params& p, cudaStream_t stream) {
  int n_partials = 0;
  if (p.scale == AdvScale::kBatch) {
    n_partials = static_cast<int>(std::min<int64_t>(kMaxPartials, p.n_groups));
    batch_moments_wide_kernel<T><<<n_partials, kThreads, 0, stream>>>(r, partials, n_partials, p);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  advantage_wide_kernel<T><<<grid_for(p.n_groups), kThreads, 0, stream>>>(r, out, bad, partials, n_partials, p);
  return cudaGetLastError();
}

// Team shape for G: TPG = next_pow2(G) lanes up to 32, then 4 or 32 elements per lane (few
// instantiations keep the build fast; lanes past G are predicated off).
template <typename T>
cudaError_t launch_typed(const void* rewards, float* out, int* bad, double* partials, const Params& p,
                         cudaStream_t stream) {
  const T* r = static_cast<const T*>(rewards);
  const int64_t G = p.G;
  if (G <= 2) return launch_team<T, 2, 1>(r, out, bad, partials, p, stream);
  if (G <= 4) return launch_team<T, 4, 1>(r, out, bad, partials, p, stream);
  if (G <= 8) return launch_team<T, 8, 1>(r, out, bad, partials, p, stream);
  if (G <= 16) return launch_team<T, 16, 1>(r, out, bad, partials, p, stream);
  if (G <= 32) return launch_team<T, 32, 1>(r, out, bad, partials, p, stream);
  if (G <= 128) return launch_team<T, 32, 4>(r, out, bad, partials, p, stream);
  if (G <= kMaxTeamG) return launch_team<T, 32, 32>(r, out, bad, partials, p, stream);
  return launch_wide<T>(r, out, bad, partials, p, stream);
}

}  // namespace

size_t advantage_workspace_bytes(AdvScale scale) {
  return scale == AdvScale::kBatch ? 3 * kMaxPartials * sizeof(double) : 0;
}

cudaError_t advantage_launch(const void* rewards, AdvDtype dtype, int64_t n_groups, int64_t G, int64_t stride_g,
                             int64_t stride_j, AdvScale scale, AdvBaseline baseline, float eps, float* out,
                             int* bad_flag, void* workspace, cudaStream_t stream) {
  if (n_groups < 1 || G < 2 || !(eps >= 0.f)) return cudaErrorInvalidValue;
  if (scale == AdvScale::kBatch && workspace == nullptr) return cudaErrorInvalidValue;
  const Params p{n_groups, G, stride_g, stride_j, scale, baseline, eps};
  double* partials = static_cast<double*>(workspace);
  switch (dtype) {
    case AdvDtype::kFloat32: return launch_typed<float>(rewards, out, bad_flag, partials, p, stream);
    case AdvDtype::kFloat64: return launch_typed<double>(rewards, out, bad_flag, partials, p, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace r1core
