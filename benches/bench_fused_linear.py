"""Bench: fused linear GRPO loss, forward + backward (r1core.fused_linear_grpo_loss), against the
unfused eager reference (hidden @ W.T, then the GRPO loss reference), torch.compile of it (GPU),
Liger-Kernel's LigerFusedLinearGRPOLoss and Cut Cross-Entropy's linear_cross_entropy (a plain CE
loss on the same matmul shapes, for scale) where installed.

Work: 6·N·H·V FLOPs (the three GEMMs: logits, dhidden, dweight); the on-chip Triton strategy does
8·N·H·V (it recomputes the logits in backward).  The unfused reference moves the logits about 8
times (fp32 log_softmax, its gradient, ...): on CPU it cannot even hold N=16384, V=65536 (4 GiB per
fp32 logits tensor), which is exactly the case the fused op exists for.

Predictions.  CPU: the GEMMs at the machine's fp32 rate plus ~4 passes over one 64 MiB chunk per
chunk (it fits in L3) vs the reference's ~8 passes over N·V in DRAM: the fused op should be at least
as fast and its peak a 64 MiB buffer + the gradients.  H100, N=16384, H=2048, V=151936 bf16: 3.06e16
FLOPs; at ~700 TFLOP/s of bf16 GEMM that is ~44 ms, plus ~5 ms of row-kernel traffic (2 B/logit x
~6 passes over 2.5e9 logits at ~3 TB/s) -> ~50 ms ("triton", chunked strategy).
"""
from __future__ import annotations

import torch

import r1core
from r1core.bench import Case
from r1core.ref.fused_linear import fused_linear_grpo_loss_ref


def _inputs(N, H, V, dtype, device, T=1024):
    g = torch.Generator(device="cpu").manual_seed(0)
    B = max(1, N // T)
    T = N // B
    h = (torch.randn(B, T, H, generator=g) / 2).to(dtype).to(device).requires_grad_()
    w = (torch.randn(V, H, generator=g) / H ** 0.5).to(dtype).to(device).requires_grad_()
    targets = torch.randint(0, V, (B, T), generator=g).to(device)
    mask = torch.ones(B, T, dtype=torch.bool, device=device)
    adv = torch.randn(B, generator=g).to(device)
    old = (torch.randn(B, T, generator=g) * 0.1 - 8).to(device)
    ref = (torch.randn(B, T, generator=g) * 0.1 - 8).to(device)
    return h, w, targets, mask, adv, old, ref


def _step(loss_fn, h, w):
    def fn():
        h.grad = w.grad = None
        loss = loss_fn()
        loss.backward()
        return loss
    return fn


def _cases_for(N, H, V, dtype_name, device, *, with_reference: bool, quick: bool) -> list[Case]:
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    h, w, targets, mask, adv, old, ref = _inputs(N, H, V, dtype, device, T=min(1024, N))
    kw = dict(old_logp=old, ref_logp=ref, beta=0.04, loss_agg="token_mean")
    shape = f"N={N} H={H} V={V}"
    flops = 6 * N * H * V
    cases = []

    def add(backend, loss_fn, **extra):
        cases.append(Case(op="fused_linear_grpo_loss fwd+bwd", shape=shape, dtype=dtype_name, backend=backend,
                          fn=_step(loss_fn, h, w), flops=flops, **extra))

    if with_reference:
        add("torch", lambda: fused_linear_grpo_loss_ref(h, w, targets, adv, mask, **kw)[0], baseline=True,
            note="unfused eager reference")
        if device.type == "cuda":
            compiled = torch.compile(fused_linear_grpo_loss_ref)
            add("torch.compile", lambda: compiled(h, w, targets, adv, mask, **kw)[0])
    if device.type == "cpu":
        from r1core.ops.grpo import fused_linear as fl
        if fl.FUSED_LINEAR.missing("cpp", "cpu") is None:
            add("cpp", lambda: r1core.fused_linear_grpo_loss(h, w, targets, adv, mask, backend="cpp", **kw)[0],
                note="chunk loop, C++ row kernels")
        add("torch-chunked", lambda: r1core.fused_linear_grpo_loss(
            h, w, targets, adv, mask, backend="torch", strategy="chunked", **kw)[0],
            note="chunk loop, PyTorch row math (no extension)")
    else:
        for strategy in ("chunked", "onchip"):
            add(f"triton-{strategy}", lambda strategy=strategy: r1core.fused_linear_grpo_loss(
                h, w, targets, adv, mask, backend="triton", strategy=strategy, **kw)[0],
                note="cuBLAS + Triton row kernels" if strategy == "chunked" else "logits on chip (CCE style), 8NHV FLOPs")
    cases.extend(_peers(h, w, targets, mask, adv, old, ref, shape, dtype_name, flops, device))
    return cases


def _peers(h, w, targets, mask, adv, old, ref, shape, dtype_name, flops, device) -> list[Case]:
    out = []
    try:
        from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss
    except ImportError:
        LigerFusedLinearGRPOLoss = None
    if LigerFusedLinearGRPOLoss is not None:
        liger = LigerFusedLinearGRPOLoss(beta=0.04, use_ref_model=False, loss_type="bnpo", chunk_size=1)

        def liger_loss():
            res = liger(h, w, targets, mask, adv, ref_per_token_logps=ref, old_per_token_logps=old)
            return res[0] if isinstance(res, tuple) else res
        out.append(Case(op="fused_linear_grpo_loss fwd+bwd", shape=shape, dtype=dtype_name, backend="liger",
                        fn=_step(liger_loss, h, w), flops=flops, note="LigerFusedLinearGRPOLoss (bnpo = token_mean)"))
    try:
        from cut_cross_entropy import linear_cross_entropy
    except ImportError:
        linear_cross_entropy = None
    if linear_cross_entropy is not None and device.type == "cuda":
        out.append(Case(op="fused_linear_grpo_loss fwd+bwd", shape=shape, dtype=dtype_name, backend="cce",
                        fn=_step(lambda: linear_cross_entropy(h, w, targets), h, w), flops=flops,
                        note="Cut Cross-Entropy linear_cross_entropy: plain CE on the same shapes"))
    return out


def cases(device: torch.device, quick: bool) -> list[Case]:
    if device.type == "cuda":
        if quick:
            return _cases_for(4096, 1024, 32768, "bf16", device, with_reference=True, quick=True)
        return (_cases_for(16384, 2048, 151936, "bf16", device, with_reference=True, quick=False)
                + _cases_for(8192, 4096, 151936, "bf16", device, with_reference=True, quick=False))
    if quick:
        return _cases_for(1024, 64, 8192, "fp32", device, with_reference=True, quick=True)
    # a size where the reference fits (logits 512 MiB), then the one where it cannot (4 GiB logits)
    return (_cases_for(4096, 128, 32768, "fp32", device, with_reference=True, quick=False)
            + _cases_for(16384, 128, 65536, "fp32", device, with_reference=False, quick=False))
