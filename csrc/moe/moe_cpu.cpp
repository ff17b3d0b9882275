// MoE on the CPU ("cpp" backend of moe_experts).
//
// Legend: T tokens, H hidden, I intermediate, E experts, k experts per token, S = T·k assignments
// (s = t·k + j), n = rows of one expert.
//
// moe_align_cpu: a stable counting sort of the assignments by expert, each expert's segment padded to
// a multiple of `block` (the layout of the CUDA kernel, moe/moe_align.h; block = 1: plain sorted order).
//
// moe_experts_fwd_cpu / moe_experts_bwd_cpu: one parallel region over experts; inside it each expert
// gathers its rows (memcpy), runs its GEMMs single-threaded (fused gate|up [n, 2I], then down) and
// writes its rows straight to assignment order; the combine is a sum over k.  Versus the
// transformers loop (~10 fork/join parallel ops per expert, where + index_add_ = scatter_add) this is
// two fork/joins per pass, no atomics, no [T, H] read-modify-write per expert.  Experts without rows
// do nothing (their weight gradients stay zero).  Elementwise SwiGLU math runs in float32 for
// bf16/fp16 (float64 for float64); GEMMs accumulate as ATen's CPU GEMMs do.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <cstring>
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

namespace {

// dst[i, :] = src[idx[i], :] for i < n (rows of C elements; both contiguous, same dtype).
void gather_rows(const at::Tensor& src, const int64_t* idx, int64_t n, at::Tensor& dst) {
  const int64_t row_bytes = src.size(1) * src.element_size();
  const char* s = static_cast<const char*>(src.const_data_ptr());
  char* d = static_cast<char*>(dst.data_ptr());
  for (int64_t i = 0; i < n; ++i) std::memcpy(d + i * row_bytes, s + idx[i] * row_bytes, row_bytes);
}

// dst[idx[i], :] = src[i, :] for i < n (disjoint rows: safe from several threads at once).
void scatter_rows(const at::Tensor& src, const int64_t* idx, int64_t n, at::Tensor& dst) {
  const int64_t row_bytes = src.size(1) * src.element_size();
  const char* s = static_cast<const char*>(src.const_data_ptr());
  char* d = static_cast<char*>(dst.data_ptr());
  for (int64_t i = 0; i < n; ++i) std::memcpy(d + idx[i] * row_bytes, s + i * row_bytes, row_bytes);
}

at::ScalarType math_type(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

struct ExpertsShape {
  int64_t T, H, E, I, k, S;
};

ExpertsShape check_experts(const at::Tensor& x, const at::Tensor& w13, const at::Tensor& w2,
                           const at::Tensor& weights) {
  for (auto* p : {&x, &w13, &w2, &weights}) check_cpu(*p, "moe_experts inputs");
  check_dim(x, 2, "x");
  check_dim(w13, 3, "w13");
  check_dim(w2, 3, "w2");
  check_dim(weights, 2, "weights");
  R1_CHECK(x.is_contiguous() && w13.is_contiguous() && w2.is_contiguous(), "x, w13, w2 must be contiguous");
  R1_CHECK(w13.scalar_type() == x.scalar_type() && w2.scalar_type() == x.scalar_type(),
           "x, w13 and w2 must share a dtype");
  ExpertsShape d{x.size(0), x.size(1), w13.size(0), w13.size(1) / 2, weights.size(1), 0};
  d.S = d.T * d.k;
  R1_CHECK(w13.size(1) == 2 * d.I && w13.size(2) == d.H, "w13 must be [E, 2I, H=", d.H, "], got ", w13.sizes());
  R1_CHECK(w2.size(0) == d.E && w2.size(1) == d.H && w2.size(2) == d.I, "w2 must be [E, H, I], got ", w2.sizes());
  R1_CHECK(weights.size(0) == d.T, "weights must be [T, k], got ", weights.sizes());
  return d;
}

}  // namespace

// -> [y [T, H], sorted_ids [S] int32, seg_start [E+1] int32, h [S, 2I], act [S, I]]  (h, act: sorted
// order, defined when `save`, for the backward).
std::vector<at::Tensor> moe_experts_fwd_cpu(const at::Tensor& x, const at::Tensor& w13, const at::Tensor& w2,
                                            const at::Tensor& weights, const at::Tensor& ids, bool save) {
  const ExpertsShape d = check_experts(x, w13, w2, weights);
  R1_CHECK(ids.dim() == 2 && ids.size(0) == d.T && ids.size(1) == d.k, "ids must be [T, k], got ", ids.sizes());
  const std::vector<at::Tensor> al = moe_align_cpu(ids, d.E, 1);
  const at::Tensor order = al[0].to(at::kLong);
  const at::Tensor seg = al[3];
  const at::Tensor w_S = weights.reshape({-1}).to(x.scalar_type());
  // h, act: whole [S, .] buffers only when the backward needs them; else per-expert temporaries
  at::Tensor h = save ? at::empty({d.S, 2 * d.I}, x.options()) : at::Tensor();
  at::Tensor act = save ? at::empty({d.S, d.I}, x.options()) : at::Tensor();
  at::Tensor out = at::empty({d.S, d.H}, x.options());
  const int64_t* order_p = order.const_data_ptr<int64_t>();
  const int32_t* seg_p = seg.const_data_ptr<int32_t>();
  const auto mt = math_type(x);
  at::parallel_for(0, d.E, 1, [&](int64_t e0, int64_t e1) {
    const at::NoGradGuard no_grad;  // grad mode is thread-local: worker threads start with it on
    std::vector<int64_t> tok;
    for (int64_t e = e0; e < e1; ++e) {
      const int64_t p0 = seg_p[e], n = seg_p[e + 1] - seg_p[e];
      if (n == 0) continue;
      tok.resize(n);
      for (int64_t i = 0; i < n; ++i) tok[i] = order_p[p0 + i] / d.k;
      at::Tensor xs = at::empty({n, d.H}, x.options());
      gather_rows(x, tok.data(), n, xs);
      at::Tensor he = save ? h.narrow(0, p0, n) : at::empty({n, 2 * d.I}, x.options());
      at::mm_out(he, xs, w13[e].t());                       // gate | up, one GEMM
      at::Tensor ae = save ? act.narrow(0, p0, n) : at::empty({n, d.I}, x.options());
      if (mt == x.scalar_type()) {                          // SwiGLU in place
        at::silu_out(ae, he.narrow(1, 0, d.I));
        ae.mul_(he.narrow(1, d.I, d.I));
      } else {                                              // bf16/fp16: the math in float32
        ae.copy_(at::silu(he.narrow(1, 0, d.I).to(mt)) * he.narrow(1, d.I, d.I).to(mt));
      }
      at::Tensor oe = at::mm(ae, w2[e].t());
      oe.mul_(w_S.index_select(0, order.narrow(0, p0, n)).unsqueeze(1));
      scatter_rows(oe, order_p + p0, n, out);               // rows to assignment order
    }
  });
  at::Tensor y = d.k == 1 ? out.view({d.T, d.H}) : out.view({d.T, d.k, d.H}).sum(1);
  return {y, al[0], seg, save ? h : at::Tensor(), save ? act : at::Tensor()};
}

// -> [dx [T, H], dw13, dw2, dweights [T, k]] (undefined where not needed).
std::vector<at::Tensor> moe_experts_bwd_cpu(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& w13,
                                            const at::Tensor& w2, const at::Tensor& weights,
                                            const at::Tensor& sorted_ids, const at::Tensor& seg_start,
                                            const at::Tensor& h, const at::Tensor& act, bool need_x, bool need_w13,
                                            bool need_w2, bool need_w) {
  const ExpertsShape d = check_experts(x, w13, w2, weights);
  R1_CHECK(dy.sizes() == x.sizes() && dy.scalar_type() == x.scalar_type() && dy.is_contiguous(),
           "dy must be a contiguous [T, H] tensor of x's dtype");
  R1_CHECK(sorted_ids.numel() == d.S && seg_start.numel() == d.E + 1 && h.size(0) == d.S && act.size(0) == d.S,
           "saved permutation/activations do not match the inputs");
  const at::Tensor order = sorted_ids.to(at::kLong);
  const at::Tensor w_S = weights.reshape({-1}).to(x.scalar_type());
  const int64_t* order_p = order.const_data_ptr<int64_t>();
  const int32_t* seg_p = seg_start.const_data_ptr<int32_t>();
  const auto mt = math_type(x);
  at::Tensor dx_S = need_x ? at::empty({d.S, d.H}, x.options()) : at::Tensor();
  at::Tensor dw13 = need_w13 ? at::zeros_like(w13) : at::Tensor();
  at::Tensor dw2 = need_w2 ? at::zeros_like(w2) : at::Tensor();
  at::Tensor dw_S = need_w ? at::empty({d.S, 1}, x.options().dtype(mt)) : at::Tensor();
  at::parallel_for(0, d.E, 1, [&](int64_t e0, int64_t e1) {
    const at::NoGradGuard no_grad;  // grad mode is thread-local: worker threads start with it on
    std::vector<int64_t> tok;
    for (int64_t e = e0; e < e1; ++e) {
      const int64_t p0 = seg_p[e], n = seg_p[e + 1] - seg_p[e];
      if (n == 0) continue;
      tok.resize(n);
      for (int64_t i = 0; i < n; ++i) tok[i] = order_p[p0 + i] / d.k;
      at::Tensor dys = at::empty({n, d.H}, x.options());
      gather_rows(dy, tok.data(), n, dys);
      const at::Tensor wr = w_S.index_select(0, order.narrow(0, p0, n)).unsqueeze(1);
      const at::Tensor ae = act.narrow(0, p0, n);
      if (need_w2) {
        at::Tensor dw2e = dw2[e];
        at::mm_out(dw2e, (dys * wr).t(), ae);
      }
      const at::Tensor dA = at::mm(dys, w2[e]).to(mt);      // d act, unweighted
      if (need_w) {                                          // d weight = dy · out = (dy @ w2) · act
        at::Tensor dwe = (dA * ae.to(mt)).sum(1, true);
        scatter_rows(dwe, order_p + p0, n, dw_S);
      }
      if (!need_x && !need_w13) continue;
      const at::Tensor he = h.narrow(0, p0, n);
      const at::Tensor g = he.narrow(1, 0, d.I).to(mt), u = he.narrow(1, d.I, d.I).to(mt);
      const at::Tensor sig = at::sigmoid(g);
      const at::Tensor da = dA * wr.to(mt);
      const at::Tensor dh = at::cat({da * u * sig * (1 + g * (1 - sig)), da * g * sig}, 1).to(x.scalar_type());
      if (need_w13) {
        at::Tensor xs = at::empty({n, d.H}, x.options());
        gather_rows(x, tok.data(), n, xs);
        at::Tensor dw13e = dw13[e];
        at::mm_out(dw13e, dh.t(), xs);
      }
      if (need_x) {
        const at::Tensor dxe = at::mm(dh, w13[e]);
        scatter_rows(dxe, order_p + p0, n, dx_S);
      }
    }
  });
  at::Tensor dx;
  if (need_x) dx = d.k == 1 ? dx_S.view({d.T, d.H}) : dx_S.view({d.T, d.k, d.H}).sum(1);
  at::Tensor dweights = need_w ? dw_S.view({d.T, d.k}).to(weights.scalar_type()) : at::Tensor();
  return {dx, dw13, dw2, dweights};
}

void register_moe(pybind11::module_& m) {
  m.def("moe_align_cpu", &moe_align_cpu, pybind11::arg("ids"), pybind11::arg("num_experts"),
        pybind11::arg("block") = 1,
        "Stable counting sort of the T*k MoE assignments by expert, segments padded to `block` (CPU).\n"
        "-> [sorted_ids, inverse, block_expert, seg_start, counts], int32 (see csrc/moe/moe_align.h)");
  m.def("moe_experts_fwd_cpu", &moe_experts_fwd_cpu, pybind11::arg("x"), pybind11::arg("w13"), pybind11::arg("w2"),
        pybind11::arg("weights"), pybind11::arg("ids"), pybind11::arg("save"),
        "MoE experts forward on CPU -> [y, sorted_ids, seg_start, h, act] (h, act only when save)");
  m.def("moe_experts_bwd_cpu", &moe_experts_bwd_cpu, "MoE experts backward on CPU -> [dx, dw13, dw2, dweights]");
#ifdef R1CORE_WITH_CUDA
  register_moe_cuda(m);
#endif
}

}  // namespace r1core
