"""What a run reports: a progress bar, `metrics.jsonl`, TensorBoard, an end summary and a PNG.

`metrics.jsonl` holds one JSON object per step with at least step, reward_mean, reward_std, kl_mean,
loss and tokens_per_s (docs/spec.md §5), plus reward/<name>, clip fractions, grad_norm, lr, lengths, the
sampler/trainer log-prob gap rollout/logp_gap_mean, _max and rollout/kl_k3, and the phase times time/<phase>.  Evaluations go to the same file as {"eval": {...}, "step": N} lines and to
`eval.json`.  Only rank 0 writes.  On resume, lines after the resumed step are dropped so the file
reads as one uninterrupted run, and the TensorBoard folder is rebuilt from the kept lines (one event
file per stage, no repeated step).
"""
from __future__ import annotations

import json
import math
import shutil
import sys
import time
from pathlib import Path

BAR_KEYS = (("reward_mean", "reward", "{:.3f}"), ("kl_mean", "kl", "{:.2e}"), ("clip_frac", "clip", "{:.3f}"),
            ("rollout/logp_gap_max", "gap", "{:.1e}"), ("sft_loss", "loss", "{:.4f}"), ("tokens_per_s", "tok/s", "{:.0f}"))


def read_metrics(path: str | Path) -> list[dict]:
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


class RunLogger:
    def __init__(self, out: str | Path, *, total_steps: int, start_step: int = 0, enabled: bool = True,
                 tensorboard: bool = True, progress: bool = True, desc: str = "grpo"):
        self.out = Path(out)
        self.enabled = enabled
        self.total = total_steps
        self.path = self.out / "metrics.jsonl"
        self.t0 = time.perf_counter()
        self.start_step = start_step
        self.bar = self.tb = None
        if not enabled:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        kept = self._truncate_after(start_step)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                SummaryWriter = None
            if SummaryWriter is not None:
                # one event file per stage, across resumes: metrics.jsonl is the record, so the
                # TensorBoard folder is rebuilt from its kept lines rather than appended to (a second
                # file would repeat the resumed step and stale files would pile up)
                shutil.rmtree(self.out / "tensorboard", ignore_errors=True)
                self.tb = SummaryWriter(str(self.out / "tensorboard"))
                for row in kept:
                    self._tb_row(row)
        if progress:
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total_steps, initial=start_step, desc=desc, dynamic_ncols=True,
                                file=sys.stderr, unit="step")
            except ImportError:
                self.bar = None

    def _truncate_after(self, step: int) -> list[dict]:
        """Keep the lines of steps <= `step` (checkpoint `step` was written after them); a fresh run
        (step 0) starts an empty file."""
        rows = read_metrics(self.path) if step > 0 else []
        keep = [r for r in rows if r.get("step", 0) <= step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in keep))
        return keep

    def _tb_row(self, row: dict) -> None:
        if "eval" in row:
            for k, v in row["eval"].items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(f"eval/{k}", v, row["step"])
            return
        for k, v in row.items():
            if isinstance(v, (int, float)) and k != "step" and math.isfinite(v):
                self.tb.add_scalar(k, v, row["step"])

    def log(self, metrics: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(_jsonable(metrics)) + "\n")
        step = metrics["step"]
        if self.tb is not None:
            self._tb_row(_jsonable(metrics))
        if self.bar is not None:
            if "clip_low_frac" in metrics:      # a GRPO step
                metrics = {**metrics, "clip_frac": metrics["clip_low_frac"] + metrics.get("clip_high_frac", 0.0)}
            elif "loss" in metrics:             # an SFT step: its loss is the cross-entropy
                metrics = {**metrics, "sft_loss": metrics["loss"]}
            self.bar.set_postfix_str(" ".join(f"{short}={fmt.format(metrics[k])}" for k, short, fmt in BAR_KEYS
                                              if k in metrics), refresh=False)
            self.bar.update(step - self.bar.n)

    def log_eval(self, step: int, result: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, "eval": _jsonable(result)}) + "\n")
        if self.tb is not None:
            self._tb_row({"step": step, "eval": _jsonable(result)})

    def write(self, text: str) -> None:
        """Print without breaking the progress bar."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()


def _jsonable(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if hasattr(v, "item"):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        out[k] = _jsonable(v) if isinstance(v, dict) else v
    return out


def summary_table(before: dict | None, after: dict | None, keys=("pass@1", "format")) -> str:
    """Held-out metrics before and after training, side by side."""
    if not before or not after:
        return ""
    keys = [k for k in keys if k in before and k in after] + sorted(k for k in after if k.startswith("cons@"))
    keys += sorted(k for k in after if k.startswith("pass@1/") and k in before)   # a mixture's tasks
    width = max([14, *(len(k) for k in keys)])
    lines = [f"{'held-out':{width}s} {'before':>8s} {'after':>8s}"]
    for k in keys:
        lines.append(f"{k:{width}s} {before[k]:8.3f} {after[k]:8.3f}")
    return "\n".join(lines)


def plot_curves(out: str | Path, *, window: int = 5) -> Path | None:
    """PNG of reward (per step, and a moving average) and held-out accuracy/format; None without
    matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = read_metrics(Path(out) / "metrics.jsonl")
    steps = [r for r in rows if "eval" not in r and "reward_mean" in r]
    evals = [r for r in rows if "eval" in r]
    if not steps and not evals:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    ax = axes[0]
    xs = [r["step"] for r in steps]
    names = sorted({k for r in steps for k in r if k.startswith("reward/")})
    ax.plot(xs, [r["reward_mean"] for r in steps], alpha=0.35, color="C0", label="reward (step)")
    ax.plot(xs, _moving_average([r["reward_mean"] for r in steps], window), color="C0", label=f"reward ({window}-step mean)")
    for i, n in enumerate(names):
        ax.plot(xs, _moving_average([r.get(n, float("nan")) for r in steps], window), color=f"C{i + 1}",
                lw=1, label=n)
    ax.set_xlabel("step")
    ax.set_title("training reward")
    ax.legend(fontsize=7)
    ax = axes[1]
    ex = [r["step"] for r in evals]
    per_task = sorted({k for r in evals for k in r["eval"] if k.startswith("pass@1/")})  # a mixture's tasks
    for i, key in enumerate(("pass@1", "format", *per_task)):
        ys = [r["eval"].get(key) for r in evals]
        if any(y is not None for y in ys):
            ax.plot(ex, [float("nan") if y is None else y for y in ys], marker="o", color=f"C{i + 3}",
                    label=f"held-out {key}")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("step")
    ax.set_title("held-out evaluation")
    if evals:
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(out) / "curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _moving_average(xs: list[float], w: int) -> list[float]:
    out, acc = [], []
    for x in xs:
        acc = (acc + [x])[-w:]
        out.append(sum(acc) / len(acc))
    return out
