"""The Mixture-of-Experts feed-forward layer: router, routed SwiGLU experts, optional shared experts.

Legend: T tokens, H hidden, I expert intermediate size, E routed experts, k experts per token.

    y = Σ_j w[t, j] · expert_{ids[t, j]}(x[t])  +  shared(x[t])
    (weights, ids) = moe_route(gate(x), k, ...)           (docs/spec.md §4; r1core.moe_route)
    routed part    = moe_experts(x, w13, w2, weights, ids) (r1core.moe_experts)

Routing replay (GRPO): the rollout engine records `layer.last_ids` for every token; the training
forward passes them back as `replay_ids`, so the same experts run (their weights are recomputed
from the current router scores, with the same normalisation, so the router still learns).
`layer.tokens_per_expert` ([E] int64, no host sync) is the load-balance statistic for logging.

Parameters and the Hugging Face checkpoint names they come from (`<p>` = `model.layers.{i}.mlp`):

    ours                              Qwen3-MoE (Mixtral-style)                 DeepSeek-V2 / V3
    gate.weight [E, H]                <p>.gate.weight                           <p>.gate.weight
    gate.e_score_correction_bias [E]  -                                         <p>.gate.e_score_correction_bias (V3)
    experts.w13[e, :I]  [I, H]        <p>.experts.{e}.gate_proj.weight          same
    experts.w13[e, I:]  [I, H]        <p>.experts.{e}.up_proj.weight            same
    experts.w2[e]       [H, I]        <p>.experts.{e}.down_proj.weight          same
    shared_experts.{gate,up,down}_proj.weight                                   <p>.shared_experts.{…}_proj.weight

transformers >= 5 already holds the experts stacked in memory, in our layout: its
`<p>.experts.gate_up_proj` [E, 2I, H] is w13 and `<p>.experts.down_proj` [E, H, I] is w2 (the Hub
checkpoints keep the per-expert names above).

`hf_to_moe_state(sd, prefix, E)` packs the per-expert HF tensors (or takes the stacked v5 ones) into
w13/w2 (and renames nothing else); `moe_state_to_hf(sd, prefix)` splits them back for `save_pretrained`.  (Mixtral names its
experts w1/w3/w2 under `block_sparse_moe`: pass `names=("w1", "w3", "w2")`.)  Qwen2-MoE's
`shared_expert_gate` (a sigmoid gate on the shared expert) is not modelled.

Numerics: the router always runs in float32 (DeepSeek-V2/V3 do; Qwen3-MoE's HF code runs the gate
in the activation dtype and only the softmax in float32: ours is the more accurate of the two, and
can choose differently from a bf16 HF router on near-ties).  Expert GEMMs run in x's dtype (bf16 in
training) with float32 accumulation in the kernels.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from r1core.ops.moe import moe_experts, moe_route


class MoEGate(nn.Linear):
    """The router: an nn.Linear without bias (weight [E, H]) whose logits are computed in float32,
    plus DeepSeek-V3's choice-only correction bias, a float32 buffer that stays float32 (and keeps
    its exact value) when the module is cast with .to(dtype) / .bfloat16()."""

    def __init__(self, hidden_size: int, num_experts: int, *, use_correction_bias: bool = False,
                 dtype=None, device=None):
        super().__init__(hidden_size, num_experts, bias=False, dtype=dtype, device=device)
        if use_correction_bias:
            # Updated by the aux-loss-free balancing rule, not by gradients: a saved buffer.
            self.register_buffer("e_score_correction_bias",
                                 torch.zeros(num_experts, dtype=torch.float32, device=device))
        else:
            self.e_score_correction_bias = None

    def _apply(self, fn, recurse=True):
        bias = self.e_score_correction_bias
        super()._apply(fn, recurse)
        if bias is not None and self._buffers["e_score_correction_bias"].dtype != torch.float32:
            self._buffers["e_score_correction_bias"] = bias.to(self._buffers["e_score_correction_bias"].device)
        return self

    def forward(self, x_TH: torch.Tensor) -> torch.Tensor:
        dt = torch.float64 if x_TH.dtype == torch.float64 else torch.float32
        return F.linear(x_TH.to(dt), self.weight.to(dt))  # float32 logits [T, E] (float64 for float64 x)


class GroupedExperts(nn.Module):
    """E SwiGLU experts stored stacked: w13 [E, 2I, H] (gate rows then up rows), w2 [E, H, I]."""

    def __init__(self, hidden_size: int, intermediate_size: int, num_experts: int, *, dtype=None, device=None):
        super().__init__()
        E, H, I = num_experts, hidden_size, intermediate_size
        self.w13 = nn.Parameter(torch.empty(E, 2 * I, H, dtype=dtype, device=device))
        self.w2 = nn.Parameter(torch.empty(E, H, I, dtype=dtype, device=device))
        nn.init.normal_(self.w13, std=H ** -0.5)
        nn.init.normal_(self.w2, std=I ** -0.5)

    def forward(self, x_TH, weights_Tk, ids_Tk):
        return moe_experts(x_TH, self.w13, self.w2, weights_Tk, ids_Tk)


class SharedExperts(nn.Module):
    """Dense SwiGLU applied to every token (DeepSeek's shared experts, fused into one MLP)."""

    def __init__(self, hidden_size: int, intermediate_size: int, *, dtype=None, device=None):
        super().__init__()
        kw = dict(bias=False, dtype=dtype, device=device)
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, **kw)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, **kw)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, **kw)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MoE(nn.Module):
    """A MoE feed-forward block with a Hugging Face compatible parameter layout (see module doc).

    forward(x [..., H], *, replay_ids=None) -> y [..., H]; sets `last_ids` [T, k] and
    `tokens_per_expert` [E] (both detached, T = x.numel() // H).
    """

    def __init__(self, hidden_size: int, intermediate_size: int, num_experts: int, top_k: int, *,
                 scoring: str = "softmax", n_group: int = 1, topk_group: int = 1,
                 use_correction_bias: bool = False, norm_topk: bool = True, routed_scale: float = 1.0,
                 n_shared_experts: int = 0, shared_intermediate_size: int | None = None,
                 dtype=None, device=None):
        super().__init__()
        if scoring not in ("softmax", "sigmoid"):
            raise ValueError(f"scoring must be 'softmax' or 'sigmoid', got {scoring!r}")
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must be in [1, num_experts={num_experts}], got {top_k}")
        if n_group < 1 or num_experts % n_group or not 1 <= topk_group <= n_group:
            raise ValueError(f"n_group={n_group} must divide num_experts={num_experts} and "
                             f"topk_group={topk_group} lie in [1, n_group]")
        if use_correction_bias and scoring != "sigmoid":
            raise ValueError("use_correction_bias is DeepSeek-V3's sigmoid routing: set scoring='sigmoid'")
        self.hidden_size, self.intermediate_size = hidden_size, intermediate_size
        self.num_experts, self.top_k = num_experts, top_k
        self.scoring, self.n_group, self.topk_group = scoring, n_group, topk_group
        self.norm_topk, self.routed_scale = norm_topk, float(routed_scale)
        self.gate = MoEGate(hidden_size, num_experts, use_correction_bias=use_correction_bias,
                            dtype=dtype, device=device)
        self.experts = GroupedExperts(hidden_size, intermediate_size, num_experts, dtype=dtype, device=device)
        shared_I = shared_intermediate_size or n_shared_experts * intermediate_size
        self.shared_experts = (SharedExperts(hidden_size, shared_I, dtype=dtype, device=device)
                               if shared_I else None)
        self.last_ids: torch.Tensor | None = None
        self.tokens_per_expert: torch.Tensor | None = None

    def route(self, x_TH: torch.Tensor, replay_ids: torch.Tensor | None = None):
        """(weights [T, k] float32, ids [T, k] int64) for tokens x_TH."""
        logits_TE = self.gate(x_TH)
        return moe_route(logits_TE, self.top_k, scoring=self.scoring, n_group=self.n_group,
                         topk_group=self.topk_group, correction_bias=self.gate.e_score_correction_bias,
                         norm_topk=self.norm_topk, routed_scale=self.routed_scale, replay_ids=replay_ids)

    def forward(self, x: torch.Tensor, *, replay_ids: torch.Tensor | None = None) -> torch.Tensor:
        shape = x.shape
        x_TH = x.reshape(-1, self.hidden_size)
        if replay_ids is not None:
            replay_ids = replay_ids.reshape(-1, self.top_k).to(x.device)
        weights_Tk, ids_Tk = self.route(x_TH, replay_ids)
        y_TH = self.experts(x_TH, weights_Tk, ids_Tk)
        if self.shared_experts is not None:
            y_TH = y_TH + self.shared_experts(x_TH)
        self.last_ids = ids_Tk.detach()
        self.tokens_per_expert = torch.bincount(self.last_ids.flatten(), minlength=self.num_experts)
        return y_TH.view(shape)

    @classmethod
    def from_hf_config(cls, config: Mapping | object, *, dtype=None, device=None) -> "MoE":
        """Build from a Hugging Face config (dict or object) of Qwen3-MoE / Mixtral /
        DeepSeek-V2 / DeepSeek-V3: reads hidden_size, moe_intermediate_size (or intermediate_size),
        num_experts / n_routed_experts / num_local_experts, num_experts_per_tok, norm_topk_prob,
        scoring_func, topk_method, n_group, topk_group, routed_scaling_factor, n_shared_experts."""
        get = config.get if isinstance(config, Mapping) else (lambda k, d=None: getattr(config, k, d))
        E = get("num_experts") or get("n_routed_experts") or get("num_local_experts")
        if not E:
            raise ValueError("config has no num_experts / n_routed_experts / num_local_experts: not a MoE model")
        if get("shared_expert_intermediate_size"):
            raise ValueError("Qwen2-MoE's gated shared expert (shared_expert_gate) is not supported")
        I = get("moe_intermediate_size") or get("intermediate_size")
        # transformers >= 5 drops scoring_func/topk_method from DeepseekV3Config: the type implies them
        v3 = get("model_type", "") in ("deepseek_v3", "kimi_k2")
        scoring = get("scoring_func", None) or ("sigmoid" if v3 else "softmax")
        topk_method = get("topk_method", None) or ("noaux_tc" if v3 else "greedy")
        grouped = topk_method in ("group_limited_greedy", "noaux_tc")
        n_group = int(get("n_group", 1) or 1) if grouped else 1
        topk_group = int(get("topk_group", 1) or 1) if grouped else 1
        # Mixtral always normalises; DeepSeek-V2/V3 and Qwen say so in norm_topk_prob.
        norm = get("norm_topk_prob", None)
        norm = True if norm is None and get("num_local_experts") else bool(norm)
        return cls(get("hidden_size"), I, E, get("num_experts_per_tok"), scoring=scoring,
                   n_group=n_group, topk_group=topk_group, use_correction_bias=topk_method == "noaux_tc",
                   norm_topk=norm, routed_scale=float(get("routed_scaling_factor", 1.0) or 1.0),
                   n_shared_experts=int(get("n_shared_experts", 0) or 0), dtype=dtype, device=device)


HF_EXPERT_NAMES = ("gate_proj", "up_proj", "down_proj")


def hf_to_moe_state(sd: Mapping[str, torch.Tensor], prefix: str, num_experts: int, *,
                    names: tuple[str, str, str] = HF_EXPERT_NAMES) -> dict[str, torch.Tensor]:
    """Our MoE state dict (keys relative to the layer) from HF tensors under `prefix`
    (e.g. "model.layers.3.mlp."): experts.{e}.{gate,up,down}_proj.weight are stacked into
    experts.w13 / experts.w2; gate.* and shared_experts.* keep their names."""
    g, u, d = names
    out: dict[str, torch.Tensor] = {}
    if f"{prefix}experts.gate_up_proj" in sd:  # transformers >= 5 stacked layout
        out["experts.w13"] = sd[f"{prefix}experts.gate_up_proj"]
        out["experts.w2"] = sd[f"{prefix}experts.down_proj"]
        for key, t in sd.items():
            if key.startswith(prefix) and not key.startswith(f"{prefix}experts."):
                out[key[len(prefix):]] = t
        return out
    w13, w2 = [], []
    for e in range(num_experts):
        base = f"{prefix}experts.{e}."
        try:
            w13.append(torch.cat([sd[f"{base}{g}.weight"], sd[f"{base}{u}.weight"]], dim=0))
            w2.append(sd[f"{base}{d}.weight"])
        except KeyError as err:
            raise ValueError(f"checkpoint lacks expert tensor {err.args[0]!r}") from None
    out["experts.w13"] = torch.stack(w13)
    out["experts.w2"] = torch.stack(w2)
    for key, t in sd.items():
        if key.startswith(prefix) and not key.startswith(f"{prefix}experts."):
            out[key[len(prefix):]] = t
    return out


def moe_state_to_hf(sd: Mapping[str, torch.Tensor], prefix: str, *,
                    names: tuple[str, str, str] = HF_EXPERT_NAMES) -> dict[str, torch.Tensor]:
    """The inverse of hf_to_moe_state: HF keys (with `prefix`) from a MoE layer's state dict."""
    g, u, d = names
    w13, w2 = sd["experts.w13"], sd["experts.w2"]
    I = w13.shape[1] // 2
    out = {f"{prefix}{k}": v for k, v in sd.items() if not k.startswith("experts.")}
    for e in range(w13.shape[0]):
        out[f"{prefix}experts.{e}.{g}.weight"] = w13[e, :I].contiguous()
        out[f"{prefix}experts.{e}.{u}.weight"] = w13[e, I:].contiguous()
        out[f"{prefix}experts.{e}.{d}.weight"] = w2[e].contiguous()
    return out
