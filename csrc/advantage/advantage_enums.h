// The advantage op's options as enums, shared by the plain-CUDA launcher (advantage.h, no torch
// headers) and the torch-facing entry points (advantage_ops.h).
#pragma once

namespace r1core {

enum class AdvScale : int { kGroup = 0, kBatch = 1, kNone = 2 };  // std of the group / of all rewards / none
enum class AdvBaseline : int { kMean = 0, kRloo = 1 };            // group mean / leave-one-out mean

}  // namespace r1core
