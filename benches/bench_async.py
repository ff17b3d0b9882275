"""GRPO steps with rollout.async=false vs true (one-step off-policy; docs/train.md), same config and seed.

    python -m benches.bench_async --device cuda --steps 4 --out async.json     # scripts/gpu.sh's bench phase
    python -m benches.bench_async --device cpu --steps 2 --tiny                 # the rehearsal's shapes

Each mode runs the embedded recipe's GRPO stage (recipe=grpo from model.source, no held-out
evaluation, no checkpoints) in this process, one after the other, and reports per mode the mean over
steps 2.. (step 1 is synchronous in both modes) of the step wall time, completion tokens/s, the phase
times (time/rollout is the wait for the rollout in async mode) and the gap metrics.  The ratio of the
two step times is the async speed-up on this machine.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

TINY = ["rollout.prompts=2", "rollout.group_size=2", "rollout.max_new_tokens=4", "model.train_layers=1"]


def run(mode: bool, steps: int, device: str, extra: list[str], out: Path) -> dict:
    from r1core.train.config import embedded_default, load_config
    from r1core.train.grpo import GRPOTrainer
    cfg = load_config(None, ["recipe=grpo", "run.eval_n=0", "run.progress=false", "run.tensorboard=false",
                             "run.plot=false", "save_every=0", "checkpoint.final_optimizer=false",
                             f"model.device={device}", f"steps={steps}", f"rollout.async={str(mode).lower()}",
                             f"out={out / str(mode)}", *extra], base=embedded_default())
    GRPOTrainer(cfg).train()
    rows = [json.loads(x) for x in (out / str(mode) / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "step_time" in r]
    tail = rows[1:] or rows
    keys = sorted({k for r in tail for k in r if k.startswith(("time/", "rollout/")) or k in
                   ("step_time", "tokens_per_s", "reward_mean", "cpu_time")})
    return {"async": mode, "steps": len(rows), **{k: sum(r.get(k, 0.0) for r in tail) / len(tail) for k in keys}}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--tiny", action="store_true", help="tiny rollouts (the CPU rehearsal)")
    ap.add_argument("--out", default=None, help="write the two rows as JSON here")
    ap.add_argument("--async-first", action="store_true", help="run the async mode first (order effects on a "
                                                                 "shared machine)")
    ap.add_argument("overrides", nargs="*", help="more key=value config overrides")
    args = ap.parse_args(argv)
    extra = (TINY if args.tiny else []) + args.overrides
    with tempfile.TemporaryDirectory() as tmp:
        order = (True, False) if args.async_first else (False, True)
        res = sorted((run(mode, args.steps, args.device, extra, Path(tmp)) for mode in order), key=lambda r: r["async"])
    speedup = res[0]["step_time"] / res[1]["step_time"] if res[1]["step_time"] else float("nan")
    report = {"device": args.device, "overrides": extra, "rows": res, "speedup": speedup}
    for r in res:
        print(json.dumps(r))
    print(f"NOTE: async speed-up {speedup:.2f}x ({res[0]['step_time']:.2f} s -> {res[1]['step_time']:.2f} s per step)")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
