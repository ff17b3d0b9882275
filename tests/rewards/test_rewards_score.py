"""score(): weighted [N, K] rewards and columns; registry; the TRL adapter; the pool's recovery."""
import os
import signal

import pytest
import torch

import r1core.rewards as R
from r1core.rewards import RewardBatch, get, names, register, score, trl_reward
from r1core.rewards.pool import get_pool

GOOD = "<think>3 + 4</think> <answer>7</answer>"
BAD = "<think>3 + 4</think> the result is 8"


def test_score_shapes_and_weighted_total():
    b = score({"accuracy": 1.0, "format": 0.5, "tag_count": 0.25}, [GOOD, BAD, GOOD], answer=["7", "7", "8"])
    assert isinstance(b, RewardBatch) and b.names == ["accuracy", "format", "tag_count"]
    assert b.per_reward.shape == (3, 3) and b.per_reward.dtype == torch.float32
    assert b.per_reward.tolist() == [[1.0, 1.0, 1.0], [0.0, 0.0, 0.5], [0.0, 1.0, 1.0]]
    torch.testing.assert_close(b.total, b.per_reward @ torch.tensor([1.0, 0.5, 0.25]))
    assert b.means() == pytest.approx({"accuracy": 1 / 3, "format": 2 / 3, "tag_count": 2.5 / 3})


def test_score_columns_broadcast_and_routing():
    comps = ["<think>我们</think><answer>2 + 3</answer>", "<think>we add</think><answer>5</answer>"]
    b = score({"countdown": 1.0, "language": 1.0, "length": 1.0}, comps, numbers=[[2, 3], [2, 3]], target=[5, 5],
              lang="zh", max_len=1000, answer=["unused", "unused"])
    assert b.per_reward.tolist() == [[1.0, 1.0, 1.0], [0.0, 0.0, 1.0]]
    b = score({"format": 1.0}, comps, mode="lenient")
    assert b.per_reward[:, 0].tolist() == [1.0, 1.0]


def test_score_errors():
    with pytest.raises(ValueError, match="weights"):
        score({}, [GOOD])
    with pytest.raises(ValueError, match="unknown 'nope'"):
        score({"nope": 1.0}, [GOOD])
    with pytest.raises(ValueError, match="finite"):
        score({"format": float("nan")}, [GOOD])
    with pytest.raises(ValueError, match="needs column"):
        score({"accuracy": 1.0}, [GOOD])
    with pytest.raises(ValueError, match="expected 2 values"):
        score({"accuracy": 1.0}, [GOOD, BAD], answer=["7"])
    with pytest.raises(ValueError, match="mode"):
        score({"format": 1.0}, [GOOD], mode="loose")
    with pytest.raises(TypeError, match="completion"):
        score({"format": 1.0}, [42])
    assert score({"format": 1.0}, []).per_reward.shape == (0, 1)


def test_conversational_completions():
    conv = [{"role": "assistant", "content": GOOD}]
    assert get("format")(conv) == 1.0
    assert score({"accuracy": 1.0}, [conv], answer=["7"]).total.tolist() == [1.0]


def test_registry_and_custom_reward():
    assert {"accuracy", "format", "tag_count", "language", "countdown", "length"} <= set(names())
    assert R.format is R.format_reward and get("format") is R.format_reward

    @register("test_always_raises", overwrite=True)
    def always_raises(completion, *, answer):
        raise RuntimeError("boom")

    @register("test_out_of_range", overwrite=True)
    def out_of_range(completion):
        return 7.0 if completion else float("nan")

    assert always_raises("x", answer="1") == 0.0               # never raises on text
    assert get("test_out_of_range")("x") == 1.0 and get("test_out_of_range")("") == 0.0
    with pytest.raises(TypeError, match="missing column"):
        always_raises("x")
    with pytest.raises(ValueError, match="already registered"):
        register("format", lambda c: 1.0)
    with pytest.raises(ValueError, match="unknown"):
        get("no such reward")
    b = score({"test_out_of_range": 2.0, "format": 1.0}, [GOOD] * 600)  # custom rewards: serial
    assert b.total.tolist() == [3.0] * 600
    with pytest.raises(ValueError, match="built-in"):
        score({"test_out_of_range": 1.0}, [GOOD], parallel=True)


def test_trl_adapter():
    fn = trl_reward("accuracy")
    assert fn.__name__ == "accuracy_reward"
    assert fn(["p", "p"], [GOOD, BAD], answer=["7", "7"], trainer_state=None, completion_ids=[[1], [2]]) == [1.0, 0.0]
    conv = [[{"role": "assistant", "content": GOOD}], [{"role": "assistant", "content": BAD}]]
    fn = trl_reward("accuracy", columns={"answer": "solution"})
    assert fn(["p", "p"], conv, solution=["so it is \\boxed{7}", "#### 8"]) == [1.0, 0.0]
    assert trl_reward("format", mode="lenient")(["p"], ["x <think>a</think><answer>1</answer>"]) == [1.0]
    with pytest.raises(ValueError, match="unknown"):
        trl_reward("format", nonsense=1)


def test_pool_replaces_a_worker_killed_from_outside():
    pool = get_pool()
    pool.warm()
    w = pool._checkout()
    pool._checkin(w)
    os.kill(w.proc.pid, signal.SIGKILL)
    w.proc.wait()
    assert pool.call(("equiv", "x^2-1", "(x+1)(x-1)"), timeout=30.0) is True
    assert pool.call(("equiv", "x^2-1", "(x+1)(x+1)"), timeout=30.0) is False
