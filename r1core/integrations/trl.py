"""r1core inside TRL's GRPOTrainer: the fused linear GRPO loss and the group-normalised advantage.

    from r1core.integrations.trl import R1GRPOTrainer
    trainer = R1GRPOTrainer(model=..., reward_funcs=..., args=GRPOConfig(...), train_dataset=...,
                            r1core_backend=None, r1core_chunk_size=None)
    trainer.train()

R1GRPOTrainer is a GRPOTrainer whose `_compute_loss` runs the policy backbone to its last hidden
states and calls r1core.fused_linear_grpo_loss on them with the lm_head's weight and bias, so the
[B, T, V] logits (and TRL's separate log-prob pass) never exist; and whose advantages come from
r1core.grpo_advantages.  Everything else (generation, rewards, reference log-probs, logging,
accumulation, distribution through accelerate) is TRL's own.

Mapping (GRPOConfig -> r1core), chosen so the loss and its gradients equal TRL's own:
    loss_type "grpo"    -> loss_agg "seq_mean_token_mean", times n_nonempty/B (TRL averages over all B
                           sequences, an empty one counting 0; r1core over sequences with >= 1 token)
    loss_type "bnpo"    -> "token_mean"
    loss_type "dr_grpo" -> "seq_mean_token_sum_norm" with max_len = max_completion_length
    loss_type "dapo"    -> "token_mean", times n_tokens / normalizer (TRL divides the token sum by the
                           active-token count of the whole accumulated generation batch)
    grpo/bnpo/dr_grpo are divided by the gradient-accumulation steps in training, as TRL does.
    epsilon -> eps_low, epsilon_high (default epsilon) -> eps_high, beta -> beta (ref_logp from TRL's
    reference pass), temperature -> temperature (divided by the model's logit scale, if any),
    scale_rewards "group"/"batch"/"none" -> grpo_advantages(scale=..., eps=1e-4) (TRL's epsilon).
Not mapped (ValueError at construction, so nothing silently changes meaning): loss types cispo, sapo,
luspo, vespo; importance_sampling_level="sequence"; delta (two-sided clipping); top_entropy_quantile
< 1; entropy bonus (entropy_coef / use_adaptive_entropy); vLLM importance-sampling correction;
off_policy_mask_threshold; use_bias_correction_kl=True when beta != 0 (TRL's default for that flag:
pass use_bias_correction_kl=False); the MoE router aux loss; final-logit soft-capping;
multimodal inputs.  The `entropy` and `clip_ratio/low_min|high_max` metrics are not logged (the
fused loss does not compute entropies); `kl` and `clip_ratio/{low,high,region}_mean` are.
Advantages fall back to TRL's own for a batch in which some completion is unscorable (a reward
function returned None: NaN rewards, which TRL handles with nan-aware statistics), and for
multi_objective_aggregation="normalize_then_sum".
"""
from __future__ import annotations

import functools
import types

import torch

try:
    from trl import GRPOTrainer
except ImportError as e:  # pragma: no cover - exercised only without trl
    raise ImportError("r1core.integrations.trl needs TRL: pip install trl (with your torch pinned)") from e

import r1core

LOSS_AGG = {"grpo": "seq_mean_token_mean", "bnpo": "token_mean", "dr_grpo": "seq_mean_token_sum_norm",
            "dapo": "token_mean"}
TRL_ADV_EPS = 1e-4  # TRL divides by (std + 1e-4)
_MULTIMODAL_KEYS = ("pixel_values", "image_grid_thw", "pixel_attention_mask", "spatial_shapes", "image_sizes",
                    "token_type_ids", "mm_token_type_ids", "image_position_ids", "num_images")


def unsupported_options(trainer) -> list[str]:
    """The GRPOConfig settings (and model features) this integration cannot reproduce exactly."""
    a = trainer.args
    bad = []
    if a.loss_type not in LOSS_AGG:
        bad.append(f"loss_type={a.loss_type!r} (supported: {', '.join(LOSS_AGG)})")
    if a.importance_sampling_level != "token":
        bad.append(f"importance_sampling_level={a.importance_sampling_level!r}")
    if a.delta is not None:
        bad.append(f"delta={a.delta} (two-sided clipping)")
    if a.top_entropy_quantile < 1.0:
        bad.append(f"top_entropy_quantile={a.top_entropy_quantile}")
    if getattr(trainer, "_entropy_bonus_enabled", False):
        bad.append("entropy bonus (entropy_coef / use_adaptive_entropy)")
    if a.use_vllm and a.vllm_importance_sampling_correction:
        bad.append("vllm_importance_sampling_correction=True")
    if a.off_policy_mask_threshold is not None:
        bad.append(f"off_policy_mask_threshold={a.off_policy_mask_threshold}")
    if a.beta != 0.0 and a.use_bias_correction_kl:
        bad.append("use_bias_correction_kl=True with beta != 0 (TRL's default; r1core's k3 KL is SPEC §2's, "
                   "without the ratio factor: set use_bias_correction_kl=False)")
    if getattr(trainer, "aux_loss_enabled", False):
        bad.append("MoE router aux loss (router_aux_loss_coef)")
    text_cfg = trainer.model.config.get_text_config()
    if getattr(text_cfg, "final_logit_softcapping", None) is not None:
        bad.append("final_logit_softcapping (model config)")
    return bad


def logit_scale(config) -> float:
    """The factor a model multiplies its logits by before the softmax (as TRL reads it); 1 for most."""
    c = config.get_text_config()
    for name in ("logit_scale", "output_multiplier", "lm_head_multiplier"):
        if getattr(c, name, None) is not None:
            return float(getattr(c, name))
    if getattr(c, "logits_scaling", None) is not None:
        return float(c.logits_scaling) if c.model_type == "hyperclovax" else 1.0 / float(c.logits_scaling)
    return 1.0


def loss_kwargs(trainer) -> dict:
    """GRPOConfig -> the keyword arguments of r1core.fused_linear_grpo_loss (see the module docstring)."""
    a = trainer.args
    return dict(loss_agg=LOSS_AGG[a.loss_type], eps_low=trainer.epsilon_low, eps_high=trainer.epsilon_high,
                beta=float(a.beta), temperature=trainer.temperature / logit_scale(trainer.model.config),
                max_len=a.max_completion_length if a.loss_type == "dr_grpo" else None)


def trl_scale(trainer, mask_BT: torch.Tensor, inputs: dict, mode: str) -> torch.Tensor | float:
    """The factor turning r1core's aggregated loss into the number TRL's _compute_loss returns."""
    lt = trainer.loss_type
    if lt == "dapo":
        normalizer = inputs["num_items_in_batch"].clamp(min=1.0) / trainer.accelerator.num_processes
        if mode == "train":
            normalizer = normalizer * trainer.current_gradient_accumulation_steps / trainer.args.steps_per_generation
        return mask_BT.sum() / normalizer
    accum = trainer.current_gradient_accumulation_steps if mode == "train" else 1.0
    if lt == "grpo":
        nonempty = (mask_BT.sum(-1) > 0).sum()
        return nonempty / (mask_BT.shape[0] * accum)
    return 1.0 / accum


def trl_advantages(rewards: torch.Tensor, num_generations: int, scale_rewards: str) -> torch.Tensor:
    """TRL's advantage (reward minus group mean, over std + 1e-4 per scale_rewards) by r1core."""
    return r1core.grpo_advantages(rewards, num_generations, scale=scale_rewards, baseline="mean", eps=TRL_ADV_EPS)


def add_hidden_states_forward(model) -> None:
    """Let `model(..., r1core_hidden_states=True)` return the backbone's last hidden states [B, L, H]
    (no lm_head, no logits); any other call goes to the model's previous forward.  Called through the
    (possibly accelerate/DDP-wrapped) model, so the wrappers' hooks still run."""
    previous = model.forward
    if getattr(previous, "_r1core_hidden_states", False):
        return

    @functools.wraps(type(model).forward)
    def forward(self, *args, r1core_hidden_states=False, **kwargs):
        if not r1core_hidden_states:
            return previous(*args, **kwargs)
        kwargs["use_cache"] = False
        return self.base_model(*args, **kwargs).last_hidden_state

    forward._r1core_hidden_states = True
    model.forward = types.MethodType(forward, model)


class R1GRPOTrainer(GRPOTrainer):
    """TRL's GRPOTrainer with r1core's fused linear GRPO loss and group-normalised advantages.

    `processing_class` may also be an r1core tokenizer (r1core.load_tokenizer): it is passed to TRL as
    its transformers export (Tokenizer.to_transformers()).

    Extra keyword arguments: r1core_backend (the `backend=` of the r1core ops, default automatic),
    r1core_chunk_size (tokens per chunk, default from the shapes), r1core_advantages (default True:
    advantages from r1core.grpo_advantages; False keeps TRL's)."""

    def __init__(self, *args, r1core_backend: str | None = None, r1core_chunk_size: int | None = None,
                 r1core_advantages: bool = True, **kwargs):
        # r1core's own tokenizer (r1core.load_tokenizer) is accepted as processing_class: TRL takes only
        # transformers tokenizers, so it goes in as its transformers export
        if hasattr(kwargs.get("processing_class"), "to_transformers"):
            kwargs["processing_class"] = kwargs["processing_class"].to_transformers()
        super().__init__(*args, **kwargs)
        bad = unsupported_options(self)
        if bad:
            raise ValueError("R1GRPOTrainer cannot reproduce these GRPOConfig settings with r1core's fused loss: "
                             + "; ".join(bad) + ". Use trl.GRPOTrainer for them.")
        self.r1core_backend = r1core_backend
        self.r1core_chunk_size = r1core_chunk_size
        self.r1core_advantages = r1core_advantages
        self._r1core_kwargs = loss_kwargs(self)
        self._r1core_rewards = None
        add_hidden_states_forward(self._policy_module())

    def _policy_module(self):
        from accelerate.utils import is_peft_model  # noqa: PLC0415 - accelerate comes with trl
        return self.model.get_base_model() if is_peft_model(self.model) else self.model

    # --- advantages ------------------------------------------------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._r1core_rewards = rewards_per_func
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        rewards_per_func, self._r1core_rewards = self._r1core_rewards, None
        if (not self.r1core_advantages or rewards_per_func is None
                or self.multi_objective_aggregation != "sum_then_normalize"
                or torch.isnan(rewards_per_func).all(dim=1).any()):
            return out
        mode = "train" if self.model.training else "eval"
        G = self.num_generations if mode == "train" else self.num_generations_eval
        if G < 2:
            return out
        rewards = (rewards_per_func * self.reward_weights.to(rewards_per_func.device).unsqueeze(0)).nansum(dim=1)
        adv = trl_advantages(rewards, G, self.scale_rewards)
        n = out["advantages"].shape[0]
        i = self.accelerator.process_index
        out["advantages"] = adv[i * n:(i + 1) * n].to(out["advantages"].device)
        return out

    # --- loss --------------------------------------------------------------------------------------
    def _compute_loss(self, model, inputs):
        bad = [k for k in _MULTIMODAL_KEYS if inputs.get(k) is not None]
        if bad:
            raise ValueError(f"R1GRPOTrainer supports text-only models; got inputs {bad}")
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
        C = completion_ids.size(1)
        mask = completion_mask if "tool_mask" not in inputs else completion_mask * inputs["tool_mask"]

        lm_head = self._policy_module().get_output_embeddings()
        weight, bias = lm_head.weight, lm_head.bias
        kw = self._r1core_kwargs
        ref = inputs.get("ref_per_token_logps") if kw["beta"] != 0.0 else None
        with self.accelerator.autocast():
            hidden = model(input_ids=input_ids, attention_mask=attention_mask, r1core_hidden_states=True)
            hidden = hidden[:, -C - 1:-1]                  # position t predicts completion token t
            # the lm_head's precision as TRL runs it: the autocast dtype (bf16=True), or float32 with
            # cast_lm_head_to_fp32, else the weight's own dtype
            dev = weight.device.type
            if not self.args.cast_lm_head_to_fp32 and torch.is_autocast_enabled(dev):
                dt = torch.get_autocast_dtype(dev)
            else:
                dt = weight.dtype
            hidden = hidden.to(weight.device, dt)
            weight, bias = weight.to(dt), None if bias is None else bias.to(dt)
            loss, stats = r1core.fused_linear_grpo_loss(
                hidden, weight, completion_ids, inputs["advantages"], mask, bias=bias,
                old_logp=inputs.get("old_per_token_logps"), ref_logp=ref, chunk_size=self.r1core_chunk_size,
                backend=self.r1core_backend, **kw)
        mode = "train" if self.model.training else "eval"
        loss = loss * trl_scale(self, mask, inputs, mode)
        self._log_r1core_stats(stats, mask, mode)
        return loss

    def _log_r1core_stats(self, stats, mask, mode):
        count = mask.sum().float()

        def global_mean(local_mean):
            totals = self.accelerator.reduce(torch.stack([local_mean * count, count]), reduction="sum")
            return (totals[0] / totals[1].clamp(min=1.0)).item()

        m = self._metrics[mode]
        if self._r1core_kwargs["beta"] != 0.0:
            m["kl"].append(global_mean(stats.kl_mean))
        m["clip_ratio/low_mean"].append(global_mean(stats.clip_low_frac))
        m["clip_ratio/high_mean"].append(global_mean(stats.clip_high_frac))
        m["clip_ratio/region_mean"].append(global_mean(stats.clip_low_frac + stats.clip_high_frac))
