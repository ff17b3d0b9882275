"""The bench runner: `r1core bench [--ops a,b] [--quick] [--device cpu|cuda] [--out DIR] [--cases DIR]`.

Loads every case file bench_<op>.py of the case folder (default: benches/ of the source tree; the
folder is not an installed package and r1core never imports it), builds its cases for the device,
times each (median of repeated calls), measures peak extra memory, prints one table per case file
(with a line before each saying how many cases and about how long) and writes CSV + JSON under
benches/results/<machine>/ in a source tree, or ./bench-results/<machine>/ when run from an installed
wheel, with the machine, versions, git commit and the exact command.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as _dt
import functools
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

from r1core.bench.case import Case
from r1core.bench.timing import peak_extra_bytes, quantiles, time_fn

CASES_ENV = "R1CORE_BENCH_CASES"  # a folder of bench_<op>.py files (overrides the default below)


def cases_dir(path: str | os.PathLike | None = None) -> Path:
    """The folder of case files: `path`, else $R1CORE_BENCH_CASES, else ./benches, else the source
    tree's benches/ (next to the r1core package in a checkout or an editable install), else the copy an
    installed wheel carries as r1core/bench/cases/ (in the source tree, a symlink to benches/)."""
    if path is not None:
        if not Path(path).is_dir():
            raise FileNotFoundError(f"--cases: {path} is not a folder")
        return Path(path)
    here = Path(__file__).resolve().parent
    for cand in (os.environ.get(CASES_ENV), Path.cwd() / "benches", here.parents[1] / "benches", here / "cases"):
        if cand and any(Path(cand).glob("bench_*.py")):
            return Path(cand)
    raise FileNotFoundError("no bench case folder: run from the r1core source tree, or pass --cases DIR "
                            f"(or set {CASES_ENV})")


def machine_slug(device: torch.device) -> str:
    """'h100', 'h200', … for GPUs; 'cpu' for CPU runs (the CPU model is in the JSON)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device).lower()
        m = re.search(r"\b([a-z]\d{2,4}[a-z]?)\b", name.replace("nvidia", ""))
        return m.group(1) if m else re.sub(r"[^a-z0-9]+", "-", name).strip("-")
    return "cpu"


def machine_info(device: torch.device) -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    try:  # the installed version, without importing triton (that would fix its interpreter mode)
        info["triton"] = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        info["triton"] = None
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                        cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        info["commit"] = None
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def bench_modules(folder: Path | None = None) -> list[str]:
    """The case files' names (bench_<op>) in the case folder."""
    return sorted(f.stem for f in cases_dir(folder).glob("bench_*.py"))


def load_cases_module(name: str, folder: Path | None = None):
    """Import the case file <folder>/<name>.py by path (as module `benches.<name>` when the folder is
    the `benches` package of the source tree, so its own `python -m benches.<name>` entry points agree)."""
    path = cases_dir(folder) / f"{name}.py"
    mod_name = f"benches.{name}" if path.parent.name == "benches" else f"r1core_bench_cases.{name}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[mod_name]
        raise
    return mod


def run_case(case: Case, device: torch.device, budget_s: float) -> dict:
    row = {"op": case.op, "shape": case.shape, "dtype": case.dtype, "backend": case.backend, "note": case.note}
    try:
        times = time_fn(case.fn, device, budget_s=budget_s)
        p20, p50, p80 = quantiles(times)
        row.update(p20_ms=p20 * 1e3, median_ms=p50 * 1e3, p80_ms=p80 * 1e3, reps=len(times))
        row["gb_s"] = case.bytes / p50 / 1e9 if case.bytes else None
        row["tflop_s"] = case.flops / p50 / 1e12 if case.flops else None
        peak = peak_extra_bytes(case.fn, device)
        row["peak_mib"] = peak / 2**20 if peak is not None else None
    except Exception as e:  # a failing peer must not hide the others' numbers
        row["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:200]
        if os.environ.get("R1CORE_BENCH_DEBUG"):
            traceback.print_exc()
    row["baseline"] = case.baseline
    row.update(case.extra)
    return row


def add_speedups(rows: list[dict]) -> None:
    base = {(r["op"], r["shape"], r["dtype"]): r.get("median_ms") for r in rows if r["baseline"]}
    for r in rows:
        b = base.get((r["op"], r["shape"], r["dtype"]))
        r["speedup"] = b / r["median_ms"] if b and r.get("median_ms") else None


def fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def results_dir(folder: Path, device: torch.device) -> Path:
    """Where results go without --out: <case folder>/results/<machine>/ in a source tree (benches/results/),
    ./bench-results/<machine>/ when the cases are the copy inside an installed r1core (never into
    site-packages, where results would vanish with the next install)."""
    real = folder.resolve()
    if real == (Path(__file__).parent / "cases").resolve() and real.name != "benches":   # a wheel's real copy
        return Path.cwd() / "bench-results" / machine_slug(device)
    return folder / "results" / machine_slug(device)


@contextlib.contextmanager
def quiet_progress_bars():
    """The table is the output: progress bars of transformers / huggingface_hub / r1core's own runs
    (all tqdm) would be interleaved with its rows.  tqdm reads TQDM_DISABLE when it is imported, so an
    already-imported tqdm is switched off here too (and restored after)."""
    saved = {k: os.environ.get(k) for k in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY")}
    os.environ.update(TQDM_DISABLE="1", HF_HUB_DISABLE_PROGRESS_BARS="1", TRANSFORMERS_VERBOSITY="error")
    try:
        from tqdm import std
    except ImportError:
        std = None
    init = std.tqdm.__init__ if std else None
    if std:
        std.tqdm.__init__ = functools.partialmethod(init, disable=True)
    try:
        yield
    finally:
        if std:
            std.tqdm.__init__ = init
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def print_table(rows: list[dict]) -> None:
    cols = [("op", 26, "s"), ("shape", 28, "s"), ("dtype", 5, "s"), ("backend", 14, "s"), ("median_ms", 10, ".3f"),
            ("gb_s", 8, ".1f"), ("tflop_s", 8, ".2f"), ("speedup", 8, ".2f"), ("peak_mib", 9, ".0f")]
    print("  ".join(f"{n:>{w}}" if s != "s" else f"{n:<{w}}" for n, w, s in cols))
    for r in rows:
        cells = []
        for n, w, s in cols:
            v = r.get(n)
            cells.append(f"{v:<{w}}" if s == "s" else f"{fmt(v, s):>{w}}")
        line = "  ".join(cells)
        if r.get("error"):
            line += f"  ERROR {r['error']}"
        print(line, flush=True)
    for note in dict.fromkeys(r.get("note") for r in rows if r.get("note")):
        print(f"#   note: {note}", flush=True)


def run_all(names: list[str], folder: Path, device: torch.device, args) -> list[dict]:
    """Build and time every case of each case file, printing a line before each file (how many cases,
    at least how long) and its table after."""
    rows: list[dict] = []
    t0 = time.perf_counter()
    for i, name in enumerate(names):
        try:
            cases = load_cases_module(name, folder).cases(device, args.quick)
        except Exception as e:
            print(f"# {name}: could not build cases: {type(e).__name__}: {e}", flush=True)
            continue
        if not cases:
            print(f"# [{i + 1}/{len(names)}] {name}: no case at {'the quick' if args.quick else 'these'} shapes "
                  f"on {device.type}", flush=True)
            continue
        # each case: about --budget s of timing, plus a warm-up and one peak-memory call
        print(f"# [{i + 1}/{len(names)}] {name}: {len(cases)} cases, at least {len(cases) * (args.budget + 0.5):.0f} s "
              f"({time.perf_counter() - t0:.0f} s so far)", flush=True)
        group: list[dict] = []
        for case in cases:
            group.append(run_case(case, device, args.budget))
            del case
        add_speedups(group)
        print_table(group)
        rows.extend(group)
        del cases
        torch.cuda.empty_cache() if device.type == "cuda" else None
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="r1core bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ops", default="", help="comma-separated bench names (e.g. grpo_loss,advantage); default: all")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    p.add_argument("--quick", action="store_true", help="small shapes only (a smoke run)")
    p.add_argument("--budget", type=float, default=2.0, help="seconds of timing per case (default 2)")
    p.add_argument("--out", default=None, help="results folder (default: benches/results/<machine>/ in a source tree, "
                   "./bench-results/<machine>/ from an installed wheel)")
    p.add_argument("--cases", default=None, help=f"folder of bench_<op>.py case files (default: benches/; ${CASES_ENV})")
    p.add_argument("--no-save", action="store_true", help="print only")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    wanted = {w.strip() for w in args.ops.split(",") if w.strip()}
    try:
        folder = cases_dir(args.cases)
    except FileNotFoundError as e:
        p.error(str(e))
    available = bench_modules(folder)
    names = [n for n in available if not wanted or n.removeprefix("bench_") in wanted]
    if wanted and not names:
        p.error(f"--ops: no bench named {sorted(wanted)}; have {[n.removeprefix('bench_') for n in available]}")
    info = machine_info(device)
    info["command"] = "r1core bench " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"# r1core bench on {info.get('gpu') or info['cpu']} | torch {info['torch']} | triton {info['triton']}"
          f" | commit {info['commit']}", flush=True)
    with quiet_progress_bars():
        rows = run_all(names, folder, device, args)
    if not args.no_save and rows:
        out = Path(args.out) if args.out else results_dir(folder, device)
        out.mkdir(parents=True, exist_ok=True)
        stem = "bench-" + ("-".join(sorted(wanted)) if wanted else "all") + ("-quick" if args.quick else "")
        keys = sorted({k for r in rows for k in r})
        with open(out / f"{stem}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)
        stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        (out / f"{stem}.json").write_text(json.dumps({"machine": info, "when": stamp, "rows": rows}, indent=1))
        print(f"# wrote {out / stem}.csv and .json", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
