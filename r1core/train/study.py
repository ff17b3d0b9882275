"""`pipeline.recipe=study`: the R1 paper's comparisons at small scale, one table and one figure.

The study recipe runs the r1 stages (whose first two are "cold start + RL"), distils the final R1 model
into the base model, and runs R1-Zero (pure RL from the base model with the R1-Zero template).  This
module turns the pipeline's columns into the five arms the paper compares, prints them beside the
paper's own numbers (for orientation only: a 671B MoE on AIME is not a 135M model on two-digit sums)
and writes `<out>/study.json` and `<out>/study_curves.png` (docs/r1_small_scale.md).
"""
from __future__ import annotations

import json
from pathlib import Path

# (arm, pipeline column, what the paper reports for the analogous model: AIME 2024 pass@1, %)
ARMS = (
    ("base", "base", "15.6 (R1-Zero at step 0)"),
    ("R1-Zero", "after r1zero", "71.0 (cons@64 86.7)"),
    ("cold start + RL", "after reasoning_rl", "- (not reported)"),
    ("R1", "after final_rl", "79.8"),
    ("distilled", "after student_sft", "72.6 (Qwen-32B; RL of it: 47.0)"),
)
PAPER_NOTE = ("paper: DeepSeek-R1 (2025), AIME 2024 pass@1; distilled = R1-Distill-Qwen-32B vs "
              "DeepSeek-R1-Zero-Qwen-32B (RL of the same model), Table 6")
GRPO_STAGES = ("reasoning_rl", "final_rl", "r1zero")


def arms_table(columns: list[tuple[str, dict, dict]]) -> tuple[str, dict]:
    """The study's table (pass@1, cons@k, format, time per arm, the paper's number) and its data."""
    by_name = {n: (c, t) for n, c, t in columns}
    rows, data = [], {}
    cons = sorted({k for _, c, _ in columns for k in c if k.startswith("cons@")})
    head = f"{'arm':16s}{'pass@1':>8s}" + "".join(f"{k:>8s}" for k in cons) + f"{'format':>8s}{'time s':>8s}  paper"
    for arm, col, paper in ARMS:
        if col not in by_name:
            continue
        c, t = by_name[col]
        total = t.get("total") if t else None
        data[arm] = {"pass@1": c["pass@1"], **{k: c[k] for k in cons if k in c}, "format": c["format"],
                     "time_s": total, "column": col}
        rows.append(f"{arm:16s}{c['pass@1']:8.3f}" + "".join(f"{c[k]:8.3f}" if k in c else f"{'-':>8s}" for k in cons)
                    + f"{c['format']:8.3f}" + (f"{total:8.0f}" if total is not None else f"{'-':>8s}") + f"  {paper}")
    return "\n".join([head, *rows, PAPER_NOTE]), data


def report(root: str | Path, columns: list[tuple[str, dict, dict]], *, plot: bool = True) -> None:
    root = Path(root)
    table, data = arms_table(columns)
    (root / "study.json").write_text(json.dumps(data, indent=1))
    print("\nthe paper's comparisons at small scale (time: the stages each model depends on)\n" + table)
    png = plot_study(root, data) if plot else None
    if png:
        print(f"curves: {png}")


def plot_study(root: Path, data: dict) -> Path | None:
    """Left: training reward of the GRPO stages by step; right: held-out pass@1 and format per arm."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    from r1core.train.logging import read_metrics
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    for folder in sorted(root.glob("*-*")):
        name = folder.name.split("-", 1)[1]
        if name in GRPO_STAGES and (folder / "metrics.jsonl").exists():
            rows = [r for r in read_metrics(folder / "metrics.jsonl") if "reward_mean" in r]
            ax1.plot([r["step"] for r in rows], [r["reward_mean"] for r in rows], label=name)
    ax1.set(xlabel="GRPO step", ylabel="training reward (mean)", title="RL stages")
    ax1.legend()
    arms = list(data)
    x = range(len(arms))
    ax2.bar([i - 0.2 for i in x], [data[a]["pass@1"] for a in arms], width=0.4, label="pass@1")
    ax2.bar([i + 0.2 for i in x], [data[a]["format"] for a in arms], width=0.4, label="format")
    ax2.set_xticks(list(x), arms, rotation=15)
    ax2.set(ylim=(0, 1.05), title="held-out, per arm")
    ax2.legend()
    fig.tight_layout()
    path = root / "study_curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
