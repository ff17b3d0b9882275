"""One GRPO step end to end: r1core against the same step in plain PyTorch.

A step = rollout (P prompts × G samples) + scoring + reference log-probs (beta > 0) + the update
(forward, backward, AdamW), run by the same trainer (r1core.train.grpo.GRPOTrainer) twice:
  r1core     r1core's CausalLM, r1core.generate (shared-prefix KV cache, early exit), the fused
             linear log-prob / GRPO loss ops (no [B·T, V] logits), the advantage kernel
  baseline   a Hugging Face `transformers` LlamaForCausalLM: `model.generate` for rollouts (its own
             KV cache, sampling loop), hidden states + lm_head through the eager references
             (ops backend "torch": logits materialised, autograd through log_softmax)
Same prompts, group size, lengths, optimizer and loss settings; rewards from the same task.

    python -m benches.bench_grpo_step [--quick] [--steps 2]   # per-phase table, both stacks
    python -m benches --ops grpo_step [--quick]               # the runner: one step per call

First principles (SmolLM2-135M, fp32, P·G = 64 rows; the chat template with the R1-Zero system
prompt makes 109-token prompts, completions are ≤ 64 tokens, ~50 on average): a forward costs
~2·135M FLOPs per token, a backward twice that.  As rows (the baseline) the reference and update
forwards see 64 × ~172 ≈ 11k positions; r1core packs each group's prompt once (shared-prefix
packing, r1core.train.packing): 8 × (108 + 8 × ~51) ≈ 4.1k, so ~2.7× fewer GEMM FLOPs in the
log-prob, forward and backward phases.  The rollout ≈ 2·135M FLOPs per decoded row-token in both;
r1core saves the per-sample prompt prefill and the finished rows' decode steps.  The baseline's
[rows·T, V] float32 logits (64 × 172 × 49152 × 4 B ≈ 2.2 GB, plus as much again for log_softmax and
its gradient) never exist in r1core.  Measured: docs/train.md, benches/results/cpu/grpo-step.json.
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from r1core.bench import Case, peak_extra_bytes

SMOLLM2 = "smollm2-135m-instruct"


# -------------------------------------------------------------------------------------------------
# the plain-PyTorch stack: a transformers model behind the CausalLM interface the trainer uses
# -------------------------------------------------------------------------------------------------
class HFPolicy(nn.Module):
    """A transformers causal LM seen as an r1core CausalLM: hidden_states, lm_head, save_pretrained."""

    def __init__(self, hf):
        super().__init__()
        self.hf = hf
        self.lm_head = hf.lm_head

    def hidden_states(self, input_ids, **_):
        return self.hf.model(input_ids=input_ids).last_hidden_state

    def forward(self, input_ids, **_):
        return self.hf(input_ids=input_ids).logits

    def save_pretrained(self, folder):
        self.hf.save_pretrained(folder)


@dataclass
class _Rollout:
    tokens: torch.Tensor
    completion_mask: torch.Tensor
    logp: torch.Tensor | None = None


@torch.no_grad()
def hf_generate(model, prompts, *, num_samples=1, max_new_tokens, temperature=1.0, top_p=1.0, top_k=0,
                eos_token_id=None, seed=None):
    """transformers' generate (left-padded batch, num_return_sequences=G) -> r1core's Rollout layout
    (prompt + completion per row, right-padded, completion_mask incl. the EOS)."""
    hf = model.hf
    pad = eos_token_id if eos_token_id is not None else 0
    P = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (P - len(p)) + p for p in prompts], device=hf.device)
    attn = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in prompts], device=hf.device)
    if seed is not None:
        torch.manual_seed(seed)
    out = hf.generate(input_ids=ids, attention_mask=attn, do_sample=temperature > 0, temperature=temperature or None,
                      top_p=top_p, top_k=top_k or None, max_new_tokens=max_new_tokens,
                      num_return_sequences=num_samples, eos_token_id=eos_token_id, pad_token_id=pad)
    gen = out[:, P:].cpu()
    rows, masks = [], []
    for r in range(gen.shape[0]):
        p = prompts[r // num_samples]
        g = gen[r].tolist()
        if eos_token_id is not None and eos_token_id in g:
            g = g[:g.index(eos_token_id) + 1]
        rows.append(p + g)
        masks.append([False] * len(p) + [True] * len(g))
    T = max(len(r) for r in rows)
    tokens = torch.tensor([r + [pad] * (T - len(r)) for r in rows])
    mask = torch.tensor([m + [False] * (T - len(m)) for m in masks])
    return _Rollout(tokens, mask)


def _tiny_folder() -> str:
    import transformers
    cfg = transformers.LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                                   eos_token_id=2)
    torch.manual_seed(0)
    folder = tempfile.mkdtemp(prefix="r1core-grpo-step-")
    transformers.LlamaForCausalLM(cfg).save_pretrained(folder)
    return folder


class _TinyTokenizer:
    """Bytes as ids 3..258 (quick mode with the tiny random model)."""
    eos_token_id = 2

    def encode(self, text):
        return [3 + b for b in text.encode()[:48]]

    def decode(self, ids):
        return bytes(i - 3 for i in ids if 3 <= i < 259).decode(errors="replace")

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return "".join(m["content"] for m in messages)


def _stacks(quick: bool, device: torch.device):
    """(config overrides, r1core Deps, baseline Deps)."""
    import transformers

    import r1core
    from r1core.train.build import Deps
    if quick:
        folder = _tiny_folder()
        tok = _TinyTokenizer()
        ours = Deps(load_model=lambda src, **kw: r1core.load_model(folder, **kw), load_tokenizer=lambda src: tok)
        load_hf = lambda: transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)  # noqa: E731
        overrides = ["rollout.prompts=4", "rollout.group_size=4", "rollout.max_new_tokens=16", "optim.micro_batch=8"]
    else:
        from r1core.models import resolve_source
        path = resolve_source(SMOLLM2)
        ours = Deps()
        tok = r1core.load_tokenizer(SMOLLM2)
        load_hf = lambda: transformers.AutoModelForCausalLM.from_pretrained(  # noqa: E731
            path.parent, gguf_file=path.name, dtype=torch.float32)
        overrides = ["rollout.prompts=8", "rollout.group_size=8", "rollout.max_new_tokens=64", "optim.micro_batch=16"]

    def load_baseline(src, *, dtype=torch.float32, device="cpu"):
        return HFPolicy(load_hf().to(device=device, dtype=dtype).train())
    base = Deps(load_model=load_baseline, load_tokenizer=lambda src: tok if quick else r1core.load_tokenizer(SMOLLM2),
                generate=hf_generate)
    return overrides, ours, base


def make_trainer(deps, overrides, device: torch.device, *, baseline: bool):
    from r1core.train.config import load_config
    from r1core.train.grpo import GRPOTrainer
    cfg = load_config(None, [*overrides, "task=arithmetic", "task.args.digits=2", "task.template=chat",
                             "grpo.beta=0.04", "rollout.temperature=1.0", "run.eval_n=0", "run.progress=false",
                             "run.tensorboard=false", "run.plot=false", f"run.out={tempfile.mkdtemp()}",
                             f"model.device={device.type}",
                             *(["grpo.backend=torch", "grpo.share_prefix=false"] if baseline else [])])
    return GRPOTrainer(cfg, deps=deps)


def cases(device: torch.device, quick: bool) -> list[Case]:
    overrides, ours, base = _stacks(quick, device)
    out = []
    shape = "tiny P=4 G=4 new=16" if quick else "SmolLM2-135M P=8 G=8 new=64"
    for name, deps, is_base in (("torch+transformers", base, True), ("r1core", ours, False)):
        trainer = make_trainer(deps, overrides, device, baseline=is_base)
        counter = iter(range(1, 10**6))
        out.append(Case(op="grpo_step", shape=shape, dtype="fp32", backend=name, baseline=is_base,
                        fn=lambda t=trainer, c=counter: t.step(next(c)),
                        note="rollout+reward+ref logprobs+update"))
    return out


# -------------------------------------------------------------------------------------------------
# standalone: per-phase times and peak memory of both stacks, side by side
# -------------------------------------------------------------------------------------------------
STACKS = {"torch+transformers": True, "r1core": False}     # name -> is the baseline


def _measure(name: str, *, quick: bool, device: torch.device, steps: int) -> list[dict]:
    """One warm-up step, then `steps` timed steps of one stack; each row: the trainer's metrics + wall + peak."""
    overrides, ours, base = _stacks(quick, device)
    is_base = STACKS[name]
    trainer = make_trainer(base if is_base else ours, overrides, device, baseline=is_base)
    trainer.step(1)                                           # warm-up (allocator, kernels, caches)
    rows = []
    for s in range(2, 2 + steps):
        gc.collect()
        t0 = time.perf_counter()
        peak = peak_extra_bytes(lambda: rows.append(trainer.step(s)), device)
        rows[-1]["wall"] = time.perf_counter() - t0
        rows[-1]["peak"] = peak
    return [{k: v for k, v in r.items() if isinstance(v, (int, float, str)) or v is None} for r in rows]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a tiny random Llama instead of SmolLM2-135M")
    p.add_argument("--steps", type=int, default=2, help="timed steps per stack (after one warm-up step)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--out", type=Path, default=None, help="also write the per-step numbers as JSON here")
    p.add_argument("--stack", choices=["both", *STACKS], default="both",
                   help="both (default): each stack in its own fresh process, so neither inherits the "
                        "other's heap and the peak-memory numbers are comparable")
    args = p.parse_args(argv)
    argv = list(argv if argv is not None else sys.argv[1:])
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.stack != "both":
        rows = _measure(args.stack, quick=args.quick, device=device, steps=args.steps)
        if args.out is not None:
            args.out.write_text(json.dumps(rows))
        return 0
    import platform
    import subprocess
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        keep = [a for a in argv if not a.startswith("--out") and a != str(args.out)]
        for name in STACKS:
            part = Path(tmp) / "rows.json"
            subprocess.run([sys.executable, "-m", "benches.bench_grpo_step", *keep, "--stack", name,
                            "--out", str(part)], check=True)
            results[name] = json.loads(part.read_text())
    phases = ["rollout", "reward", "logprobs", "forward", "backward", "optimizer"]
    print(f"# one GRPO step, {'tiny random Llama' if args.quick else 'SmolLM2-135M fp32'} on {device}, "
          f"torch threads {torch.get_num_threads()}, mean of {args.steps} steps, each stack in its own process")
    print(f"{'phase (s)':14s}" + "".join(f"{n:>20s}" for n in results) + f"{'speed-up':>10s}")
    for ph in phases + ["wall", "cpu_time"]:
        vals = [sum(r.get(f"time/{ph}", r.get(ph, 0.0)) for r in rows) / len(rows) for rows in results.values()]
        sp = vals[0] / vals[1] if vals[1] else float("nan")
        print(f"{ph:14s}" + "".join(f"{v:20.3f}" for v in vals) + f"{sp:10.2f}")
    for key, label in (("tokens", "tokens/step"), ("tokens_per_s", "tokens/s")):
        vals = [sum(r.get(key, 0.0) for r in rows) / len(rows) for rows in results.values()]
        print(f"{label:14s}" + "".join(f"{v:20.1f}" for v in vals))
    peaks = [max((r["peak"] or 0) for r in rows) / 2**20 for rows in results.values()]
    print(f"{'peak MiB':14s}" + "".join(f"{v:20.0f}" for v in peaks) + "   (RSS high-water mark above the step's start)")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "command": "python -m benches.bench_grpo_step " + " ".join(argv),
            "model": "tiny" if args.quick else SMOLLM2, "device": str(device), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
            "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "steps": results}, indent=1))
        print(f"# wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
