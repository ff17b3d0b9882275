"""Supervised fine-tuning on a JSONL of {"prompt", "completion"} records, loss on completion tokens.
(`sft.data` may also name a built-in cold-start set, "builtin:arithmetic": r1core.train.coldstart.)

The cold-start, post-rejection-sampling and distillation stages of the R1 pipeline.  `prompt` is the
question; it is rendered with the run's prompt template (task.template: chat / r1zero / plain) so
SFT and RL see the same prompts.  Sequence = prompt tokens + completion tokens + EOS, truncated to
sft.max_len; the loss is the token mean of -log p over completion tokens of the whole optimizer batch.

The loss goes through the fused linear GRPO op (no [B·T, V] logits): with advantage 1, on-policy
(ratio = 1, no clipping) and beta = 0, GRPO's gradient is exactly the cross-entropy gradient
-d log p / n; the reported loss is the cross-entropy itself, -mean(log p) from the op's statistics.
"""
from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import torch

from r1core.ops.grpo.fused_linear import fused_linear_grpo_loss
from r1core.train import build, checkpoint as ckpt, distributed as D
from r1core.train.coldstart import resolve_sft_data
from r1core.train.config import Config, save_config
from r1core.train.logging import RunLogger
from r1core.train.profiling import PhaseTimer
from r1core.train.sampling import encode_prompts, eos_id


def read_sft_jsonl(path: str | Path) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"sft.data: {str(p)!r} does not exist (a JSONL of {{prompt, completion}} records)")
    rows = []
    for i, line in enumerate(p.read_text().splitlines()):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}:{i + 1}: not JSON: {e}") from None
        if not isinstance(r, dict) or not isinstance(r.get("prompt"), str) or not isinstance(r.get("completion"), str):
            raise ValueError(f"{p}:{i + 1}: expected {{\"prompt\": str, \"completion\": str}}")
        rows.append(r)
    if not rows:
        raise ValueError(f"sft.data: {p} holds no records")
    return rows


def tokenize_sft(records: list[dict], tokenizer, cfg: Config) -> list[tuple[list[int], int]]:
    """-> [(token ids, number of prompt tokens)] (completion = the rest, EOS appended)."""
    from r1core.tasks.prompts import R1ZERO_SYSTEM, build_prompt
    system = {"r1zero": R1ZERO_SYSTEM, "": None}.get(cfg.task.system, cfg.task.system)
    prompts = [build_prompt(r["prompt"], template=cfg.task.template, tokenizer=tokenizer, system=system)
               for r in records]
    p_ids = encode_prompts(tokenizer, prompts)
    eos = eos_id(tokenizer)
    out = []
    for ids, r in zip(p_ids, records):
        c = list(getattr(tokenizer.encode(r["completion"]), "ids", tokenizer.encode(r["completion"])))
        seq = (ids + c + ([eos] if eos is not None else []))[:cfg.sft.max_len]
        if len(seq) > len(ids):                    # at least one completion token survives truncation
            out.append((seq, len(ids)))
    if not out:
        raise ValueError(f"sft: no record keeps a completion token within sft.max_len={cfg.sft.max_len}")
    return out


class SFTTrainer:
    def __init__(self, cfg: Config, *, data: str | None = None, init: str | None = None,
                 deps: build.Deps | None = None, info: D.DistInfo | None = None):
        self.cfg, self.deps = cfg, deps or build.Deps()
        self.info = info or D.init(cfg.model.device)
        self.device = self.info.device
        self.out = Path(cfg.run.out)
        build.set_threads(cfg)
        build.seed_everything(cfg.run.seed + self.info.rank)
        self.tokenizer = self.deps.load_tokenizer(build.tokenizer_source(cfg))
        sources = [data] if isinstance(data, str) else list(data or [cfg.sft.data])
        records, self.data_counts = [], {}
        for src in sources:
            if src.startswith("builtin:"):
                if self.info.main:
                    resolve_sft_data(src, self.out, n=cfg.sft.examples, seed=cfg.run.seed,
                                     ops=str(cfg.task.args.get("ops", "+-*")))
                D.barrier(self.info)
                path = str(self.out / f"coldstart-{src.removeprefix('builtin:')}.jsonl")
            else:
                path = src
            rows = read_sft_jsonl(path)
            self.data_counts[src] = len(rows)
            records += rows
        self.seqs = tokenize_sft(records, self.tokenizer, cfg)
        B = cfg.sft.batch
        if B % self.info.world:
            raise ValueError(f"sft.batch={B} must be divisible by the number of ranks ({self.info.world})")
        # a last partial batch counts as a step: 38 records in batches of 16 are 3 steps, not 2
        self.steps_per_epoch = max(1, math.ceil(len(self.seqs) / B))
        self.total = max(1, math.ceil(cfg.sft.epochs * self.steps_per_epoch))
        resume_from = ckpt.latest_checkpoint(self.out) if cfg.run.resume else None
        model = build.load_policy(str(resume_from) if resume_from else (init or cfg.model.source), cfg,
                                  self.device, self.deps)
        model.train()
        autocast = build.DTYPES[cfg.model.autocast] if cfg.model.autocast else None
        self.policy = D.wrap(D.PolicyHead(model, autocast=autocast), self.info, cfg.run.dist)
        self.optimizer = build.make_optimizer(self.policy.parameters(), cfg, lr=cfg.sft.lr)
        self.scheduler = build.make_scheduler(self.optimizer, cfg, self.total)
        self.start_step = 0
        if resume_from is not None:
            state = ckpt.load_checkpoint(resume_from, policy=self.policy, optimizer=self.optimizer,
                                         scheduler=self.scheduler, info=self.info)
            self.start_step = state["step"]
            if self.info.main:
                print(ckpt.resume_line(resume_from, state, self.total), flush=True)
        self.timer = PhaseTimer(self.device)

    @property
    def model(self) -> torch.nn.Module:
        """The CausalLM being trained (inside the data-parallel wrapper)."""
        return D.unwrap(self.policy)

    def _batch_rows(self, step: int) -> list[int]:
        """Record indices of optimizer step `step` (1-based): a seeded shuffle per epoch."""
        B = self.cfg.sft.batch
        epoch, pos = divmod(step - 1, self.steps_per_epoch)
        order = list(range(len(self.seqs)))
        random.Random(build.call_seed(self.cfg.run.seed, epoch)).shuffle(order)
        return order[pos * B:(pos + 1) * B]

    def train(self) -> Path | None:
        cfg, info = self.cfg, self.info
        if info.main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out / "config.yaml")
        log = RunLogger(self.out, total_steps=self.total, start_step=self.start_step, enabled=info.main,
                        tensorboard=cfg.run.tensorboard, progress=cfg.run.progress, desc="sft")
        path = None
        for step in range(self.start_step + 1, self.total + 1):
            metrics = self.step(step)
            log.log(metrics)
            if (cfg.run.save_every and step % cfg.run.save_every == 0) or step == self.total:
                path = ckpt.save_checkpoint(self.out, step, policy=self.policy, optimizer=self.optimizer,
                                            scheduler=self.scheduler, info=info, keep_last=cfg.run.keep_last,
                                            trainer_state={}, tokenizer=self.tokenizer, dtype=cfg.checkpoint.dtype,
                                            with_optimizer=step < self.total or cfg.checkpoint.final_optimizer)
        log.close()
        return path or ckpt.latest_checkpoint(self.out)

    def step(self, step: int) -> dict:
        cfg, info = self.cfg, self.info
        t0 = time.perf_counter()
        rows = self._batch_rows(step)
        per = len(rows) // info.world
        mine = [self.seqs[i] for i in rows[info.rank * per:(info.rank + 1) * per]]
        n_tok = D.all_reduce([float(sum(len(s) - p for s, p in mine))], info=info)[0].item()
        mb = cfg.optim.micro_batch
        n_micro = int(D.all_reduce([float(math.ceil(len(mine) / mb))], op="max", info=info)[0])
        nll = 0.0
        for i in range(n_micro):
            chunk = mine[i * mb:(i + 1) * mb] or [self.seqs[0]]
            dummy = not mine[i * mb:(i + 1) * mb]
            ids, targets, mask = self._pad(chunk, dummy)
            with self.timer("forward"):
                ones = torch.ones(ids.shape[0], device=self.device)
                loss, st = self.policy(ids, lambda h, w, b: fused_linear_grpo_loss(h, w, targets, ones, mask, bias=b,
                                                                                    loss_agg="token_mean",
                                                                                    backend=cfg.grpo.backend or None))
                local = float(mask.sum())
                scale = local / n_tok if n_tok > 0 else 0.0
            with self.timer("backward"):
                (loss * (scale * info.world)).backward()
            nll -= float((st.logp * mask).sum())
        with self.timer("optimizer"):
            gn = torch.nn.utils.clip_grad_norm_(self.policy.parameters(),
                                                cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else math.inf)
            gn = gn.full_tensor() if hasattr(gn, "full_tensor") else gn
            lr = self.optimizer.param_groups[0]["lr"]
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
        nll = D.all_reduce([nll], info=info)[0].item()
        dt = time.perf_counter() - t0
        return {"step": step, "loss": nll / max(1.0, n_tok), "grad_norm": float(gn), "lr": lr,
                "tokens": int(n_tok), "tokens_per_s": n_tok / dt, "epoch": (step - 1) / self.steps_per_epoch,
                **self.timer.reset()}

    def _pad(self, chunk, dummy: bool):
        T = max(len(s) for s, _ in chunk)
        pad = eos_id(self.tokenizer) or 0
        ids = torch.full((len(chunk), T), pad, dtype=torch.long)
        mask = torch.zeros(len(chunk), T, dtype=torch.bool)
        for r, (s, p) in enumerate(chunk):
            ids[r, :len(s)] = torch.tensor(s)
            mask[r, p:len(s)] = not dummy
        dev = self.device
        return ids[:, :-1].to(dev), ids[:, 1:].to(dev), mask[:, 1:].to(dev)
