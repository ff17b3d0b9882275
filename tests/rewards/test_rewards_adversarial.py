"""Hostile model output: every reward returns within its time limit and the process survives.

The pool is warmed first, so the timings measure the call, not a worker's start-up.  Limits are
asserted with slack for a shared 2-core CI machine (the point is "bounded", not "fast")."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from r1core.rewards import accuracy, get, score
from r1core.rewards.pool import get_pool

MB = 1 << 20
SLACK = 1.5  # seconds over the limit tolerated on a loaded machine

ADVERSARIAL = {
    "power tower": "\\boxed{9^{9^{9^{9}}}}",
    "python power chain": "<answer>2**2**2**2**2**2</answer>",
    "symbolic tower": "\\boxed{x^{x^{x^{x}}}}",
    "huge degree": "\\boxed{(x^{1000})^{1000}}",
    "huge literal": "\\boxed{" + "9" * 5000 + "}",
    "scientific overflow": "\\boxed{1e999999999}",
    "deep braces": "\\boxed{" + "{" * 100_000 + "1" + "}" * 100_000 + "}",
    "deep parentheses": "\\boxed{" + "(" * 2000 + "1" + ")" * 2000 + "}",
    "nested fractions": "\\boxed{" + "\\frac{1}{" * 300 + "2" + "}" * 300 + "}",
    "1 MB prose": "word " * (MB // 5) + "\\boxed{42}",
    "1 MB of boxes": "\\boxed{" * (MB // 7),
    "1 MB of tags": "<answer>" * (MB // 8) + "</think>" * 1000,
    "1 MB answer is": "the answer is " * (MB // 14),
    "NUL bytes": "\x00" * MB + "\\boxed{4\x002}",
    "unterminated tags": "<think> blah <answer> 42 \\boxed{7",
    "mixed scripts": "<think>我们 calculate это λόγος 한국어 ١٢٣</think><answer>42</answer>",
    "lone surrogate": "<think>\ud800 abc</think><answer>\udfff</answer>",
    "private use": "\ue000" * 1000 + "\\boxed{\ue001}",
    "huge exponent in sci": "\\boxed{1.5\\times10^{99999}}",
    "factorial": "\\boxed{1000000!}",
}
CALLS = [
    ("accuracy", {"answer": "42"}), ("accuracy", {"answer": "x^2"}), ("format", {}), ("tag_count", {}),
    ("language", {"lang": "zh"}), ("countdown", {"numbers": [1, 2, 3], "target": 6}), ("length", {"max_len": 100}),
]


@pytest.fixture(scope="module", autouse=True)
def warm_pool():
    get_pool().warm()


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_adversarial_outputs_are_bounded(name):
    text = ADVERSARIAL[name]
    get_pool().warm()  # a worker replaced by an earlier kill test may still be starting: not timed here
    for reward, kw in CALLS:
        t0 = time.perf_counter()
        value = get(reward)(text, **kw)
        elapsed = time.perf_counter() - t0
        assert 0.0 <= value <= 1.0
        assert elapsed < 1.0 + SLACK, f"{reward} took {elapsed:.2f}s on {name}"


def test_right_answer_inside_hostile_text_still_scores():
    assert accuracy(ADVERSARIAL["1 MB prose"], answer="42") == 1.0
    assert accuracy(ADVERSARIAL["NUL bytes"], answer="42") == 1.0  # NUL dropped by normalisation


def test_overrunning_worker_is_killed_and_replaced():
    pool = get_pool()
    before = pool.restarts
    t0 = time.perf_counter()
    assert pool.call(("sleep", 30.0), timeout=0.3) is None
    assert time.perf_counter() - t0 < 0.3 + SLACK
    assert pool.restarts == before + 1
    assert pool.call(("equiv", "2x+2", "2(x+1)"), timeout=30.0) is True  # the pool still works


def test_timeout_from_threads():
    """The limit is a kill, not signal.alarm: it works from any thread, many at once."""
    pool = get_pool()
    results = []

    def job(i):
        if i % 2:
            return pool.call(("sleep", 30.0), timeout=0.2)
        return accuracy("\\boxed{x^2-1}", answer="(x-1)(x+1)", timeout=30.0)

    with ThreadPoolExecutor(4) as ex:
        results = list(ex.map(job, range(4)))
    assert results == [1.0, None, 1.0, None]
    assert threading.active_count() >= 1


def test_batch_with_a_hanging_item():
    """score_items: an item that overruns comes back None (score() then recomputes it serially), its
    worker is replaced, the rest of its chunk is re-queued and every other item keeps its result."""
    pool = get_pool()
    pool.warm()  # both workers ready: the other one finishes the batch while the killed one restarts
    before = pool.restarts
    items = [("30" if i == 5 else "0", {}) for i in range(20)]
    t0 = time.perf_counter()
    rows = pool.score_items(["_sleep"], items, limit=1.0, chunk=8)  # "_sleep" exists in workers only
    elapsed = time.perf_counter() - t0
    assert rows == [None if i == 5 else [1.0] for i in range(20)], rows
    assert pool.restarts == before + 1
    assert elapsed < 1.0 + 2 * SLACK
    items = [(f"\\boxed{{{i}}}", {"accuracy": {"answer": str(i), "timeout": 1.0}}) for i in range(40)]
    assert pool.score_items(["accuracy"], items, limit=5.0, chunk=8) == [[1.0]] * 40


def test_parallel_score_matches_serial():
    comps = ["<think>a</think><answer>%d</answer>" % (i % 7) if i % 3 else "\\boxed{%d}" % (i % 7)
             for i in range(600)]
    answers = [str(i % 5) for i in range(600)]
    par = score({"accuracy": 1.0, "format": 0.5}, comps, answer=answers, parallel=True)
    ser = score({"accuracy": 1.0, "format": 0.5}, comps, answer=answers, parallel=False)
    assert par.per_reward.tolist() == ser.per_reward.tolist()
    assert par.total.tolist() == ser.total.tolist()
    assert par.per_reward[:, 0].sum() > 0 and par.per_reward[:, 1].sum() > 0
