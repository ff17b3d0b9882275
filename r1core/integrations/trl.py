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

Mapping (GRPOConfig -> r1core), chosen so the loss and its gradients equal TRL's own
(docs/objectives.md has the table; r1core.ops.grpo.objective the maths):
    loss_type "grpo"/"sapo" -> loss_agg "seq_mean_token_mean" (policy "clip"/"sapo"), times n_nonempty/B
                           (TRL averages over all B sequences, an empty one counting 0)
    loss_type "bnpo"    -> "token_mean"
    loss_type "dr_grpo" -> "seq_mean_token_sum_norm" with max_len = max_completion_length
    loss_type "dapo"/"cispo"/"vespo" -> "token_mean" (policy "clip"/"cispo"/"vespo"), times
                           n_tokens / normalizer (TRL's active-token count of the accumulated batch)
    loss_type "luspo"   -> "seq_mean_token_sum"
    grpo/sapo/bnpo/dr_grpo/luspo are divided by the gradient-accumulation steps in training, as TRL does.
    epsilon -> eps_low, epsilon_high (default epsilon) -> eps_high, beta -> beta (ref_logp from TRL's
    reference pass), use_bias_correction_kl, importance_sampling_level, delta, sapo_temperature_*,
    vespo_*, off_policy_mask_threshold (rollout_logp = TRL's sampling_per_token_logps when present),
    top_entropy_quantile (single process) -> the same names; temperature -> temperature (divided by the
    model's logit scale, if any); vllm_importance_sampling_correction (with use_vllm) -> rollout_is = the
    mode with rollout_is_weight = TRL's importance_sampling_ratio (already truncated/masked by TRL);
    entropy_coef (static or TRL's adaptive controller, run here on r1core's entropies) -> the entropy
    bonus, divided only by the accumulation steps; mask_truncated_completions is applied by TRL upstream
    (completion_mask); scale_rewards "group"/"batch"/"none" -> grpo_advantages(scale=..., eps=1e-4).
    Logged like TRL: entropy, kl, clip_ratio/{low,high,region}_mean (clip losses), cispo_clip_ratio, and
    policy_loss whenever the entropy bonus is enabled.
Not mapped (ValueError at construction, so nothing silently changes meaning): top_entropy_quantile < 1
on more than one process (TRL takes the quantile over all ranks' tokens, r1core over the local ones);
vespo with a sequence-level vLLM importance-sampling mode; the MoE router aux loss; final-logit
soft-capping; multimodal inputs.  Not logged: clip_ratio/low_min|high_max, vespo/phi_seq_mean.
Advantages fall back to TRL's own for a batch in which some completion is unscorable (a reward
function returned None: NaN rewards, which TRL handles with nan-aware statistics), and for
multi_objective_aggregation="normalize_then_sum".
"""
from __future__ import annotations

import functools
import types

import torch

from r1core._deps import require

# one clear line (r1core._deps.MissingDependency) when TRL, transformers or what they import is missing or broken
GRPOTrainer = require("trl", "r1core.integrations.trl", attr="GRPOTrainer")

import r1core

from r1core.ops.grpo.options import DEFAULTS as _OBJECTIVE_DEFAULTS  # noqa: E402
from r1core.ops.grpo.options import TRL_LOSS_TYPES  # noqa: E402  (the one home of the mapping)

LOSS_AGG = {lt: agg for lt, (_, agg) in TRL_LOSS_TYPES.items()}
POLICY = {lt: pol for lt, (pol, _) in TRL_LOSS_TYPES.items() if pol != "clip"}   # every other loss type: "clip"
_TOKEN_GLOBAL = ("dapo", "cispo", "vespo")                     # divided by TRL's global token count
TRL_ADV_EPS = 1e-4  # TRL divides by (std + 1e-4)
_MULTIMODAL_KEYS = ("pixel_values", "image_grid_thw", "pixel_attention_mask", "spatial_shapes", "image_sizes",
                    "token_type_ids", "mm_token_type_ids", "image_position_ids", "num_images")


def unsupported_options(trainer) -> list[str]:
    """The GRPOConfig settings (and model features) this integration cannot reproduce exactly."""
    a = trainer.args
    bad = []
    if a.loss_type not in LOSS_AGG:
        bad.append(f"loss_type={a.loss_type!r} (supported: {', '.join(LOSS_AGG)})")
    if a.top_entropy_quantile < 1.0 and trainer.accelerator.num_processes > 1:
        bad.append(f"top_entropy_quantile={a.top_entropy_quantile} on {trainer.accelerator.num_processes} "
                   "processes (TRL's quantile spans every rank's tokens, r1core's the local ones)")
    if (a.loss_type == "vespo" and trainer.use_vllm and a.vllm_importance_sampling_correction
            and not a.vllm_importance_sampling_mode.startswith("token")):
        bad.append(f"loss_type='vespo' with vllm_importance_sampling_mode={a.vllm_importance_sampling_mode!r}")
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
    kw = dict(loss_agg=LOSS_AGG[a.loss_type], eps_low=trainer.epsilon_low, eps_high=trainer.epsilon_high,
              beta=float(a.beta), temperature=trainer.temperature / logit_scale(trainer.model.config),
              max_len=a.max_completion_length if a.loss_type == "dr_grpo" else None)
    opt = dict(policy=POLICY.get(a.loss_type, "clip"), importance_sampling_level=a.importance_sampling_level,
               use_bias_correction_kl=bool(a.use_bias_correction_kl),
               off_policy_mask_threshold=a.off_policy_mask_threshold, top_entropy_quantile=float(a.top_entropy_quantile))
    if a.delta is not None and opt["policy"] == "clip":  # TRL caps the ratio only for the clip losses
        opt["delta"] = float(a.delta)
    if a.loss_type == "sapo":
        opt.update(sapo_temperature_pos=float(a.sapo_temperature_pos), sapo_temperature_neg=float(a.sapo_temperature_neg))
    if a.loss_type == "vespo":
        opt.update(vespo_k_pos=float(a.vespo_k_pos), vespo_lambda_pos=float(a.vespo_lambda_pos),
                   vespo_k_neg=float(a.vespo_k_neg), vespo_lambda_neg=float(a.vespo_lambda_neg))
    if trainer.use_vllm and a.vllm_importance_sampling_correction:
        opt["rollout_is"] = a.vllm_importance_sampling_mode
    # drop what is at r1core's default, so the plain clip objective keeps the single-pass loss
    kw.update({k: v for k, v in opt.items() if v != _OBJECTIVE_DEFAULTS[k]})
    return kw


def trl_scale(trainer, mask_BT: torch.Tensor, inputs: dict, mode: str) -> torch.Tensor | float:
    """The factor turning r1core's aggregated loss into the number TRL's _compute_loss returns."""
    lt = trainer.loss_type
    if lt in _TOKEN_GLOBAL:
        normalizer = inputs["num_items_in_batch"].clamp(min=1.0) / trainer.accelerator.num_processes
        if mode == "train":
            normalizer = normalizer * trainer.current_gradient_accumulation_steps / trainer.args.steps_per_generation
        return mask_BT.sum() / normalizer
    accum = trainer.current_gradient_accumulation_steps if mode == "train" else 1.0
    if lt in ("grpo", "sapo"):
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
    advantages from r1core.grpo_advantages; False keeps TRL's), r1core_log_entropy (default True: log
    `entropy` like TRL; it costs the fused linear op's general path, False skips it)."""

    def __init__(self, *args, r1core_backend: str | None = None, r1core_chunk_size: int | None = None,
                 r1core_advantages: bool = True, r1core_log_entropy: bool = True, **kwargs):
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
        # TRL logs the mean entropy every step; r1core computes it in the loss pass (the general path of
        # the fused linear op: one more chunk loop).  False keeps the single-pass loss where it applies.
        self.r1core_log_entropy = r1core_log_entropy
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
            mode = "train" if self.model.training else "eval"
            scale = trl_scale(self, mask, inputs, mode)
            extra = {}
            if "rollout_is" in kw:
                extra["rollout_is_weight"] = inputs["importance_sampling_ratio"]
            if kw.get("off_policy_mask_threshold") is not None and inputs.get("sampling_per_token_logps") is not None:
                extra["rollout_logp"] = inputs["sampling_per_token_logps"]
            coef = self._r1core_entropy_coef()
            if coef != 0.0:
                # TRL: loss = scale·policy - coef·bonus / accum; r1core: loss = policy - entropy_coef·bonus
                accum = self.current_gradient_accumulation_steps if mode == "train" else 1.0
                s = float(scale)
                extra["entropy_coef"] = coef / (accum * s) if s != 0 else 0.0
            loss, stats = r1core.fused_linear_grpo_loss(
                hidden, weight, completion_ids, inputs["advantages"], mask, bias=bias,
                old_logp=inputs.get("old_per_token_logps"), ref_logp=ref, chunk_size=self.r1core_chunk_size,
                backend=self.r1core_backend, entropy=self.r1core_log_entropy or coef != 0.0 or self.use_adaptive_entropy,
                **kw, **extra)
        loss = loss * scale
        if getattr(self, "_entropy_bonus_enabled", False):
            self._log_policy_loss(loss, stats, mask, coef, mode)
        self._log_r1core_stats(stats, mask, mode)
        self._r1core_entropy_controller(stats, mask, mode)
        return loss

    # --- entropy bonus (TRL's semantics: a static coef, or its adaptive controller) ------------------
    def _r1core_entropy_coef(self) -> float:
        if not getattr(self, "_entropy_bonus_enabled", False):
            return 0.0
        if self.use_adaptive_entropy:
            return self.entropy_coef if self._last_world_entropy <= self.args.entropy_target else 0.0
        return float(self.entropy_coef)

    def _r1core_entropy_controller(self, stats, mask, mode):
        """TRL's adaptive entropy coefficient, fed with r1core's per-token entropies (same window logic)."""
        if not getattr(self, "_entropy_bonus_enabled", False):
            return
        if self.use_adaptive_entropy and mode == "train":
            m = mask.to(stats.entropy.dtype)
            w = torch.stack([(stats.entropy * m).sum(), m.sum()]).detach()
            self._entropy_window_stats = w if self._entropy_window_stats is None else self._entropy_window_stats + w
            if self.accelerator.sync_gradients:
                tot = self.accelerator.reduce(self._entropy_window_stats, reduction="sum")
                world = (tot[0] / tot[1].clamp(min=1.0)).item()
                a = self.args
                if world <= a.entropy_target:
                    self.entropy_coef = min(self.entropy_coef + a.entropy_coef_delta, a.entropy_coef_max)
                else:
                    self.entropy_coef = max(self.entropy_coef - a.entropy_coef_delta, a.entropy_coef_min)
                self._last_world_entropy = world
                self._entropy_window_stats = None
        if mode == "train" and self.accelerator.sync_gradients:
            self._metrics[mode]["entropy_coef"].append(self.entropy_coef)

    def _log_policy_loss(self, loss, stats, mask, coef: float, mode: str):
        """TRL's `policy_loss` metric (logged whenever the entropy bonus is enabled): the loss before the
        bonus and, except for its token-global loss types, before the accumulation divide.  r1core's loss
        already holds `- coef·bonus/accum`, so the bonus (over the same effective mask) is added back."""
        accum = self.current_gradient_accumulation_steps if mode == "train" else 1.0
        with torch.no_grad():
            policy = loss.detach()
            if coef != 0.0:
                eff = mask.to(stats.entropy.dtype)
                if self.top_entropy_quantile < 1.0:
                    eff = eff * self.get_high_entropy_mask(stats.entropy, mask, 1 - self.top_entropy_quantile)
                policy = policy + coef * (stats.entropy * eff).sum() / eff.sum().clamp(min=1.0) / accum
            if self.loss_type not in _TOKEN_GLOBAL:
                policy = policy * accum
        self._metrics[mode]["policy_loss"].append(self.accelerator.gather(policy).nanmean().item())

    def _log_r1core_stats(self, stats, mask, mode):
        count = mask.sum().float()

        def global_mean(local_mean):
            totals = self.accelerator.reduce(torch.stack([local_mean * count, count]), reduction="sum")
            return (totals[0] / totals[1].clamp(min=1.0)).item()

        m = self._metrics[mode]
        if self._r1core_kwargs["beta"] != 0.0:
            m["kl"].append(global_mean(stats.kl_mean))
        if stats.entropy is not None:
            ent_mean = (stats.entropy * mask).sum() / count.clamp(min=1.0)
            m["entropy"].append(global_mean(ent_mean))
        if self.loss_type == "cispo":
            m["cispo_clip_ratio"].append(global_mean(stats.clip_high_frac))
        elif self.loss_type not in ("sapo", "vespo"):
            m["clip_ratio/low_mean"].append(global_mean(stats.clip_low_frac))
            m["clip_ratio/high_mean"].append(global_mean(stats.clip_high_frac))
            m["clip_ratio/region_mean"].append(global_mean(stats.clip_low_frac + stats.clip_high_frac))
