"""Reward throughput: completions/s of format + accuracy on typical ~1 KB completions with numeric
answers (serial in this process vs spread over the worker pool), the symbolic path (answers that
need sympy), and the worst adversarial input of the test-suite's list.

Issue 15 adds, per accuracy backend ("builtin", "math_verify", "auto" = exact fast path + math-verify
as the authority): the median latency of one boxed-number call, completions/s on ~1 KB boxed-number
completions at the trainer's batch sizes (64 = configs/default.yaml's 8x8, 1024 = the GPU config's
64x16) serial and pooled, completions/s on edge-case answers (the kinds table), and agreement /
false positives on tests/rewards/kinds_table.py (in `extra`).

Prediction: the numeric path is extraction (str.rfind from the end) + normalisation (a dozen
regex substitutions on a ~10-character answer) + our parser's exact Fraction fold: ~20-40 µs per
completion in CPython, so ~25-50k/s on one core, and the pool adds pickling (~1 KB per item each
way) for a < 2x gain on 2 cores.  The symbolic path is dominated by sympy (~1-5 ms per check).
Numbers on a shared CPU are noisy; `extra` carries completions_per_s (wall, median) and the
caller's CPU time per completion (what one core would sustain unloaded, for the serial rows).
"""
from __future__ import annotations

import random
import statistics
import time

import torch

from r1core.bench import Case

ADVERSARIAL_LIMIT_S = 1.0


def typical_batch(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """~1 KB completions in the R1-Zero format with integer / decimal / fraction answers; about half
    right, some boxed, some in <answer>, a few without any answer."""
    rng = random.Random(seed)
    words = "we add the two numbers then multiply by carry the digit so that gives check again".split()
    comps, answers = [], []
    for i in range(n):
        a, b = rng.randint(10, 999), rng.randint(2, 99)
        kind = i % 4
        ref = {0: str(a * b), 1: f"{a}/{b}", 2: f"{a / 8:.3f}", 3: f"{a * b * 1000:,}"}[kind]
        said = {0: str(a * b), 1: f"\\frac{{{a}}}{{{b}}}", 2: f"{a / 8:.3f}", 3: str(a * b * 1000)}[kind]
        if rng.random() < 0.5:
            said = str(rng.randint(1, 10**6))
        body = []
        while sum(map(len, body)) < 900:
            body.append(rng.choice(words) if rng.random() < 0.7 else str(rng.randint(0, 9999)))
        think = " ".join(body)
        tail = (f"<answer>{said}</answer>" if i % 3 else f"<answer>The answer is $\\boxed{{{said}}}$</answer>")
        if i % 17 == 0:
            tail = "I am not sure."
        comps.append(f"<think>{think}</think> {tail}")
        answers.append(ref)
    return comps, answers


def symbolic_batch(n: int) -> tuple[list[str], list[str]]:
    pairs = [("2x+2", "2(x+1)"), ("x^2-1", "(x-1)(x+1)"), ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"),
             ("\\sin^2 x+\\cos^2 x", "1"), ("(x+1)^2", "x^2+1"), ("3\\pi/2", "\\frac{3\\pi}{2}")]
    comps = [f"<think>work</think> <answer>\\boxed{{{pairs[i % 6][0]}}}</answer>" for i in range(n)]
    return comps, [pairs[i % 6][1] for i in range(n)]


def boxed_batch(n: int, seed: int = 1) -> tuple[list[str], list[str]]:
    """~1 KB R1-Zero completions whose answer is a boxed integer inside <answer>; half right."""
    rng = random.Random(seed)
    words = "we add the two numbers then multiply by carry the digit so that gives check again".split()
    comps, answers = [], []
    for i in range(n):
        ref = rng.randint(0, 10**6)
        said = ref if i % 2 else ref + rng.randint(1, 99)
        body = []
        while sum(map(len, body)) < 950:
            body.append(rng.choice(words) if rng.random() < 0.7 else str(rng.randint(0, 9999)))
        comps.append(f"<think>{' '.join(body)}</think> <answer>The answer is $\\boxed{{{said}}}$</answer>")
        answers.append(str(ref))
    return comps, answers


def _kinds_table() -> list[tuple[str, str, str, bool]]:
    """tests/rewards/kinds_table.py (loaded by path: tests are not a package; a wheel ships a copy)."""
    import importlib.util
    from pathlib import Path

    # beside this file in an installed wheel (r1core/bench/cases/kinds_table.py: benches/kinds_table.py
    # is a link to the test table), else the source tree's tests/
    here = Path(__file__).parent
    path = next((p for p in (here / "kinds_table.py", here.resolve().parents[1] / "tests" / "rewards" /
                             "kinds_table.py") if p.is_file()), here / "kinds_table.py")
    spec = importlib.util.spec_from_file_location("_kinds_table", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.TABLE


def _unmarked(completion: str) -> str:
    return "bare" if "\\boxed" in completion or "answer" in completion.lower() else "last"


def edge_batch(n: int) -> tuple[list[str], list[str]]:
    """The kinds table's completions (prose ones given a marker), repeated to n: answers that need
    more than the numeric fast path."""
    rows = [(c if _unmarked(c) == "bare" else f"<answer>{c}</answer>", g) for _, c, g, _ in _kinds_table()]
    rows = [rows[i % len(rows)] for i in range(n)]
    return [c for c, _ in rows], [g for _, g in rows]


def _agreement_case(backend: str) -> Case:
    from r1core.rewards import accuracy

    table = _kinds_table()
    extra: dict = {"rows": len(table)}

    def fn():
        agree = fp = fn_ = 0
        misses = []
        for kind, comp, gold, want in table:
            got = accuracy(comp, answer=gold, backend=backend, unmarked=_unmarked(comp)) == 1.0
            agree += got == want
            fp += got and not want
            fn_ += want and not got
            if got != want:
                misses.append(f"{'FP' if got else 'FN'}:{kind}")
        extra.update(agreement=round(agree / len(table), 4), false_positives=fp, false_negatives=fn_,
                     misses=misses)
        return agree

    return Case(op="accuracy agreement", shape=f"kinds table {len(table)} rows", dtype="text", backend=backend,
                fn=fn, baseline=backend == "builtin", extra=extra,
                note="agreement / false_positives / false_negatives in extra (tests/rewards/kinds_table.py)")


def _latency_case(backend: str) -> Case:
    from r1core.rewards import accuracy

    comps, answers = boxed_batch(64)
    k = [0]

    from r1core.rewards.accuracy import accuracy_cache

    def fn():  # one call, cycling through right and wrong answers; uncached (the verdict cache emptied)
        i = k[0] = (k[0] + 1) % 64
        accuracy_cache.cache_clear()
        return accuracy(comps[i], answer=answers[i], backend=backend)

    return Case(op="accuracy one call", shape="~1KB boxed number", dtype="text", backend=backend, fn=fn,
                baseline=backend == "builtin", note="median latency of one accuracy call (target <= 0.1 ms)")


def _throughput_case(op: str, shape: str, backend: str, comps, answers, *, parallel: bool, baseline: bool,
                     accuracy_backend: str | None = None) -> Case:
    from r1core.rewards import score

    times: list[float] = []
    cpu: list[float] = []
    extra: dict = {"completions": len(comps)}

    opts = {} if accuracy_backend is None else {"backend": accuracy_backend}

    from r1core.rewards.accuracy import accuracy_cache

    def fn():
        accuracy_cache.cache_clear()  # measure judging, not the verdict cache (repeats would all hit it)
        t0, c0 = time.perf_counter(), time.process_time()
        out = score({"format": 0.1, "accuracy": 1.0}, comps, answer=answers, parallel=parallel, **opts)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        extra["completions_per_s"] = round(len(comps) / statistics.median(times))
        # CPU of this (the caller's) process per completion: on a loaded machine wall time overstates
        # the cost; in pool mode the workers' CPU is not included
        extra["caller_cpu_us_per_completion"] = round(statistics.median(cpu) / len(comps) * 1e6, 1)
        return out

    return Case(op=op, shape=shape, dtype="text", backend=backend, fn=fn, baseline=baseline,
                bytes=sum(len(c.encode()) for c in comps), extra=extra,
                note="format+accuracy; completions/s in completions_per_s")


def _worst_adversarial_case() -> Case:
    from r1core.rewards import get

    mb = 1 << 20
    inputs = {
        "power tower": "\\boxed{9^{9^{9^{9}}}}", "python power chain": "<answer>2**2**2**2**2**2</answer>",
        "huge degree": "\\boxed{(x^{1000})^{1000}}",
        "deep braces": "\\boxed{" + "{" * 100_000 + "1" + "}" * 100_000 + "}",
        "1 MB prose": "word " * (mb // 5) + "\\boxed{42}", "1 MB of tags": "<answer>" * (mb // 8),
        "NUL bytes": "\x00" * mb + "\\boxed{42}", "mixed scripts 1 MB": "我们 это λόγος word " * (mb // 20),
    }
    calls = [("accuracy", {"answer": "x^2"}), ("format", {}), ("language", {"lang": "zh"}),
             ("countdown", {"numbers": [1, 2, 3], "target": 6})]
    worst = (0.0, "")
    for name, text in inputs.items():  # find the slowest (input, reward) once, then time that pair
        for reward, kw in calls:
            t0 = time.perf_counter()
            get(reward)(text, **kw)
            dt = time.perf_counter() - t0
            if dt > worst[0]:
                worst = (dt, f"{reward} on {name}")
    reward, _, name = worst[1].partition(" on ")
    text, kw = inputs[name], dict(calls)[reward]
    fn_reward = get(reward)
    extra = {"worst": worst[1], "limit_s": ADVERSARIAL_LIMIT_S}
    return Case(op="rewards adversarial", shape=f"worst of {len(inputs)}x{len(calls)}", dtype="text",
                backend="serial", fn=lambda: fn_reward(text, **kw), baseline=True, bytes=len(text.encode()),
                extra=extra, note=f"slowest (input, reward): {worst[1]}; limit {ADVERSARIAL_LIMIT_S}s")


def cases(device: torch.device, quick: bool) -> list[Case]:
    import os

    from r1core.rewards import pool
    from r1core.rewards.pool import get_pool

    # workers judge without their verdict cache (the caller clears its own per run): repeated runs
    # over the same completions must measure judging, not cache hits
    if os.environ.get("R1CORE_REWARD_CACHE") != "0":
        os.environ["R1CORE_REWARD_CACHE"] = "0"
        if pool._POOL is not None:
            pool._POOL.close()
    get_pool().warm()  # worker start-up is not what we time
    n = 1024 if quick else 8192
    comps, answers = typical_batch(n)
    shape = f"N={n} ~1KB numeric"
    out = [
        _throughput_case("rewards format+accuracy", shape, "serial", comps, answers, parallel=False, baseline=True),
        _throughput_case("rewards format+accuracy", shape, f"pool x{get_pool().size}", comps, answers,
                         parallel=True, baseline=False),
    ]
    ns = 64 if quick else 256
    scomps, sanswers = symbolic_batch(ns)
    sshape = f"N={ns} symbolic"
    out += [
        _throughput_case("rewards format+accuracy", sshape, "serial", scomps, sanswers, parallel=False, baseline=True),
        _throughput_case("rewards format+accuracy", sshape, f"pool x{get_pool().size}", scomps, sanswers,
                         parallel=True, baseline=False),
        _worst_adversarial_case(),
    ]
    # issue 15: the accuracy backends side by side
    from r1core.rewards.accuracy import _math_verify_available

    backends = ["builtin", "auto"] + (["math_verify"] if _math_verify_available() else [])
    out += [_agreement_case(b) for b in backends]
    out += [_latency_case(b) for b in backends]
    pool = f"pool x{get_pool().size}"
    for n in ((64,) if quick else (64, 1024)):
        bcomps, banswers = boxed_batch(n)
        for b in backends:
            out.append(_throughput_case("format+accuracy boxed", f"N={n} ~1KB", f"{b} serial", bcomps, banswers,
                                        parallel=False, baseline=b == "builtin", accuracy_backend=b))
            if n >= 512:
                out.append(_throughput_case("format+accuracy boxed", f"N={n} ~1KB", f"{b} {pool}", bcomps,
                                            banswers, parallel=True, baseline=False, accuracy_backend=b))
    ne = 128 if quick else 512
    ecomps, eanswers = edge_batch(ne)
    for b in backends:
        out.append(_throughput_case("format+accuracy edge", f"N={ne} kinds", f"{b} serial", ecomps, eanswers,
                                    parallel=False, baseline=b == "builtin", accuracy_backend=b))
        out.append(_throughput_case("format+accuracy edge", f"N={ne} kinds", f"{b} {pool}", ecomps, eanswers,
                                    parallel=True, baseline=False, accuracy_backend=b))
    return out
