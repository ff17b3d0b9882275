"""Bench: the fused GRPO loss on logits (r1core.grpo_loss, forward + backward) and r1core.logprobs,
against the eager PyTorch reference (baseline), torch.compile of it (GPU) and Liger-Kernel's Triton
GRPO loss / fused_selective_log_softmax when `liger_kernel` is importable.

Bytes that must move (first principles, s = bytes per logit): forward + backward reads the logits
twice and writes the gradient once, 3·N·V·s; logprobs reads them once, N·V·s.  Per-token traffic is
O(N) and ignored.  GB/s below = those bytes / median time, for every backend alike.

Predictions.  H100 (~3.0 TB/s achievable copy bandwidth), N = 16384, V = 151936, bf16: 3·2.49e9·2 B
= 14.9 GB -> ~5.0 ms at copy speed (the target is >= 80 %, i.e. <= 6.2 ms); the eager reference
moves ~8 float32 N·V tensors (log_softmax out, its grad, the scatter of the gather's grad, ...)
~80 GB -> ~30 ms; Liger moves the same 14.9 GB as we do.  CPU (this machine: 2 shared cores),
N = 4096, V = 32768, fp32: 1.6 GB at a few GB/s plus one exp per logit per pass; the reference makes
~6 fp32 passes and allocates ~3x the logits, the C++ path 1x (0x with inplace_backward).
"""
from __future__ import annotations

import torch

import r1core
from r1core.bench import DTYPES, Case
from r1core.ref.grpo_loss import grpo_loss_ref, logprobs_ref


def _inputs(N: int, V: int, dtype: torch.dtype, device: torch.device, T: int = 1024):
    """logits [B, T + 1, V] (the op sees the strided view [:, :-1], as in a trainer), targets, mask
    (~15 % padding), per-sequence advantages, old/ref log-probs near the true ones."""
    g = torch.Generator().manual_seed(0)
    T = min(T, N)
    B = N // T
    full = (torch.randn(B, T + 1, V, generator=g) * 2).to(dtype).to(device)
    targets = torch.randint(0, V, (B, T), generator=g).to(device)
    lens = torch.randint(int(0.7 * T), T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None, :] < lens[:, None]).to(device)
    adv = torch.randn(B, generator=g).to(device)
    old = (torch.randn(B, T, generator=g) * 0.1 - 11).to(device)
    ref = (torch.randn(B, T, generator=g) * 0.1 - 11).to(device)
    return full, targets, mask, adv, old, ref


def _available(backend: str) -> bool:
    from r1core import _backend
    if backend == "cpp":
        return _backend.missing("cpp", "cpu") is None and hasattr(_backend.ext(), "grpo_loss_fwd_cpu")
    return _backend.missing(backend, "cuda") is None


def _grad_step(loss_fn, x):
    def fn():
        loss = loss_fn()
        (g,) = torch.autograd.grad(loss, x)
        return g
    return fn


def _loss_cases(N, V, dtype_name, device, quick) -> list[Case]:
    dtype = DTYPES[dtype_name]
    full, targets, mask, adv, old, ref = _inputs(N, V, dtype, device)
    x = full[:, :-1].requires_grad_()  # a strided leaf view: the gradient is the op's own dlogits
    kw = dict(old_logp=old, ref_logp=ref, beta=0.04, temperature=1.0, loss_agg="seq_mean_token_mean")
    shape, op = f"N={N} V={V}", "grpo_loss fwd+bwd"
    nbytes = 3 * N * V * dtype.itemsize
    logits_mib = N * V * dtype.itemsize / 2**20
    cases = [Case(op, shape, dtype_name, "torch", _grad_step(lambda: grpo_loss_ref(x, targets, adv, mask, **kw)[0], x),
                  bytes=nbytes, baseline=True, note=f"eager reference; logits {logits_mib:.0f} MiB")]
    if device.type == "cuda":
        compiled = torch.compile(grpo_loss_ref)
        cases.append(Case(op, shape, dtype_name, "torch.compile",
                          _grad_step(lambda: compiled(x, targets, adv, mask, **kw)[0], x), bytes=nbytes))
    kernel = "triton" if device.type == "cuda" else "cpp"
    if _available(kernel):
        cases.append(Case(op, shape, dtype_name, kernel, _grad_step(
            lambda: r1core.grpo_loss(x, targets, adv, mask, backend=kernel, **kw)[0], x), bytes=nbytes,
            note="dlogits in a new buffer"))
        # In place: backward overwrites the logits with dlogits; every later call then runs on those
        # numbers (same cost).  A copy of its own, so the other cases keep their logits.
        xi = full.clone()[:, :-1].requires_grad_()
        cases.append(Case(op, shape, dtype_name, f"{kernel}-inplace", _grad_step(
            lambda: r1core.grpo_loss(xi, targets, adv, mask, backend=kernel, inplace_backward=True, **kw)[0], xi),
            bytes=nbytes, note="inplace_backward=True"))
    if device.type == "cuda":
        cases += _liger_loss_case(full, targets, mask, adv, old, ref, shape, dtype_name, nbytes)
    return cases


def _liger_loss_case(full, targets, mask, adv, old, ref, shape, dtype_name, nbytes) -> list[Case]:
    try:
        from liger_kernel.transformers.grpo_loss import triton_grpo_loss
    except ImportError:
        return []

    full = full.detach().requires_grad_()

    def loss():  # Liger's "grpo" reduction is seq_mean_token_mean; it takes the [B, T + 1, V] logits
        return triton_grpo_loss(full, old, ref, targets, adv, mask.int(), temperature=1.0, beta=0.04,
                                eps_low=0.2, eps_high=0.2, inplace=False)[0]
    return [Case("grpo_loss fwd+bwd", shape, dtype_name, "liger", _grad_step(loss, full), bytes=nbytes,
                 note="liger_kernel triton_grpo_loss, inplace=False")]


def _logprobs_cases(N, V, dtype_name, device) -> list[Case]:
    dtype = DTYPES[dtype_name]
    full, targets, *_ = _inputs(N, V, dtype, device)
    x = full[:, :-1]
    shape, op, nbytes = f"N={N} V={V}", "logprobs", N * V * dtype.itemsize
    cases = [Case(op, shape, dtype_name, "torch", lambda: logprobs_ref(x, targets), bytes=nbytes, baseline=True)]
    if device.type == "cuda":
        compiled = torch.compile(logprobs_ref)
        cases.append(Case(op, shape, dtype_name, "torch.compile", lambda: compiled(x, targets), bytes=nbytes))
    kernel = "triton" if device.type == "cuda" else "cpp"
    if _available(kernel):
        cases.append(Case(op, shape, dtype_name, kernel, lambda: r1core.logprobs(x, targets, backend=kernel),
                          bytes=nbytes))
    if device.type == "cuda":
        try:
            from liger_kernel.ops.grpo_loss import fused_selective_log_softmax
        except ImportError:
            pass
        else:  # it takes the contiguous [B, T + 1, V] logits and the [B, T] ids
            cases.append(Case(op, shape, dtype_name, "liger", lambda: fused_selective_log_softmax(full, targets, 1.0),
                              bytes=nbytes, note="liger_kernel fused_selective_log_softmax"))
    return cases


# the GRPO-family objectives (docs/objectives.md) beside the plain clip objective; each runs the general path
OBJECTIVES = {
    "gspo": dict(importance_sampling_level="sequence", eps_low=3e-4, eps_high=4e-4),
    "cispo": dict(policy="cispo", eps_high=5.0),
    "sapo": dict(policy="sapo"),
    "vespo": dict(policy="vespo"),
    "bias_kl+delta": dict(use_bias_correction_kl=True, delta=1.5),
    "rollout_is": dict(rollout_is="sequence_mask"),
    "entropy_bonus": dict(entropy_coef=0.01),
}


def _objective_cases(N, V, dtype_name, device) -> list[Case]:
    """Single pass (plain clip, baseline) vs the general path: the same objective through logp_entropy +
    r1core.ops.grpo.objective.objective (the gap), then every other objective; and the objective stage alone
    ([B, T] work: its share of the fused op is its time over the single pass's)."""
    from r1core.ops.grpo.loss import logp_entropy
    from r1core.ops.grpo.objective import objective, objective_grads

    kernel = "triton" if device.type == "cuda" else "cpp"
    if not _available(kernel):
        return []
    dtype = DTYPES[dtype_name]
    full, targets, mask, adv, old, ref = _inputs(N, V, dtype, device)
    x = full[:, :-1].requires_grad_()
    base = dict(old_logp=old, ref_logp=ref, beta=0.04, loss_agg="seq_mean_token_mean")
    roll = old + 0.01
    shape, op, nbytes = f"N={N} V={V}", "grpo_loss objectives fwd+bwd", 3 * N * V * dtype.itemsize
    cases = [Case(op, shape, dtype_name, f"{kernel}:grpo", _grad_step(
        lambda: r1core.grpo_loss(x, targets, adv, mask, backend=kernel, **base)[0], x), bytes=nbytes, baseline=True,
        note="single pass (per-token math in the row kernels)")]

    def general_grpo():
        lp, _ = logp_entropy(x, targets, mask, backend=kernel)
        return objective(lp, adv, mask, **base).loss
    cases.append(Case(op, shape, dtype_name, f"{kernel}:grpo-general", _grad_step(general_grpo, x), bytes=nbytes,
                      note="the same objective on the general path"))
    for name, opts in OBJECTIVES.items():
        extra = dict(rollout_logp=roll) if "rollout_is" in opts else {}
        cases.append(Case(op, shape, dtype_name, f"{kernel}:{name}", _grad_step(
            lambda o=opts, e=extra: r1core.grpo_loss(x, targets, adv, mask, backend=kernel, **base, **o, **e)[0], x),
            bytes=nbytes, note="general path"))
    lp = torch.randn(targets.shape, device=device) * 0.1 - 11
    H = torch.rand(targets.shape, device=device) * 3
    for name, opts in {"grpo": {}, **OBJECTIVES}.items():
        extra = dict(rollout_logp=roll) if "rollout_is" in opts else {}
        cases.append(Case("objective stage [B,T] fwd+bwd", f"N={N}", "fp32", f"torch:{name}",
                          lambda o=opts, e=extra: objective_grads(lp, adv, mask, entropy=H, **base, **o, **e),
                          note="loss, dl/dlogp, dl/dH on [B, T] (no V)"))
    return cases


def cases(device: torch.device, quick: bool) -> list[Case]:
    if device.type == "cuda":
        if quick:
            return (_loss_cases(2048, 32768, "bf16", device, quick) + _logprobs_cases(2048, 32768, "bf16", device)
                    + _objective_cases(2048, 32768, "bf16", device))
        return (_loss_cases(16384, 151936, "bf16", device, quick) + _logprobs_cases(16384, 151936, "bf16", device)
                + _objective_cases(16384, 151936, "bf16", device))
    if quick:
        return (_loss_cases(256, 4096, "fp32", device, quick) + _logprobs_cases(256, 4096, "fp32", device)
                + _objective_cases(256, 4096, "fp32", device))
    return (_loss_cases(4096, 32768, "fp32", device, quick)
            + _loss_cases(4096, 32768, "bf16", device, quick)
            + _logprobs_cases(4096, 32768, "fp32", device)
            + _objective_cases(4096, 32768, "fp32", device))
