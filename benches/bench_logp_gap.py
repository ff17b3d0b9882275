"""The sampler/trainer log-prob gap (issue 29; docs/train.md, "Sampler log-probs and the gap"), measured.

    python -m benches.bench_logp_gap                 # the table of docs/train.md (CPU, a few minutes)
    python -m benches.bench_logp_gap --steps 1 --only dense-fp32

Each row runs GRPOTrainer steps of the embedded recipe's GRPO stage (recipe=grpo, arithmetic, plain
template, no held-out evaluation) and reports the trainer's own metrics rollout/logp_gap_mean,
rollout/logp_gap_max and rollout/kl_k3: |log-prob of the trainer's forward − Rollout.logp_policy| over the
completion tokens (the KV-cache decode of r1core.generate vs the packed / row training forward).  Dense
rows are SmolLM2-135M-Instruct (the default run's model); MoE rows a random 4-layer Qwen3-MoE (8 experts,
top-2) over SmolLM2's tokenizer, with and without routing replay.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

COMMON = ["recipe=grpo", "run.eval_n=0", "run.progress=false", "run.tensorboard=false", "run.plot=false",
          "save_every=0", "run.keep_last=1", "rollout.prompts=4", "rollout.group_size=4",
          "rollout.max_new_tokens=32", "optim.micro_batch=16", "checkpoint.final_optimizer=false"]


def tiny_moe(folder: Path, vocab: int) -> str:
    """A random Qwen3-MoE (r1core's CausalLM), saved as a HF folder."""
    from r1core.models import CausalLM, ModelConfig
    cfg = ModelConfig.from_hf({"model_type": "qwen3_moe", "architectures": ["Qwen3MoeForCausalLM"],
                               "vocab_size": vocab, "hidden_size": 128, "intermediate_size": 256,
                               "moe_intermediate_size": 64, "num_experts": 8, "num_experts_per_tok": 2,
                               "norm_topk_prob": True, "num_hidden_layers": 4, "num_attention_heads": 4,
                               "num_key_value_heads": 2, "head_dim": 32, "max_position_embeddings": 512,
                               "tie_word_embeddings": True, "eos_token_id": 2})
    torch.manual_seed(0)
    model = CausalLM(cfg)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.dim() > 1:
                p.normal_(0, 0.05)
    model.save_pretrained(str(folder))
    return str(folder)


def rows(moe_folder: str) -> dict[str, list[str]]:
    moe = [f"model={moe_folder}", "model.tokenizer=smollm2-135m-instruct", "model.train_layers=0"]
    return {
        "dense-fp32": [],
        "dense-fp32-top_k": ["rollout.top_k=20"],
        "dense-fp32-rows": ["grpo.share_prefix=false"],
        "dense-bf16-autocast": ["model.autocast=bfloat16"],
        "dense-bf16-weights": ["model.dtype=bfloat16"],
        "moe-fp32-replay": moe,
        "moe-fp32-no-replay": [*moe, "grpo.routing_replay=false"],
        "moe-bf16-replay": [*moe, "model.dtype=bfloat16"],
        "moe-bf16-no-replay": [*moe, "model.dtype=bfloat16", "grpo.routing_replay=false"],
    }


def run(name: str, overrides: list[str], steps: int, out: Path) -> dict:
    from r1core.train.config import embedded_default, load_config
    from r1core.train.grpo import GRPOTrainer
    cfg = load_config(None, [*COMMON, f"steps={steps}", f"out={out / name}", *overrides], base=embedded_default())
    t = GRPOTrainer(cfg)
    t.train()
    ms = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
    ms = [m for m in ms if "rollout/logp_gap_max" in m]
    return {"row": name, "steps": len(ms), "layout": t.layout,
            "gap_mean": sum(m["rollout/logp_gap_mean"] for m in ms) / len(ms),
            "gap_max": max(m["rollout/logp_gap_max"] for m in ms),
            "kl_k3": sum(m["rollout/kl_k3"] for m in ms) / len(ms), "tokens": sum(m["tokens"] for m in ms)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        from r1core.train.build import Deps
        vocab = len(Deps().load_tokenizer("smollm2-135m-instruct"))
        table = rows(tiny_moe(out / "moe", vocab))
        for name, ov in table.items():
            if args.only and name not in args.only:
                continue
            print(json.dumps(run(name, ov, args.steps, out)), flush=True)


if __name__ == "__main__":
    main()
