"""Bench: r1core's own public ops under torch.compile(fullgraph=True) against the same ops eager, on the
default backend of the device (cpp on CPU, triton on GPU).  Every op is a torch.library custom op with a
fake impl and a registered autograd formula (issue 31), so the compiled graph holds the kernels as
opaque nodes plus the small tensor code around them (argument normalisation, token weights, statistics).

Prediction: the kernels dominate (the logits pass of grpo_loss moves 3·N·V·itemsize bytes; the fused
linear loss does 6·n·H·V FLOPs), so compiling can only remove Python dispatch and fuse the O(N) glue:
on CPU at these sizes, within a few percent of eager either way; the eager path's value checks run as
the same custom-op "tokens" inside the graph, so they cost the same in both.  Compilation time is not
timed (the first call warms up).
"""
from __future__ import annotations

import torch

import r1core
from r1core.bench import Case


def _grad(fn, *leaves):
    def run():
        out = fn()
        return torch.autograd.grad(out, leaves)
    return run


def cases(device: torch.device, quick: bool) -> list[Case]:
    g = torch.Generator().manual_seed(0)
    out: list[Case] = []
    B, T, V = (2, 64, 4096) if quick else (4, 512, 16384)
    N = B * T
    x = (torch.randn(B, T, V, generator=g) * 2).to(device).requires_grad_()
    t = torch.randint(0, V, (B, T), generator=g).to(device)
    m = (torch.rand(B, T, generator=g) < 0.85).to(device)
    a = torch.randn(B, generator=g).to(device)
    old = (torch.randn(B, T, generator=g) * 0.1 - 9).to(device)

    H, Vh = (64, 2048) if quick else (576, 8192)
    h = (torch.randn(B, T, H, generator=g) / 4).to(device).requires_grad_()
    w = (torch.randn(Vh, H, generator=g) / 16).to(device).requires_grad_()

    Tm, Hm, Im, E, k = (64, 64, 32, 8, 2) if quick else (2048, 576, 256, 16, 2)
    xm = torch.randn(Tm, Hm, generator=g).to(device).requires_grad_()
    w13 = (torch.randn(E, 2 * Im, Hm, generator=g) / Hm ** 0.5).to(device).requires_grad_()
    w2 = (torch.randn(E, Hm, Im, generator=g) / Im ** 0.5).to(device).requires_grad_()
    rw, ids = r1core.moe_route(torch.randn(Tm, E, generator=g).to(device), k)

    ops = {
        ("grpo_loss fwd+bwd", f"N={N} V={V}", 3 * N * V * 4, None):
            (lambda: r1core.grpo_loss(x, t, a, m, old_logp=old)[0], (x,)),
        ("logprobs", f"N={N} V={V}", N * V * 4, None):
            (lambda: r1core.logprobs(x.detach(), t), None),
        ("fused_linear_grpo_loss fwd+bwd", f"N={N} H={H} V={Vh}", None, 6 * N * H * Vh):
            (lambda: r1core.fused_linear_grpo_loss(h, w, t.clamp_max(Vh - 1), a, m, old_logp=old)[0], (h, w)),
        ("moe_experts fwd+bwd", f"T={Tm} H={Hm} I={Im} E={E} k={k}", None, 3 * 2 * Tm * k * 3 * Hm * Im):
            (lambda: r1core.moe_experts(xm, w13, w2, rw, ids).square().mean(), (xm, w13, w2)),
    }
    for (op, shape, nbytes, flops), (fn, leaves) in ops.items():
        compiled = torch.compile(fn, fullgraph=True)
        for name, f, base in (("eager", fn, True), ("torch.compile", compiled, False)):
            out.append(Case(op, shape, "fp32", name, f if leaves is None else _grad(f, *leaves), bytes=nbytes,
                            flops=flops, baseline=base,
                            note="r1core op, default backend" + (", fullgraph=True" if not base else "")))
    return out
