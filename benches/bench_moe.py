"""Bench: MoE routed experts (r1core.moe_experts), forward and forward+backward, at the shapes of
real models, against the transformers-style expert loop (the baseline), a `torch._grouped_mm`
implementation (where the installed torch has it, GPU), torch.compile of the loop (GPU), and a dense
bf16 matmul of the same FLOPs (the rate the issue measures against).

Useful work: 6·T·k·H·I FLOPs forward (gate/up 4·T·k·H·I + down 2·T·k·H·I), 3x that for forward +
backward.  Shared experts (DeepSeek) are a dense MLP outside moe_experts and are not timed here.

Predictions.  H100 bf16, Qwen3-30B-A3B (H=2048, I=768, E=128, k=8), T=16384: 1.24e13 FLOPs forward;
at ~600 TFLOP/s of grouped tensor-core GEMM that is ~21 ms, the loop baseline launches ~6 small
kernels per expert plus index_add_ and runs at ~10-25% of peak.  CPU (2 shared cores): the loop
pays `index_add_` (a serial scatter_add on CPU, ~70% of its time at H=128) and per-expert `where`;
the cpp path sorts once and does two GEMMs per expert, so it should win >3x where the GEMMs are
small (H=128, E=64, k=6) and less where they dominate.
"""
from __future__ import annotations

import torch

import r1core
from r1core.bench import Case
from r1core.ref.moe import moe_align_ref, moe_experts_ref

GPU_SHAPES = {  # name: (H, I, E, k)
    "Qwen3-30B-A3B": (2048, 768, 128, 8),
    "DeepSeek-V2-Lite": (2048, 1408, 64, 6),
    "DeepSeek-V3": (7168, 2048, 256, 8),
}


def _inputs(T, H, I, E, k, dtype, device):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(T, H, generator=g)).to(dtype).to(device).requires_grad_()
    w13 = (torch.randn(E, 2 * I, H, generator=g) * H ** -0.5).to(dtype).to(device).requires_grad_()
    w2 = (torch.randn(E, H, I, generator=g) * I ** -0.5).to(dtype).to(device).requires_grad_()
    logits = torch.randn(T, E, generator=g).to(device)
    w, ids = torch.softmax(logits, -1).topk(k, dim=-1)
    weights = (w / w.sum(-1, keepdim=True)).requires_grad_()
    return x, w13, w2, weights, ids


def grouped_mm_experts(x, w13, w2, weights, ids):
    """The same y with torch._grouped_mm over expert-sorted rows (segments padded to 16 rows, which
    the CUTLASS grouped GEMM wants), combine by the inverse permutation: the torchtitan recipe."""
    T, H = x.shape
    E, twoI, _ = w13.shape
    k = ids.shape[1]
    sorted_ids, inverse, _, seg_start, _ = moe_align_ref(ids, E, 16)
    S = T * k
    tok = torch.where(sorted_ids < S, sorted_ids // k, T).long()
    x_pad = torch.cat([x, x.new_zeros(1, H)])
    offs = seg_start[1:].to(torch.int32)
    h = torch._grouped_mm(x_pad[tok], w13.transpose(1, 2), offs=offs)
    a = torch.nn.functional.silu(h[:, : twoI // 2]) * h[:, twoI // 2:]
    o = torch._grouped_mm(a, w2.transpose(1, 2), offs=offs)
    o_TkH = o[inverse.long()].view(T, k, H)
    return torch.bmm(weights.to(x.dtype).view(T, 1, k), o_TkH).view(T, H)


def _fwd(fn, args):
    def run():
        with torch.no_grad():
            return fn(*args)
    return run


def _fwd_bwd(fn, args, gy):
    leaves = args[:4]

    def run():
        for t in leaves:
            t.grad = None
        y = fn(*args)
        y.backward(gy)
        return y
    return run


def _cases_for(name, T, H, I, E, k, dtype_name, device) -> list[Case]:
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    args = _inputs(T, H, I, E, k, dtype, device)
    gy = torch.randn(T, H, generator=torch.Generator().manual_seed(1)).to(dtype).to(device)
    shape = f"{name} T={T} H={H} I={I} E={E} k={k}"
    flops = 6 * T * k * H * I
    impls = [("torch", moe_experts_ref, "transformers-style expert loop")]
    if device.type == "cuda":
        if hasattr(torch, "_grouped_mm"):
            impls.append(("torch._grouped_mm", grouped_mm_experts, "sorted rows, torch._grouped_mm x2"))
        impls.append(("torch.compile", torch.compile(moe_experts_ref), "torch.compile of the loop"))
        impls.append(("triton", lambda *a: r1core.moe_experts(*a, backend="triton"), "grouped Triton GEMMs"))
    else:
        impls.append(("cpp", lambda *a: r1core.moe_experts(*a, backend="cpp"), "sorted rows, 2 GEMMs/expert"))
    cases = []
    for backend, fn, note in impls:
        base = backend == "torch"
        cases.append(Case(op="moe_experts fwd", shape=shape, dtype=dtype_name, backend=backend, fn=_fwd(fn, args),
                          flops=flops, baseline=base, note=note))
        cases.append(Case(op="moe_experts fwd+bwd", shape=shape, dtype=dtype_name, backend=backend,
                          fn=_fwd_bwd(fn, args, gy), flops=3 * flops, baseline=base, note=note))
    if device.type == "cuda":  # the dense rate of the same FLOPs: [T·k, H] @ [H, 3I]
        a = torch.randn(T * k, H, device=device, dtype=dtype)
        b = torch.randn(H, 3 * I, device=device, dtype=dtype)
        cases.append(Case(op="dense mm (same FLOPs)", shape=shape, dtype=dtype_name, backend="cublas",
                          fn=lambda: a @ b, flops=flops, baseline=True, note="the dense matmul rate"))
    return cases


def cases(device: torch.device, quick: bool) -> list[Case]:
    if device.type == "cuda":
        if quick:
            return _cases_for("Qwen3-30B-A3B", 4096, *GPU_SHAPES["Qwen3-30B-A3B"], "bf16", device)
        out = []
        for T in (4096, 16384, 32768):
            out += _cases_for("Qwen3-30B-A3B", T, *GPU_SHAPES["Qwen3-30B-A3B"], "bf16", device)
        out += _cases_for("DeepSeek-V2-Lite", 16384, *GPU_SHAPES["DeepSeek-V2-Lite"], "bf16", device)
        for T in (4096, 16384):
            out += _cases_for("DeepSeek-V3", T, *GPU_SHAPES["DeepSeek-V3"], "bf16", device)
        return out
    if quick:
        return _cases_for("small", 512, 128, 64, 64, 6, "fp32", device)
    out = []
    for T in (64, 512, 4096):
        out += _cases_for("small", T, 128, 64, 64, 6, "fp32", device)
    out += _cases_for("small", 4096, 256, 128, 64, 6, "fp32", device)
    out += _cases_for("small", 4096, 256, 128, 64, 6, "bf16", device)
    return out
