// Fused GRPO loss on logits, C++ CPU kernels (docs/spec.md §2): the same forward/backward pair as
// kernels/grpo_loss.py, parallel over rows (tokens) with at::parallel_for.
//
// Legend: N = B·T rows, V vocabulary; row n = (b, t) = (n / T, n % T) starts at
// logits + b·stride_b + t·stride_t and is contiguous over V (so logits[:, :-1] needs no copy).
//
// Memory: each row is read from DRAM once per pass, in chunks of kChunk values converted to float32
// in an L1-resident buffer; the forward's log-sum-exp is online (running max, rescaled sum), so there
// is no [N, V] float32 temporary anywhere.  The backward writes dlogits in the logits' dtype, into a
// new tensor or (inplace) over the logits themselves: peak extra memory = one gradient, or nothing.
// Inner loops are `omp simd` loops over a branch-free exp, vectorised by -O3 -march=native.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <tuple>

#include "common.h"
#include "register.h"

#ifdef __FAST_MATH__
#error "grpo_loss_cpu.cpp relies on IEEE rounding in exp_f32: build it without -ffast-math"
#endif

namespace r1core {
namespace {

constexpr int64_t kChunk = 1024;  // float32 values per L1-resident chunk of a row
constexpr int kTerms = 5;         // layout: r1core/ops/grpo/math.py TERMS (l·w, ratio·m, kl·m, clip_low·m, clip_high·m)

// exp(x) in float32 without calls or branches, so `omp simd` loops vectorise: Cody-Waite range
// reduction x = n·ln2 + r, |r| <= ln2/2, and Cephes' degree-7 polynomial for e^r (about 1 ulp).
// x < -87.3 (and -inf) gives exactly 0; NaN propagates; callers only pass x <= ~0.
static inline float exp_f32(float x) {
  const float xc = std::min(std::max(x, -87.3f), 88.7f);
  // n = round(xc / ln2) by the 1.5·2^23 trick (std::floor/nearbyint would block vectorisation)
  const float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (xc - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof(two_n));
  const float y = p * two_n;
  return x < -87.3f ? 0.0f : y;  // NaN: xc, n, r and p are NaN, so y is too
}

// How a row's values are read and written as float32, on raw storage types the vectoriser
// understands (c10's BFloat16/Half wrappers stop it): bfloat16 by bit shifts with
// round-to-nearest-even, float16 likewise (compilers do not vectorise _Float16 conversions well).
template <typename scalar_t>
struct Raw;
template <>
struct Raw<float> {
  using T = float;
  static float load(T v) { return v; }
  static T store(float f) { return f; }
};
template <>
struct Raw<double> {  // instantiated by AT_DISPATCH only; rejected by check_logits
  using T = double;
  static float load(T v) { return static_cast<float>(v); }
  static T store(float f) { return f; }
};
template <>
struct Raw<at::BFloat16> {
  using T = uint16_t;
  static float load(T v) {
    const uint32_t u = static_cast<uint32_t>(v) << 16;
    float f;
    std::memcpy(&f, &u, sizeof(f));
    return f;
  }
  static T store(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof(u));
    const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    return static_cast<T>(f != f ? 0x7FC0u : rounded);
  }
};
template <>
struct Raw<at::Half> {  // IEEE binary16 by branch-free bit manipulation (F. Giesen's method), RNE
  using T = uint16_t;
  static float load(T v) {
    const uint32_t h = v;
    const uint32_t em = h & 0x7FFFu;
    uint32_t u = em << 13;
    float f;
    std::memcpy(&f, &u, sizeof(f));
    f *= 0x1p112f;  // rebias the exponent; also scales subnormals right
    std::memcpy(&u, &f, sizeof(u));
    u |= em >= 0x7C00u ? 0x7F800000u : 0u;  // inf / nan
    u |= (h & 0x8000u) << 16;
    std::memcpy(&f, &u, sizeof(f));
    return f;
  }
  static T store(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof(u));
    const uint32_t sign = u & 0x80000000u;
    u ^= sign;
    // subnormal results: let the float adder round, against a magic constant
    float g;
    std::memcpy(&g, &u, sizeof(g));
    const uint32_t magic_bits = 126u << 23;
    float magic;
    std::memcpy(&magic, &magic_bits, sizeof(magic));
    g += magic;
    uint32_t sub;
    std::memcpy(&sub, &g, sizeof(sub));
    sub -= magic_bits;
    // normal results: rebias and round to nearest even on the 13 dropped bits
    const uint32_t norm = (u + ((15u - 127u) << 23) + 0xFFFu + ((u >> 13) & 1u)) >> 13;
    uint32_t o = u < (113u << 23) ? sub : norm;
    o = u >= (143u << 23) ? (u > 0x7F800000u ? 0x7E00u : 0x7C00u) : o;  // overflow -> inf; nan
    return static_cast<T>(o | (sign >> 16));
  }
};

template <typename scalar_t>
const typename Raw<scalar_t>::T* raw(const scalar_t* p) {
  return reinterpret_cast<const typename Raw<scalar_t>::T*>(p);
}
template <typename scalar_t>
typename Raw<scalar_t>::T* raw(scalar_t* p) {
  return reinterpret_cast<typename Raw<scalar_t>::T*>(p);
}

// log Σ_v exp(x_v · inv_t) over one row, one pass: each chunk is converted to float32 into `buf`,
// its max found, the running sum s rescaled when the max grows, then the chunk's exps summed.
// kEntropy also returns the entropy of softmax(x · inv_t) in *entropy, from one more running sum
// t = Σ_v e_v·(y_v - m), e_v = exp(y_v - m), rescaled with the max like s: when m grows to m',
// t' = α·(t + s·(m - m')), α = exp(m - m').  H = log s - t/s (both O(log V): no cancellation).
template <bool kEntropy, typename scalar_t>
float row_lse(const scalar_t* row, int64_t V, float inv_t, float* buf, float* entropy = nullptr) {
  using R = Raw<scalar_t>;
  const typename R::T* x = raw(row);
  float m = -std::numeric_limits<float>::infinity();
  float s = 0.0f, t = 0.0f;
  for (int64_t c0 = 0; c0 < V; c0 += kChunk) {
    const int64_t n = std::min(kChunk, V - c0);
    float cm = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : cm)
    for (int64_t i = 0; i < n; ++i) {
      const float v = R::load(x[c0 + i]) * inv_t;
      buf[i] = v;
      cm = std::max(cm, v);
    }
    if (cm > m) {
      const float alpha = exp_f32(m - cm);
      if constexpr (kEntropy) t = s > 0.0f ? alpha * (t + s * (m - cm)) : 0.0f;  // s = 0 while m = -inf: no 0·inf
      s *= alpha;
      m = cm;
    }
    float cs = 0.0f;
    if constexpr (kEntropy) {
      float ct = 0.0f;
#pragma omp simd reduction(+ : cs, ct)
      for (int64_t i = 0; i < n; ++i) {
        const float d = buf[i] - m;
        const float e = exp_f32(d);
        cs += e;
        ct += e > 0.0f ? e * d : 0.0f;  // -inf logits add nothing
      }
      t += ct;
    } else {
#pragma omp simd reduction(+ : cs)
      for (int64_t i = 0; i < n; ++i) cs += exp_f32(buf[i] - m);
    }
    s += cs;
  }
  const float log_s = std::log(s);
  if constexpr (kEntropy) *entropy = log_s - t / s;
  return m + log_s;
}

// out_v = -p_v · (scale + (log p_v + H) · scale_h), p = softmax(x · inv_t), over one row (out may alias
// x): the softmax and entropy parts of a row's gradient; the caller adds the one-hot part at the target.
template <typename scalar_t>
void row_grad_entropy(const scalar_t* row, scalar_t* out, int64_t V, float inv_t, float lse, float scale, float h,
                      float scale_h) {
  using R = Raw<scalar_t>;
  const typename R::T* x = raw(row);
  typename R::T* o = raw(out);
#pragma omp simd
  for (int64_t v = 0; v < V; ++v) {
    const float lp = R::load(x[v]) * inv_t - lse;
    const float p = exp_f32(lp);
    // p = 0 (a -inf logit): contributes 0, not 0·(-inf)
    o[v] = R::store(p > 0.0f ? -p * (scale + (lp + h) * scale_h) : 0.0f);
  }
}

// out_v = -exp(x_v · inv_t - lse) · scale over one row (out may alias x: in place).
template <typename scalar_t>
void row_neg_softmax(const scalar_t* row, scalar_t* out, int64_t V, float inv_t, float lse, float scale) {
  using R = Raw<scalar_t>;
  const typename R::T* x = raw(row);
  typename R::T* o = raw(out);
#pragma omp simd
  for (int64_t v = 0; v < V; ++v) o[v] = R::store(-exp_f32(R::load(x[v]) * inv_t - lse) * scale);
}

struct TokenTerms {
  float loss, dlogp, ratio, kl;
  bool clip_low, clip_high;
};

// The per-token GRPO math of docs/spec.md §2 (same as grpo_token_math in kernels/grpo_loss.py).
inline TokenTerms token_math(float logp, const float* old, const float* ref, float adv, float beta, float eps_low,
                             float eps_high) {
  TokenTerms o{};
  o.ratio = old ? std::exp(logp - *old) : 1.0f;
  o.clip_low = o.ratio < 1.0f - eps_low && adv < 0.0f;
  o.clip_high = o.ratio > 1.0f + eps_high && adv > 0.0f;
  const float clipped = std::min(std::max(o.ratio, 1.0f - eps_low), 1.0f + eps_high);
  o.loss = -std::min(o.ratio * adv, clipped * adv);
  o.dlogp = (o.clip_low || o.clip_high) ? 0.0f : -adv * o.ratio;
  o.kl = 0.0f;
  if (ref) {
    const float d = *ref - logp;
    const float e = std::exp(d);
    o.kl = e - d - 1.0f;
    if (beta > 0.0f) {
      o.loss += beta * o.kl;
      o.dlogp += beta * (1.0f - e);
    }
  }
  return o;
}

struct Rows {  // row n of a [B, T, V] tensor with unit stride over V
  int64_t T, sb, st;
  int64_t offset(int64_t n) const { return (n / T) * sb + (n % T) * st; }
};

Rows rows_of(const at::Tensor& t) { return Rows{t.size(1), t.stride(0), t.stride(1)}; }

// rows per task: about 1M values (~0.5 ms of one core), so small calls stay on one thread: on a
// loaded machine a fork/join can cost a scheduler quantum (~10 ms) when a worker is descheduled
int64_t grain(int64_t V) { return std::max<int64_t>(1, (int64_t{1} << 20) / std::max<int64_t>(V, 1)); }

void check_logits(const at::Tensor& logits) {
  check_cpu(logits, "logits");
  check_dim(logits, 3, "logits");
  check_last_contiguous(logits, "logits");
  const auto dt = logits.scalar_type();
  R1_CHECK(dt == at::kFloat || dt == at::kBFloat16 || dt == at::kHalf,
           "logits must be float32, bfloat16 or float16, got ", dt);
  R1_CHECK(logits.size(2) > 0, "logits must have a non-empty vocabulary dimension, got shape ", logits.sizes());
}

void check_per_token(const at::Tensor& t, int64_t N, at::ScalarType dt, const char* name) {
  check_cpu(t, name);
  R1_CHECK(t.scalar_type() == dt, name, " must be ", dt, ", got ", t.scalar_type());
  R1_CHECK(t.dim() == 1 && t.size(0) == N && t.is_contiguous(), name, " must be a contiguous [N] = [", N,
           "] tensor, got shape ", t.sizes());
}

void check_temperature(double temperature) {
  R1_CHECK(std::isfinite(temperature) && temperature > 0, "temperature must be finite and > 0, got ", temperature);
}

// forward: -> (logp [N], lse [N], dlogp [N] = w·dl/dlogp, terms [5, N], entropy [N] or undefined), float32
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> grpo_loss_fwd_impl(
    const at::Tensor& logits, const at::Tensor& targets, const at::Tensor& adv, const at::Tensor& mask,
    const at::Tensor& w, const std::optional<at::Tensor>& old_logp, const std::optional<at::Tensor>& ref_logp,
    double beta, double eps_low, double eps_high, double temperature, bool with_entropy) {
  check_logits(logits);
  const int64_t N = logits.size(0) * logits.size(1), V = logits.size(2);
  check_per_token(targets, N, at::kLong, "targets");
  check_per_token(adv, N, at::kFloat, "advantages");
  check_per_token(mask, N, at::kFloat, "mask");
  check_per_token(w, N, at::kFloat, "weights");
  if (old_logp) check_per_token(*old_logp, N, at::kFloat, "old_logp");
  if (ref_logp) check_per_token(*ref_logp, N, at::kFloat, "ref_logp");
  check_temperature(temperature);
  R1_CHECK(std::isfinite(beta) && beta >= 0, "beta must be finite and >= 0, got ", beta);
  R1_CHECK(std::isfinite(eps_low) && eps_low >= 0, "eps_low must be finite and >= 0, got ", eps_low);
  R1_CHECK(std::isfinite(eps_high) && eps_high >= 0, "eps_high must be finite and >= 0, got ", eps_high);

  auto f32 = logits.options().dtype(at::kFloat);
  at::Tensor logp = at::empty({N}, f32), lse = at::empty({N}, f32), dlogp = at::empty({N}, f32);
  at::Tensor terms = at::empty({kTerms, N}, f32);
  at::Tensor entropy = with_entropy ? at::empty({N}, f32) : at::Tensor();
  float* en = with_entropy ? entropy.data_ptr<float>() : nullptr;
  const Rows rows = rows_of(logits);
  const int64_t* tg = targets.data_ptr<int64_t>();
  const float *a = adv.data_ptr<float>(), *mk = mask.data_ptr<float>(), *wt = w.data_ptr<float>();
  const float* old = old_logp ? old_logp->data_ptr<float>() : nullptr;
  const float* ref = ref_logp ? ref_logp->data_ptr<float>() : nullptr;
  float *lp = logp.data_ptr<float>(), *ls = lse.data_ptr<float>(), *dl = dlogp.data_ptr<float>();
  float* tm = terms.data_ptr<float>();
  const float inv_t = static_cast<float>(1.0 / temperature);
  const float fb = beta, fl = eps_low, fh = eps_high;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "grpo_loss_fwd_cpu", [&] {
    const scalar_t* x = logits.data_ptr<scalar_t>();
    at::parallel_for(0, N, grain(V), [&](int64_t begin, int64_t end) {
      float buf[kChunk];
      for (int64_t n = begin; n < end; ++n) {
        const float m = mk[n];
        if (m == 0.0f) {  // masked: read neither the logits nor the target
          lp[n] = ls[n] = dl[n] = 0.0f;
          for (int k = 0; k < kTerms; ++k) tm[k * N + n] = 0.0f;
          if (en) en[n] = 0.0f;
          continue;
        }
        const scalar_t* row = x + rows.offset(n);
        const float lse_n = en ? row_lse<true>(row, V, inv_t, buf, en + n) : row_lse<false>(row, V, inv_t, buf);
        const int64_t t = tg[n];
        const bool valid = t >= 0 && t < V;  // checked by the caller unless R1CORE_SKIP_CHECKS=1
        const float logp_n = valid ? static_cast<float>(row[t]) * inv_t - lse_n : 0.0f;
        const TokenTerms o = token_math(logp_n, old ? old + n : nullptr, ref ? ref + n : nullptr, a[n], fb, fl, fh);
        lp[n] = logp_n;
        ls[n] = lse_n;
        dl[n] = o.dlogp * wt[n];
        tm[n] = o.loss * wt[n];
        tm[N + n] = o.ratio * m;
        tm[2 * N + n] = o.kl * m;
        tm[3 * N + n] = o.clip_low ? m : 0.0f;
        tm[4 * N + n] = o.clip_high ? m : 0.0f;
      }
    });
  });
  return {logp, lse, dlogp, terms, entropy};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> grpo_loss_fwd_cpu(
    const at::Tensor& logits, const at::Tensor& targets, const at::Tensor& adv, const at::Tensor& mask,
    const at::Tensor& w, const std::optional<at::Tensor>& old_logp, const std::optional<at::Tensor>& ref_logp,
    double beta, double eps_low, double eps_high, double temperature) {
  auto o = grpo_loss_fwd_impl(logits, targets, adv, mask, w, old_logp, ref_logp, beta, eps_low, eps_high,
                              temperature, false);
  return {std::get<0>(o), std::get<1>(o), std::get<2>(o), std::get<3>(o)};
}

// the same forward plus the per-token entropy of softmax(logits / T) (0 on masked rows)
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> grpo_loss_fwd_entropy_cpu(
    const at::Tensor& logits, const at::Tensor& targets, const at::Tensor& adv, const at::Tensor& mask,
    const at::Tensor& w, const std::optional<at::Tensor>& old_logp, const std::optional<at::Tensor>& ref_logp,
    double beta, double eps_low, double eps_high, double temperature) {
  return grpo_loss_fwd_impl(logits, targets, adv, mask, w, old_logp, ref_logp, beta, eps_low, eps_high,
                            temperature, true);
}

// backward: dlogits = (onehot(target) - exp(x/T - lse)) · dlogp · grad / T in the logits' dtype,
// into a new tensor or, with inplace, over the logits.
// With entropy (the forward's) and dent = w·dl/dH per row, the entropy term -p·(log p + H)·dent·grad/T is
// added (a row is skipped only when both dlogp and dent are 0).
at::Tensor grpo_loss_bwd_cpu(at::Tensor logits, const at::Tensor& targets, const at::Tensor& lse,
                             const at::Tensor& dlogp, double grad, double temperature, bool inplace,
                             const std::optional<at::Tensor>& entropy, const std::optional<at::Tensor>& dent) {
  check_logits(logits);
  const int64_t N = logits.size(0) * logits.size(1), V = logits.size(2);
  check_per_token(targets, N, at::kLong, "targets");
  check_per_token(lse, N, at::kFloat, "lse");
  check_per_token(dlogp, N, at::kFloat, "dlogp");
  check_temperature(temperature);
  R1_CHECK(entropy.has_value() == dent.has_value(), "entropy and dent go together");
  if (entropy) check_per_token(*entropy, N, at::kFloat, "entropy");
  if (dent) check_per_token(*dent, N, at::kFloat, "dent");
  const float* hp = entropy ? entropy->data_ptr<float>() : nullptr;
  const float* dh = dent ? dent->data_ptr<float>() : nullptr;
  at::Tensor out = inplace ? logits : at::empty(logits.sizes(), logits.options());
  const Rows rin = rows_of(logits), rout = rows_of(out);
  const int64_t* tg = targets.data_ptr<int64_t>();
  const float *ls = lse.data_ptr<float>(), *dl = dlogp.data_ptr<float>();
  const float inv_t = static_cast<float>(1.0 / temperature);
  const float g = static_cast<float>(grad);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "grpo_loss_bwd_cpu", [&] {
    const scalar_t* x = logits.data_ptr<scalar_t>();
    scalar_t* y = out.data_ptr<scalar_t>();
    at::parallel_for(0, N, grain(V), [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) {
        scalar_t* o = y + rout.offset(n);
        const float dh_n = dh ? dh[n] : 0.0f;
        if (dl[n] == 0.0f && dh_n == 0.0f) {  // masked row or no gradient: exact zeros, nothing read
          std::fill(o, o + V, scalar_t(0));
          continue;
        }
        const scalar_t* row = x + rin.offset(n);
        const float scale = dl[n] * g * inv_t, lse_n = ls[n];
        const int64_t t = tg[n];
        const bool valid = t >= 0 && t < V;
        const float lp_t = valid ? static_cast<float>(row[t]) * inv_t - lse_n : 0.0f;  // before overwrite
        const float p_t = valid ? exp_f32(lp_t) : 0.0f;
        if (dh_n != 0.0f) {
          const float scale_h = dh_n * g * inv_t, h = hp[n];
          row_grad_entropy(row, o, V, inv_t, lse_n, scale, h, scale_h);
          if (valid) o[t] = static_cast<scalar_t>((1.0f - p_t) * scale - p_t * (lp_t + h) * scale_h);
        } else {
          row_neg_softmax(row, o, V, inv_t, lse_n, scale);
          if (valid) o[t] = static_cast<scalar_t>((1.0f - p_t) * scale);
        }
      }
    });
  });
  return out;
}

// logprobs: log_softmax(logits / T)[target] -> [N] float32; 0 where the target is negative (ignored);
// with_entropy also fills entropy [N] (0 on ignored rows, which are not read).
std::tuple<at::Tensor, at::Tensor> logprobs_impl(const at::Tensor& logits, const at::Tensor& targets,
                                                 double temperature, bool with_entropy) {
  check_logits(logits);
  const int64_t N = logits.size(0) * logits.size(1), V = logits.size(2);
  check_per_token(targets, N, at::kLong, "targets");
  check_temperature(temperature);
  at::Tensor logp = at::empty({N}, logits.options().dtype(at::kFloat));
  at::Tensor entropy = with_entropy ? at::empty({N}, logits.options().dtype(at::kFloat)) : at::Tensor();
  float* en = with_entropy ? entropy.data_ptr<float>() : nullptr;
  const Rows rows = rows_of(logits);
  const int64_t* tg = targets.data_ptr<int64_t>();
  float* lp = logp.data_ptr<float>();
  const float inv_t = static_cast<float>(1.0 / temperature);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "logprobs_cpu", [&] {
    const scalar_t* x = logits.data_ptr<scalar_t>();
    at::parallel_for(0, N, grain(V), [&](int64_t begin, int64_t end) {
      float buf[kChunk];
      for (int64_t n = begin; n < end; ++n) {
        const int64_t t = tg[n];
        if (t < 0 || t >= V) {
          lp[n] = 0.0f;
          if (en) en[n] = 0.0f;
          continue;
        }
        const scalar_t* row = x + rows.offset(n);
        const float lse_n = en ? row_lse<true>(row, V, inv_t, buf, en + n) : row_lse<false>(row, V, inv_t, buf);
        lp[n] = static_cast<float>(row[t]) * inv_t - lse_n;
      }
    });
  });
  return {logp, entropy};
}

at::Tensor logprobs_cpu(const at::Tensor& logits, const at::Tensor& targets, double temperature) {
  return std::get<0>(logprobs_impl(logits, targets, temperature, false));
}

std::tuple<at::Tensor, at::Tensor> logprobs_entropy_cpu(const at::Tensor& logits, const at::Tensor& targets,
                                                        double temperature) {
  return logprobs_impl(logits, targets, temperature, true);
}

}  // namespace

void register_grpo_loss(pybind11::module_& m) {
  m.def("grpo_loss_fwd_cpu", &grpo_loss_fwd_cpu,
        "GRPO loss forward on CPU logits -> (logp, lse, w*dl/dlogp, terms[5, N])", pybind11::arg("logits"),
        pybind11::arg("targets"), pybind11::arg("advantages"), pybind11::arg("mask"), pybind11::arg("weights"),
        pybind11::arg("old_logp"), pybind11::arg("ref_logp"), pybind11::arg("beta"), pybind11::arg("eps_low"),
        pybind11::arg("eps_high"), pybind11::arg("temperature"));
  m.def("grpo_loss_fwd_entropy_cpu", &grpo_loss_fwd_entropy_cpu,
        "GRPO loss forward on CPU logits -> (logp, lse, w*dl/dlogp, terms[5, N], entropy)", pybind11::arg("logits"),
        pybind11::arg("targets"), pybind11::arg("advantages"), pybind11::arg("mask"), pybind11::arg("weights"),
        pybind11::arg("old_logp"), pybind11::arg("ref_logp"), pybind11::arg("beta"), pybind11::arg("eps_low"),
        pybind11::arg("eps_high"), pybind11::arg("temperature"));
  m.def("grpo_loss_bwd_cpu", &grpo_loss_bwd_cpu,
        "GRPO loss backward on CPU logits -> dlogits (plus the entropy term when entropy and dent are given)",
        pybind11::arg("logits"), pybind11::arg("targets"), pybind11::arg("lse"), pybind11::arg("dlogp"),
        pybind11::arg("grad"), pybind11::arg("temperature"), pybind11::arg("inplace"),
        pybind11::arg("entropy") = pybind11::none(), pybind11::arg("dent") = pybind11::none());
  m.def("logprobs_cpu", &logprobs_cpu, "log_softmax(logits / temperature)[target] on CPU -> [N] float32",
        pybind11::arg("logits"), pybind11::arg("targets"), pybind11::arg("temperature"));
  m.def("logprobs_entropy_cpu", &logprobs_entropy_cpu,
        "(log_softmax(logits / temperature)[target], entropy of softmax(logits / temperature)) on CPU, [N] float32",
        pybind11::arg("logits"), pybind11::arg("targets"), pybind11::arg("temperature"));
}

}  // namespace r1core
