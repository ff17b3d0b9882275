"""GRPO, the RL algorithm of DeepSeekMath / DeepSeek-R1, read top to bottom in `GRPOTrainer.step`.

Legend: P prompts per step (global), G samples per prompt, N = P·G/world rows on this rank,
T positions, H hidden, V vocabulary.

One step:
  1. rollout    sample G completions for each of this rank's P/world prompts (r1core.generate); with
                rollout.async the next step's rollout is launched here and generated while this step's
                update runs (r1core.train.async_rollout; one-step off-policy, corrected by grpo.rollout_is)
  2. reward     score them with the task's weighted rule rewards (r1core.rewards)
  3. advantage  group-normalised over the global batch (r1core.grpo_advantages)
  4. logprobs   old log-probs (only when the batch is reused: mu > 1 or several optimizer steps per
                pass) and reference log-probs (only when beta > 0) with the fused linear log-prob op
  5. update     mu passes; each pass deals the prompt groups into optim.mini_batches mini-batches (one
                optimizer step each), each processed in micro-batches of optim.micro_batch rows whose
                gradients accumulate; fused linear GRPO loss (docs/spec.md §3), backward, gradient clipping,
                AdamW; one LR-scheduler step per training step.

Departures from textbook GRPO (DeepSeekMath eq. 3), each a config option:
  - Loss aggregation `grpo.loss_agg` defaults to "token_mean" (DAPO) rather than the paper's
    per-sequence mean ("seq_mean_token_mean", available); "seq_mean_token_sum_norm" is Dr. GRPO with
    the constant normaliser max_len = rollout.max_new_tokens.
  - The normaliser of every aggregation is taken over the whole optimizer batch on all ranks
    (token counts, sequence counts all-reduced), not per micro-batch, so gradient accumulation and
    the number of ranks do not change the objective.
  - beta defaults to 0 (no KL term, as in DAPO / Dr. GRPO and most R1 reproductions): then no
    reference model is loaded and no reference log-probs are computed.  With beta > 0 the KL is the
    paper's k3 estimator against a frozen copy of the initial policy (or model.ref).
  - Clipping may be asymmetric (eps_low, eps_high; DAPO's clip-higher uses eps_high = 0.28).
  - Advantages may use an RLOO baseline or no std scaling (grpo.baseline, grpo.scale).
  - Groups whose rewards are all equal (advantage 0, no learning signal) are counted every step and,
    with grpo.drop_zero_variance, removed before the update (DAPO's dynamic sampling without the
    re-sampling: the batch shrinks instead of being refilled).
  - With mu = 1 and one optimizer step per pass the update is exactly on-policy: old log-probs are
    the current ones (ratio = 1), so they are not computed at all.  Old log-probs are recomputed by
    the training forward, never taken from the sampler (sampling kernels differ in rounding); the
    sampler's untruncated log-probs (Rollout.logp_policy) are the behaviour policy of grpo.rollout_is
    and are compared with the trainer's every step (rollout/logp_gap_mean, _max, rollout/kl_k3).
  - The loss divides logits by the sampling temperature, so the ratio compares the distributions
    that were sampled from.
  - The LR schedule advances once per training step, not per optimizer step.
  - MoE policies train through the experts the rollout chose (routing replay, grpo.routing_replay):
    without it the training forward routes many tokens differently from the sampler and the ratio
    is no longer the policy ratio.
  - There is no value model and no reward model, as in the paper; no entropy bonus unless grpo.entropy_coef
    is set (the objective options of docs/objectives.md are grpo.* keys).

Not a departure, an execution detail: with grpo.share_prefix (default) each prompt is computed once
per group in the log-prob and update forwards (r1core.train.packing) whenever that costs fewer FLOPs
than the row layout (packing.layout_cost, decided per step; `self.layout` says which ran); the loss and
gradients are the row layout's up to rounding (tests/train/test_packing.py).  Neither layout holds
anything quadratic in the completion length (packed attention needs no mask: r1core.models.segments).
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from r1core.ops.advantage import grpo_advantages
from r1core.ops.grpo.fused_linear import fused_linear_grpo_loss, fused_linear_logprobs
from r1core.ops.grpo.math import agg_denominator
from r1core.train import build, checkpoint as ckpt, distributed as D
from r1core.train.async_rollout import RolloutWorker
from r1core.train.config import Config, objective_options, parse_profile_steps, rollout_is_options, save_config
from r1core.train.evaluate import evaluate_policy
from r1core.train.packing import PrefixPacking, layout_cost
from r1core.train.policy_head import PolicyHead
from r1core.train.logging import RunLogger, plot_curves, summary_table
from r1core.train.profiling import PhaseTimer, ProfileWindow
from r1core.train.sampling import Samples, sample


def _denominator_agg(loss_agg: str) -> str:
    """LUSPO's seq_mean_token_sum divides by the rows B, like seq_mean_token_sum_norm (its max_len is 1)."""
    return "seq_mean_token_sum_norm" if loss_agg == "seq_mean_token_sum" else loss_agg


@dataclass
class Batch:
    """One rank's training batch after the rollout (rows of the rollout, completion positions)."""
    input_ids_NT: torch.Tensor      # tokens[:, :-1]
    targets_NT: torch.Tensor        # tokens[:, 1:]
    mask_NT: torch.Tensor           # completion_mask[:, 1:] (bool)
    adv_N: torch.Tensor             # float32 advantages
    rows: torch.Tensor              # kept row indices (all rows unless zero-variance groups are dropped)
    first_group: int = 0            # global index of this rank's first prompt group
    replay: list[torch.Tensor] | None = None   # MoE routing replay: per MoE layer [N, T, k] (input positions)
    packing: PrefixPacking | None = None       # shared-prefix packing: then *_NT are completion positions only
    old_logp_NT: torch.Tensor | None = None
    ref_logp_NT: torch.Tensor | None = None
    rollout_logp_NT: torch.Tensor | None = None   # the sampler's untruncated log-probs of the targets (logp_policy)


class GRPOTrainer:
    def __init__(self, cfg: Config, *, deps: build.Deps | None = None, info: D.DistInfo | None = None,
                 init: str | None = None):
        """`init` overrides the policy's starting weights (a checkpoint or model folder) while the
        tokenizer still comes from cfg.model.source (pipeline stages use it)."""
        self.cfg, self.deps = cfg, deps or build.Deps()
        self.info = info or D.init(cfg.model.device)
        self.device = self.info.device
        build.set_threads(cfg)
        if cfg.rollout.async_ and self.info.enabled and cfg.run.dist == "fsdp":
            raise ValueError("config key 'rollout.async' = true needs whole weights on each rank for its rollout "
                             "copy: use run.dist=ddp with torchrun (FSDP shards them)")
        if cfg.rollout.prompts % self.info.world:
            raise ValueError(f"rollout.prompts={cfg.rollout.prompts} must be divisible by the number of ranks "
                             f"({self.info.world})")
        self.out = Path(cfg.run.out)
        build.seed_everything(cfg.run.seed + self.info.rank)
        resume_from = ckpt.latest_checkpoint(self.out) if cfg.run.resume else None
        if cfg.run.resume and resume_from is None and self.info.main:
            print(f"r1core: resume=true but {self.out}/checkpoints holds no checkpoint: starting fresh")

        self.tokenizer = self.deps.load_tokenizer(build.tokenizer_source(cfg))
        self.task = build.load_task(cfg, self.tokenizer, self.deps)
        source = str(resume_from) if resume_from else (init or cfg.model.source)
        model = build.load_policy(source, cfg, self.device, self.deps)
        model.train()
        autocast = build.DTYPES[cfg.model.autocast] if cfg.model.autocast else None
        self.policy = D.wrap(PolicyHead(model, autocast=autocast), self.info, cfg.run.dist)
        self.ref = None
        if cfg.grpo.beta > 0:                      # beta = 0: no reference model at all
            ref_model = build.load_policy(cfg.model.ref or init or cfg.model.source, cfg, self.device, self.deps)
            ref_model.requires_grad_(False).eval()
            ref_head = PolicyHead(ref_model, autocast=autocast)
            self.ref = D.wrap(ref_head, self.info, cfg.run.dist) if cfg.run.dist == "fsdp" else ref_head
        self.optimizer = build.make_optimizer(self.policy.parameters(), cfg)
        self.scheduler = build.make_scheduler(self.optimizer, cfg, cfg.run.steps)
        self.start_step = 0
        self.eval_history: list[dict] = []
        self.worker: RolloutWorker | None = None     # rollout.async: the thread with the rollout in flight
        self._resumed_rollout: tuple[int, Samples] | None = None
        if resume_from is not None:
            state = ckpt.load_checkpoint(resume_from, policy=self.policy, optimizer=self.optimizer,
                                         scheduler=self.scheduler, info=self.info)
            self.start_step = state["step"]
            lags = cfg.rollout.async_ and cfg.rollout.max_staleness > 0
            pending = ckpt.load_rank_file(resume_from, "rollout", self.info) if lags else None
            if pending is not None:          # the rollout that was in flight when the checkpoint was written
                self._resumed_rollout = (pending.pop("step"), Samples(**pending))
            self.eval_history = state.get("eval_history", [])
            if self.info.main:
                print(ckpt.resume_line(resume_from, state, cfg.run.steps), flush=True)
        self.timer = PhaseTimer(self.device)
        self.temperature = cfg.rollout.temperature if cfg.rollout.temperature > 0 else 1.0
        self.backend = cfg.grpo.backend or None
        self.share_prefix = cfg.grpo.share_prefix and cfg.rollout.group_size > 1 and all(
            _packable(D.unwrap(m)) for m in (self.policy, self.ref) if m is not None)
        self.layout = "rows"                       # the layout of the last step's batch (packed or rows)
        self.rollout_is = rollout_is_options(cfg)

    @property
    def model(self) -> torch.nn.Module:
        """The CausalLM being trained (inside the data-parallel wrapper)."""
        return D.unwrap(self.policy)

    # -----------------------------------------------------------------------------------------
    # the loop
    # -----------------------------------------------------------------------------------------
    def train(self, *, stop_after: int | None = None) -> dict:
        """Run steps start+1 .. run.steps (or stop after step `stop_after`, as a killed run would)."""
        cfg, info = self.cfg, self.info
        if info.main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out / "config.yaml")
        log = RunLogger(self.out, total_steps=cfg.run.steps, start_step=self.start_step, enabled=info.main,
                        tensorboard=cfg.run.tensorboard, progress=cfg.run.progress)
        window = ProfileWindow(parse_profile_steps(cfg.run.profile_steps) if cfg.run.profile_steps else None)
        if cfg.run.eval_n and not self.eval_history:
            self._evaluate(0, log)
        last = self.start_step
        t_start = time.perf_counter()
        try:
            for step in range(self.start_step + 1, cfg.run.steps + 1):
                window.before_step(step)
                metrics = self.step(step)
                window.after_step(step)
                log.log(metrics)
                if cfg.run.eval_n and cfg.run.eval_every and step % cfg.run.eval_every == 0 and step < cfg.run.steps:
                    self._evaluate(step, log)
                if step == cfg.run.steps and cfg.run.eval_n:
                    self._evaluate(step, log)
                if (cfg.run.save_every and step % cfg.run.save_every == 0) or step == cfg.run.steps:
                    self.save(step)
                last = step
                if stop_after is not None and step >= stop_after:
                    break
        finally:
            if self.worker is not None:          # a rollout still in flight ends and is dropped
                self.worker.close()
                self.worker = None
        window.close()
        log.close()
        summary = {"steps": last, "seconds": time.perf_counter() - t_start,
                   "before": self.eval_history[0] if self.eval_history else None,
                   "after": self.eval_history[-1] if len(self.eval_history) > 1 else None}
        if info.main:
            self._finish(summary)
        return summary

    def step(self, step: int) -> dict:
        """One GRPO step (rollout, reward, advantages, log-probs, mu passes of updates) -> metrics."""
        cfg, info = self.cfg, self.info
        t0, c0 = time.perf_counter(), time.process_time()
        P, G = cfg.rollout.prompts, cfg.rollout.group_size
        P_local = P // info.world
        first = info.rank * P_local
        examples = self.task.train(P, seed=build.call_seed(cfg.run.seed, step))[first:first + P_local]

        # 1. rollout: G samples per prompt, from the current policy (rollout.async: the one generated during
        # the previous step's update, from the weights that update started from)
        with self.timer("rollout"):
            s, staleness = self._rollout(step, examples, first)
        if self.rollout_is and s.logp_policy_NT is None:
            raise ValueError(f"config key 'grpo.rollout_is' = {self.rollout_is['rollout_is']!r} needs the sampler's "
                             "log-probs (Rollout.logp_policy), and this run's generate returns none: set "
                             "grpo.rollout_is=off or sample with r1core.generate")

        # 2. reward
        with self.timer("reward"):
            lang = {"lang": [cfg.task.lang] * len(s.completions)} if "language" in self.task.reward_weights else {}
            rb = self.task.reward(s.completions, examples, group_size=G, **lang)
            total_N = torch.as_tensor(rb.total, dtype=torch.float32).reshape(-1)
            per_NK = torch.as_tensor(rb.per_reward, dtype=torch.float32).reshape(total_N.numel(), -1)

        # 3. advantages over the global batch (every rank computes them all, keeps its rows)
        rewards_all = D.all_gather_cat(total_N, info)
        adv_all = grpo_advantages(rewards_all, G, scale=cfg.grpo.scale, baseline=cfg.grpo.baseline,
                                  backend=self.backend)
        n_local = total_N.numel()
        adv_N = adv_all[info.rank * n_local:(info.rank + 1) * n_local].float()
        groups = rewards_all.view(-1, G)
        zero_var_all = (groups.max(1).values == groups.min(1).values)
        zero_var_local = zero_var_all.view(info.world, -1)[info.rank]
        keep_N = ~zero_var_local.repeat_interleave(G) if cfg.grpo.drop_zero_variance else torch.ones(n_local, dtype=torch.bool)

        batch = self._make_batch(s, adv_N, keep_N)
        batch.first_group = first
        upd = self._update(batch)
        if cfg.rollout.async_:
            upd["rollout/staleness"] = staleness

        # metrics (global over ranks)
        per_all = D.all_gather_cat(per_NK, info)
        n_tok = D.all_reduce([float(s.num_tokens), float(s.mask_NT.any(1).sum())], info=info)
        dt = time.perf_counter() - t0
        metrics = {
            "step": step,
            "reward_mean": rewards_all.mean().item(),
            "reward_std": rewards_all.std().item() if rewards_all.numel() > 1 else 0.0,
            **{f"reward/{n}": per_all[:, j].mean().item() for j, n in enumerate(rb.names)},
            **upd,
            "lr": self.optimizer.param_groups[0]["lr"],
            "completion_len": (n_tok[0] / max(1.0, float(rewards_all.numel()))).item(),
            "zero_var_groups": int(zero_var_all.sum()),
            "zero_var_frac": zero_var_all.float().mean().item(),
            "tokens": int(n_tok[0]),
            "tokens_per_s": n_tok[0].item() / dt,
            "step_time": dt,
            "cpu_time": time.process_time() - c0,     # this process, all threads (robust on a shared CPU)
            **self.timer.reset(),
        }
        with warnings.catch_warnings():   # a step whose groups were all dropped made no optimizer step
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            self.scheduler.step()
        return metrics

    # -----------------------------------------------------------------------------------------
    # pieces of a step
    # -----------------------------------------------------------------------------------------
    def _sample(self, model: torch.nn.Module, step: int, examples, first: int) -> Samples:
        """Step `step`'s rollout of `examples` from `model` (the seeds depend on the step, not on who samples)."""
        cfg = self.cfg
        return sample(model, self.tokenizer, [ex.prompt for ex in examples], num_samples=cfg.rollout.group_size,
                      max_new_tokens=cfg.rollout.max_new_tokens, temperature=cfg.rollout.temperature,
                      top_p=cfg.rollout.top_p, top_k=cfg.rollout.top_k, seed=build.call_seed(cfg.run.seed, step, 1),
                      first_index=first, gen_batch=cfg.rollout.gen_batch, deps=self.deps)

    def _rollout(self, step: int, examples, first: int) -> tuple[Samples, int]:
        """(samples of `step`, how many updates their weights lag the trained ones).  Synchronous: sampled now.
        rollout.async: taken from the worker (or the checkpoint) when it generated them, else sampled now by
        the worker and waited for (max_staleness=0 does that every step: the synchronous trainer, through the
        worker); then, with max_staleness=1, the next step's rollout is launched from the current weights."""
        cfg = self.cfg
        if not cfg.rollout.async_:
            with D.full_params(self.policy), torch.no_grad():
                self.model.eval()
                s = self._sample(self.model, step, examples, first)
                self.model.train()
            return s, 0
        if self.worker is None:
            self.worker = RolloutWorker(self.model, self.device)
        s, lag = None, cfg.rollout.max_staleness
        if self._resumed_rollout is not None and self._resumed_rollout[0] == step:
            s = self._resumed_rollout[1]
        self._resumed_rollout = None
        s = s if s is not None else self.worker.take(step)
        if s is None:
            self.worker.launch(step, self.model, lambda m: self._sample(m, step, examples, first))
            s, lag = self.worker.take(step), 0
        if cfg.rollout.max_staleness > 0 and step < cfg.run.steps:
            P_local = cfg.rollout.prompts // self.info.world
            nxt = self.task.train(cfg.rollout.prompts, seed=build.call_seed(cfg.run.seed, step + 1))
            nxt = nxt[first:first + P_local]
            self.worker.launch(step + 1, self.model, lambda m: self._sample(m, step + 1, nxt, first))
        return s, lag

    def _make_batch(self, s, adv_N: torch.Tensor, keep_N: torch.Tensor) -> Batch:
        tokens, mask = s.tokens_NT, s.mask_NT
        used = int(mask.any(0).nonzero().max()) + 1 if mask.any() else 2   # drop trailing padding columns
        tokens, mask = tokens[:, :max(used, 2)], mask[:, :max(used, 2)]
        dev = self.device
        T = tokens.shape[1]
        replay = None                      # host tensors: packing gathers from them per micro-batch
        if s.expert_ids is not None and self.cfg.grpo.routing_replay:
            replay = [e[:, :T - 1].cpu() for e in s.expert_ids]
        G = self.cfg.rollout.group_size
        self.layout = "rows"
        if self.share_prefix:
            inputs, targets, cmask, lens = PrefixPacking.extension_layout(tokens, mask, s.prompt_lens)
            group = torch.arange(tokens.shape[0]) // G
            cost = layout_cost(list(s.prompt_lens), lens, group.tolist(), T - 1, self.model.config)
            self.layout = "packed" if cost["packed"] < cost["rows"] else "rows"
        pol = getattr(s, "logp_policy_NT", None)
        if self.layout == "packed":
            packing = PrefixPacking(tokens, s.prompt_lens, lens, group, replay)
            roll = None
            if pol is not None:               # the extension layout's targets: completion columns L .. L + c
                roll = torch.zeros(cmask.shape, dtype=torch.float32)
                for n, (L, c) in enumerate(zip(s.prompt_lens, lens)):
                    roll[n, :c] = pol[n, L:L + c]
                roll = roll.to(dev)
            return Batch(input_ids_NT=inputs.to(dev), targets_NT=targets.to(dev), mask_NT=cmask.to(dev),
                         adv_N=adv_N.to(dev), rows=keep_N.nonzero().flatten(), packing=packing, rollout_logp_NT=roll)
        return Batch(input_ids_NT=tokens[:, :-1].to(dev), targets_NT=tokens[:, 1:].to(dev),
                     mask_NT=mask[:, 1:].to(dev), adv_N=adv_N.to(dev), rows=keep_N.nonzero().flatten(),
                     replay=None if replay is None else [e.to(dev) for e in replay],
                     rollout_logp_NT=None if pol is None else pol[:, 1:T].float().to(dev))

    def _forward(self, head: torch.nn.Module, batch: Batch, rows: torch.Tensor, head_fn):
        """head_fn(hidden [n, T, H] of `rows` in the batch's layout, lm_head weight, bias) through the
        policy (or reference) forward: the rows as they are, or packed by prompt group."""
        if batch.packing is None:
            kw = {} if batch.replay is None else {"replay_ids": [e[rows] for e in batch.replay]}
            return head(batch.input_ids_NT[rows], head_fn, **kw)
        p = batch.packing.pack(rows, self.device, batch.input_ids_NT.shape[1])
        kw = {} if p.replay_ids is None else {"replay_ids": p.replay_ids}
        return head(p.input_ids, head_fn, position_ids=p.position_ids, attention_mask=p.attention_mask,
                    select=p.select, **kw)

    def _micro_batches(self, rows: torch.Tensor, first_group: int) -> list[list[torch.Tensor]]:
        """Mini-batches (one optimizer step each) of micro-batches (one forward each) of row indices.
        Prompt group p (global index) goes to mini-batch p % optim.mini_batches, so the mini-batches
        hold the same sequences whatever the number of ranks.  Every rank runs the same number of
        micro-batches (collectives must match): missing ones are empty, run as a masked-out dummy row."""
        G, mb, n_mini = self.cfg.rollout.group_size, self.cfg.optim.micro_batch, self.cfg.optim.mini_batches
        owner = (first_group + rows // G) % n_mini
        minis = [list(rows[owner == k].split(mb)) if bool((owner == k).any()) else [] for k in range(n_mini)]
        counts = D.all_reduce([float(len(m)) for m in minis], op="max", info=self.info)
        out = []
        for m, n in zip(minis, counts.tolist()):
            if n > 0:
                out.append(m + [rows.new_empty(0)] * (int(n) - len(m)))
        return out

    @torch.no_grad()
    def _logprobs(self, head: torch.nn.Module, batch: Batch, micro: list[torch.Tensor]) -> torch.Tensor:
        out = torch.zeros(batch.targets_NT.shape, dtype=torch.float32, device=self.device)
        for rows in micro:
            rows_, _ = self._rows_or_dummy(rows)
            targets = batch.targets_NT[rows_].masked_fill(~batch.mask_NT[rows_], -100)  # prompt/pad: skipped
            lp = self._forward(head, batch, rows_, lambda h, w, b: fused_linear_logprobs(
                h, w, targets, bias=b, temperature=self.temperature, backend=self.backend))
            if rows.numel():
                out[rows] = lp
        return out

    @staticmethod
    def _rows_or_dummy(rows: torch.Tensor) -> tuple[torch.Tensor, bool]:
        return (rows, False) if rows.numel() else (torch.zeros(1, dtype=torch.long), True)

    def _update(self, batch: Batch) -> dict:
        cfg, info = self.cfg, self.info
        minis = self._micro_batches(batch.rows, batch.first_group)
        if not minis:                                    # every group dropped everywhere: no update
            return {"loss": 0.0, "kl_mean": 0.0, "clip_low_frac": 0.0, "clip_high_frac": 0.0, "ratio_mean": 1.0,
                    "grad_norm": 0.0, "optimizer_steps": 0}
        all_micro = [m for mini in minis for m in mini]
        reuse = cfg.grpo.mu > 1 or len(minis) > 1        # the batch outlives the policy that sampled it
        with self.timer("logprobs"):
            if reuse:
                batch.old_logp_NT = self._logprobs(self.policy, batch, all_micro)
            if self.ref is not None:
                with D.full_params(self.ref):
                    batch.ref_logp_NT = self._logprobs(self.ref, batch, all_micro)

        g = cfg.grpo
        loss_kw = dict(beta=g.beta, eps_low=g.eps_low, eps_high=g.eps_high, temperature=self.temperature,
                       loss_agg=g.loss_agg, max_len=cfg.rollout.max_new_tokens if g.loss_agg ==
                       "seq_mean_token_sum_norm" else None, **objective_options(g), **self.rollout_is)
        roll = batch.rollout_logp_NT if self.rollout_is else None
        # stats: token-weighted sums [loss, kl, ratio, clip_low, clip_high, tokens, entropy] and the grad
        # norms, accumulated on the device: no host sync per micro-batch (each drains a GPU's stream);
        # they reach the host once, after the last optimizer step
        sums = torch.zeros(7, dtype=torch.float64, device=self.device)
        grad_norms = []
        # the trainer's log-probs vs the sampler's (|Δ| sum, k3 sum, tokens; |Δ| max), from the old log-probs
        # when they were computed, else from the first pass's loss forward (the same weights: one optimizer step)
        gap = _Gap(self.device) if batch.rollout_logp_NT is not None else None
        if gap is not None and batch.old_logp_NT is not None:
            gap.add(batch.old_logp_NT[batch.rows], batch.rollout_logp_NT[batch.rows], batch.mask_NT[batch.rows])
        for pass_ in range(g.mu):
            for mini in minis:
                total = self._denominator(batch, mini)          # one sync per optimizer step
                for rows in mini:
                    rows_, dummy = self._rows_or_dummy(rows)
                    mask = batch.mask_NT[rows_]
                    mask = torch.zeros_like(mask) if dummy else mask
                    with self.timer("forward"):
                        loss, st = self._forward(self.policy, batch, rows_, lambda h, w, b: fused_linear_grpo_loss(
                            h, w, batch.targets_NT[rows_], batch.adv_N[rows_], mask, bias=b,
                            old_logp=None if batch.old_logp_NT is None else batch.old_logp_NT[rows_],
                            ref_logp=None if batch.ref_logp_NT is None else batch.ref_logp_NT[rows_],
                            chunk_size=g.chunk_size or None, backend=self.backend, entropy=g.log_entropy,
                            **({} if roll is None else {"rollout_logp": roll[rows_]}), **loss_kw))
                        # the op normalises by this micro-batch's denominator; the objective by the batch's
                        local = agg_denominator(mask, _denominator_agg(g.loss_agg)).to(loss.dtype)
                        scale = local / total if total > 0 else torch.zeros_like(local)
                    with self.timer("backward"):
                        (loss * (scale * info.world)).backward()
                    if gap is not None and batch.old_logp_NT is None and pass_ == 0:
                        gap.add(st.logp, batch.rollout_logp_NT[rows_], mask)
                    m = mask.to(torch.float64)
                    ntok = m.sum()
                    ent = (st.entropy.double() * m).sum() if st.entropy is not None else ntok.new_zeros(())
                    sums += torch.stack([loss.detach().double() * scale.double(), st.kl_mean.double() * ntok,
                                         st.ratio_mean.double() * ntok, st.clip_low_frac.double() * ntok,
                                         st.clip_high_frac.double() * ntok, ntok, ent]).to(sums.device)
                with self.timer("optimizer"):
                    gn = torch.nn.utils.clip_grad_norm_(self.policy.parameters(),
                                                        cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else math.inf)
                    gn = gn.full_tensor() if hasattr(gn, "full_tensor") else gn
                    grad_norms.append(gn.detach().double().to(sums.device))
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
        steps = g.mu * len(minis)
        sums = torch.cat([sums, torch.stack(grad_norms).sum()[None]])
        sums[7] /= info.world                       # every rank has the same (global) grad norm
        if gap is not None:
            sums = torch.cat([sums, gap.sums])
        sums = D.all_reduce(sums, info=info)
        if gap is not None:
            sums = torch.cat([sums, D.all_reduce(gap.max[None], op="max", info=info)])
        s = sums.tolist()                           # the one sync of the statistics
        n = max(1.0, s[5])
        out = {"loss": s[0] / steps, "kl_mean": s[1] / n, "ratio_mean": s[2] / n,
               "clip_low_frac": s[3] / n, "clip_high_frac": s[4] / n,
               **({"entropy_mean": s[6] / n} if g.log_entropy else {}),
               "grad_norm": s[7] / len(grad_norms), "optimizer_steps": steps}
        if gap is not None:
            k = max(1.0, s[10])
            out.update({"rollout/logp_gap_mean": s[8] / k, "rollout/logp_gap_max": s[11], "rollout/kl_k3": s[9] / k})
        return out

    def _denominator(self, batch: Batch, mini: list[torch.Tensor]) -> float:
        """The loss aggregation's denominator over one optimizer batch on all ranks (tokens,
        non-empty sequences or rows: r1core.ops.grpo.math.agg_denominator)."""
        rows = torch.cat(mini) if mini else batch.rows.new_empty(0)
        local = agg_denominator(batch.mask_NT[rows], _denominator_agg(self.cfg.grpo.loss_agg))
        return float(D.all_reduce([float(local)], info=self.info)[0])

    # -----------------------------------------------------------------------------------------
    # evaluation, checkpoints, the end
    # -----------------------------------------------------------------------------------------
    def _evaluate(self, step: int, log: RunLogger) -> dict:
        cfg = self.cfg
        with D.full_params(self.policy), torch.no_grad():
            result = evaluate_policy(self.model, self.tokenizer, self.task, n=cfg.run.eval_n, k=cfg.run.eval_k,
                                     temperature=cfg.run.eval_temperature, max_new_tokens=cfg.rollout.max_new_tokens,
                                     seed=build.call_seed(cfg.run.seed, 7), gen_batch=cfg.rollout.gen_batch,
                                     info=self.info, deps=self.deps)
        result = {"step": step, **result}
        self.eval_history.append(result)
        log.log_eval(step, result)
        log.write(f"eval @ step {step}: pass@1 {result['pass@1']:.3f}  format {result['format']:.3f}  "
                  f"len {result['completion_len']:.1f}")
        if self.info.main:
            self._write_eval_json()
        return result

    def _write_eval_json(self) -> None:
        h = self.eval_history
        data = {"before": h[0] if h else None, "after": h[-1] if len(h) > 1 else None, "history": h}
        (self.out / "eval.json").write_text(json.dumps(data, indent=1))

    def save(self, step: int) -> Path:
        """Checkpoint `step`; with rollout.async, the rollout in flight for step + 1 is waited for and saved with
        it (rollout/rank-<r>.pt), so a resume trains on exactly the samples the uninterrupted run did."""
        c = self.cfg.checkpoint
        pending = self.worker.wait(step + 1) if self.worker is not None else None
        rank_files = {} if pending is None else {"rollout": {"step": step + 1, **{
            f.name: getattr(pending, f.name) for f in dataclasses.fields(pending)}}}
        return ckpt.save_checkpoint(self.out, step, policy=self.policy, optimizer=self.optimizer,
                                    scheduler=self.scheduler, info=self.info, keep_last=self.cfg.run.keep_last,
                                    trainer_state={"eval_history": self.eval_history}, tokenizer=self.tokenizer,
                                    dtype=c.dtype, with_optimizer=step < self.cfg.run.steps or c.final_optimizer,
                                    rank_files=rank_files)

    def _finish(self, summary: dict) -> None:
        png = plot_curves(self.out) if self.cfg.run.plot else None
        table = summary_table(summary["before"], summary["after"])
        print(f"\nr1core train: {summary['steps']} steps in {summary['seconds']:.0f} s -> {self.out}")
        if table:
            print(table)
        if png:
            print(f"curves: {png}")


class _Gap:
    """|trainer log-prob − sampler log-prob| over completion tokens, accumulated on the device (no host sync):
    sums = [Σ|Δ|, Σ k3, tokens] (float64), max = max |Δ|; k3 = exp(Δ) − Δ − 1 with Δ = trainer − sampler, the
    estimator of KL(sampler ‖ trainer) from the sampler's tokens."""

    def __init__(self, device):
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)
        self.max = torch.zeros((), dtype=torch.float64, device=device)

    def add(self, trainer_NT: torch.Tensor, sampler_NT: torch.Tensor, mask_NT: torch.Tensor) -> None:
        m = mask_NT.to(torch.float64)
        d = (trainer_NT.double() - sampler_NT.double()) * m
        a = d.abs()
        self.sums += torch.stack([a.sum(), ((d.exp() - d - 1) * m).sum(), m.sum()])
        self.max = torch.maximum(self.max, a.max() if a.numel() else self.max)


def _packable(model: torch.nn.Module) -> bool:
    """Shared-prefix packing needs r1core's CausalLM (4-d masks, explicit positions) and a RoPE whose
    frequencies do not depend on the longest position in the forward (dynamic NTK does)."""
    from r1core.models.transformer import CausalLM
    return isinstance(model, CausalLM) and model.config.rope.type != "dynamic"
