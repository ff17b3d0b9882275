// Shared helpers for r1core's C++/CUDA entry points: input checks that raise Python ValueError
// (TORCH_CHECK_VALUE) with the argument's name, so bad input never crashes or reads out of bounds.
#pragma once
#include <ATen/ATen.h>

#define R1_CHECK(cond, ...) TORCH_CHECK_VALUE(cond, __VA_ARGS__)

namespace r1core {

inline void check_cpu(const at::Tensor& t, const char* name) {
  R1_CHECK(t.device().is_cpu(), name, " must be a CPU tensor, got ", t.device());
}

inline void check_cuda(const at::Tensor& t, const char* name) {
  R1_CHECK(t.device().is_cuda(), name, " must be a CUDA tensor, got ", t.device());
}

inline void check_dim(const at::Tensor& t, int64_t dim, const char* name) {
  R1_CHECK(t.dim() == dim, name, " must have ", dim, " dimensions, got shape ", t.sizes());
}

inline void check_last_contiguous(const at::Tensor& t, const char* name) {
  R1_CHECK(t.size(-1) <= 1 || t.stride(-1) == 1, name, " must be contiguous in its last dimension, got strides ",
           t.strides());
}

}  // namespace r1core
