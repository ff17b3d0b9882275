// One register_<area>(m) per area, called from bindings.cpp (the DeepGEMM pattern).
#pragma once
#include <pybind11/pybind11.h>

namespace r1core {
void register_advantage(pybind11::module_& m);
void register_grpo_loss(pybind11::module_& m);
void register_moe(pybind11::module_& m);
}  // namespace r1core
