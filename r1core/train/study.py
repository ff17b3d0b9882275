"""`pipeline.recipe=study`: the R1 paper's comparisons at small scale, one table and one figure.

The study recipe runs the r1 stages (whose first two are "cold start + RL"), distils the final R1 model
into the base model, and runs R1-Zero (pure RL from the base model with the R1-Zero template).  This
module turns the pipeline's columns into the five arms the paper compares, prints them beside the
paper's own numbers (for orientation only: a 671B MoE on AIME is not a 135M model on two-digit sums)
and writes `<out>/study.json` and `<out>/study_curves.png` (docs/r1_small_scale.md).

Several seeds are several runs (`run.seed=0 run.out=A`, `run.seed=1 run.out=B`); their spread is what
tells an ordering from noise at this scale, so `python -m r1core.train.study A B [--figure F]` reads the
runs' `study.json` files and prints, per arm, every seed's pass@1, the mean, the spread and a standard
error (`summarize_seeds`).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
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


def _pyplot():
    """matplotlib's pyplot on the file-only backend, or None where matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _reward_curves(ax, roots: list[Path], **style) -> None:
    """Training reward by step of each run's GRPO stages: one colour per stage, one line per run."""
    from r1core.train.logging import read_metrics
    for j, stage in enumerate(GRPO_STAGES):
        for i, root in enumerate(roots):
            for folder in sorted(root.glob(f"*-{stage}")):
                if (folder / "metrics.jsonl").exists():
                    rows = [r for r in read_metrics(folder / "metrics.jsonl") if "reward_mean" in r]
                    ax.plot([r["step"] for r in rows], [r["reward_mean"] for r in rows], color=f"C{j}",
                            label=stage if i == 0 else None, **style)


def plot_study(root: Path, data: dict) -> Path | None:
    """Left: training reward of the GRPO stages by step; right: held-out pass@1 and format per arm."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    _reward_curves(ax1, [root])
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


def _questions(root: Path) -> int | None:
    """How many held-out questions the run's evals used (pipeline.json), for the standard error."""
    try:
        evals = json.loads((root / "pipeline.json").read_text()).get("eval", {})
    except (OSError, ValueError):
        return None
    counts = {int(c["questions"]) for c in evals.values() if isinstance(c, dict) and "questions" in c}
    return counts.pop() if len(counts) == 1 else None


def summarize_seeds(roots: list[str | Path]) -> dict:
    """Per arm over several study runs: each run's pass@1, cons@k and format, their mean, min, max and
    sample standard deviation, and the standard error of the mean pass@1.

    `se_mean` is the evaluation's own standard error of the mean pass@1: sqrt(p(1-p)/n) per run with n
    the held-out questions (binomial over questions: an upper bound, since each question's k samples
    are averaged first), combined over runs as sqrt(sum SE_i^2)/runs.  It says how well the runs' models
    were measured, not how much training differs between seeds; that is `std` over the runs (and
    `se_seeds` = std/sqrt(runs), which contains both).  Only arms present in every run are summarised.
    """
    if not roots:
        raise ValueError("roots: give at least one study run directory")
    runs = []
    for r in roots:
        path = Path(r) / "study.json"
        if not path.is_file():
            raise FileNotFoundError(f"roots: {path} does not exist (is {r} a finished pipeline.recipe=study run?)")
        runs.append((Path(r), json.loads(path.read_text())))
    arms = [a for a in runs[0][1] if all(a in d for _, d in runs)]
    out = {}
    for arm in arms:
        entry = {"runs": [str(r) for r, _ in runs]}
        for key in runs[0][1][arm]:
            vals = [d[arm].get(key) for _, d in runs]
            if key in ("time_s", "column") or any(not isinstance(v, (int, float)) for v in vals):
                continue
            std = statistics.stdev(vals) if len(vals) > 1 else 0.0
            entry[key] = {"seeds": vals, "mean": statistics.fmean(vals), "min": min(vals), "max": max(vals), "std": std}
            if len(vals) > 1:
                entry[key]["se_seeds"] = std / math.sqrt(len(vals))
        ns = [_questions(r) for r, _ in runs]
        if "pass@1" in entry and all(ns):
            se2 = [p * (1 - p) / n for p, n in zip(entry["pass@1"]["seeds"], ns)]
            entry["pass@1"]["se_mean"] = math.sqrt(sum(se2)) / len(se2)
        out[arm] = entry
    return out


def seeds_table(summary: dict) -> str:
    """One line per arm: every run's pass@1, their mean, the evaluation's standard error of it, the
    standard deviation over runs (seeds), and the cons@k and format means."""
    arms = list(summary)
    if not arms:
        return "(no arm common to every run)"
    n = len(summary[arms[0]]["runs"])
    cons = [k for k in summary[arms[0]] if k.startswith("cons@")]
    head = (f"{'arm':16s}" + "".join(f"{'run ' + str(i):>8s}" for i in range(n))
            + f"{'mean':>8s}{'eval se':>8s}{'seed sd':>8s}" + "".join(f"{k:>8s}" for k in cons) + f"{'format':>8s}")
    rows = [head]
    for arm in arms:
        e = summary[arm]
        p = e["pass@1"]
        se = f"{p['se_mean']:8.3f}" if "se_mean" in p else f"{'-':>8s}"
        sd = f"{p['std']:8.3f}" if n > 1 else f"{'-':>8s}"
        rows.append(f"{arm:16s}" + "".join(f"{v:8.3f}" for v in p["seeds"]) + f"{p['mean']:8.3f}{se}{sd}"
                    + "".join(f"{e[k]['mean']:8.3f}" for k in cons) + f"{e['format']['mean']:8.3f}")
    return "\n".join(rows)


def plot_seeds(summary: dict, path: str | Path) -> Path | None:
    """Left: training reward of each run's GRPO stages (one colour per stage, one line per run); right:
    held-out pass@1 per arm, the mean over runs (bar) ± its standard error over runs (std/sqrt(runs);
    the evaluation's own SE for one run), and each run (dots)."""
    plt = _pyplot()
    if plt is None:
        return None
    arms = list(summary)
    runs = [Path(r) for r in summary[arms[0]]["runs"]] if arms else []
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    _reward_curves(ax1, runs, alpha=0.8, lw=1)
    ax1.set(xlabel="GRPO step", ylabel="training reward (mean)", title=f"RL stages, {len(runs)} runs")
    if ax1.get_legend_handles_labels()[0]:
        ax1.legend()
    for i, arm in enumerate(arms):
        p = summary[arm]["pass@1"]
        ax2.bar(i, p["mean"], width=0.6, color="C0", alpha=0.6, yerr=p.get("se_seeds", p.get("se_mean")), capsize=4)
        ax2.plot([i] * len(p["seeds"]), p["seeds"], "o", color="C3", ms=5)
    ax2.set_xticks(range(len(arms)), arms, rotation=15)
    what = "SE over runs" if len(runs) > 1 else "eval SE"
    ax2.set(ylabel="held-out pass@1", title=f"per arm: mean ± {what} (bars), each run (dots)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m r1core.train.study",
                                 description="Summarise several pipeline.recipe=study runs (one per seed).")
    ap.add_argument("runs", nargs="+", help="the runs' run.out directories")
    ap.add_argument("--figure", help="write the per-arm pass@1 figure here (.png)")
    ap.add_argument("--json", help="write the summary here")
    args = ap.parse_args(argv)
    summary = summarize_seeds(args.runs)
    print(seeds_table(summary))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    if args.figure:
        png = plot_seeds(summary, args.figure)
        print(f"figure: {png}" if png else "figure: matplotlib is not installed")


if __name__ == "__main__":
    main()
