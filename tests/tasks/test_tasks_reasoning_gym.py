"""reasoning-gym tasks through r1core's path: generation, split, the verifier in the reward pool,
mixtures, bad input.  The oracle is reasoning-gym's own score_answer, called here directly."""
import os
import sys
from pathlib import Path

import pytest

rg = pytest.importorskip("reasoning_gym")

from r1core.rewards import get, pool, rgym  # noqa: E402
from r1core.tasks import evaluate, get_task  # noqa: E402

GENERATORS = ["basic_arithmetic", "chain_sum", "leg_counting", "gcd", "lcm", "prime_factorization",
              "fraction_simplification", "simple_equations", "letter_counting", "number_sorting", "word_sorting",
              "spell_backward", "count_bits", "decimal_arithmetic", "base_conversion", "family_relationships"]


def _completion(answer: str) -> str:
    return f"<think>working</think> <answer>{answer}</answer>"


def _wrong(examples, i):
    """A wrong answer for examples[i]: the gold answer of another problem that differs from it."""
    return next(o.answer for o in examples[i + 1:] + examples[:i] if o.answer != examples[i].answer)


@pytest.mark.parametrize("name", GENERATORS)
def test_gold_scores_one_wrong_scores_zero(name):
    task = get_task(f"reasoning_gym:{name}")
    examples = task.test(6)
    ds = rg.create_dataset(name, seed=0, size=1)
    completions = [c for i, e in enumerate(examples) for c in (_completion(e.answer), _completion(_wrong(examples, i)))]
    rb = task.reward(completions, examples, group_size=2)
    j = rb.names.index("reasoning_gym")
    for i, e in enumerate(examples):
        assert ds.score_answer(e.answer, e.extra["rg_entry"]) == 1.0      # the oracle agrees the gold is gold
        assert rb.per_reward[2 * i, j].item() == 1.0, (name, e.answer)
        wrong = _wrong(examples, i)
        assert rb.per_reward[2 * i + 1, j].item() == float(ds.score_answer(wrong, e.extra["rg_entry"]) >= 1.0) == 0.0


def test_accuracy_reward_agrees_with_score_answer():
    """r1core's own accuracy reward against reasoning-gym's verifier on gold and wrong answers of every
    generator above: 320/320 (before the <answer>-block-is-the-gold rule, 319: a word_sorting list of
    words read as prose)."""
    accuracy = get("accuracy")
    agree = total = 0
    for name in GENERATORS:
        examples = get_task(f"reasoning_gym:{name}").test(10)
        ds = rg.create_dataset(name, seed=0, size=1)
        for i, e in enumerate(examples):
            for cand in (e.answer, _wrong(examples, i)):
                ours = accuracy(_completion(cand), answer=e.answer) >= 1.0
                theirs = ds.score_answer(cand, e.extra["rg_entry"]) >= 1.0
                agree += ours == theirs
                total += 1
    print(f"accuracy vs score_answer: {agree}/{total} = {agree / total:.3f}")
    assert agree / total >= 0.99


def test_split_is_disjoint_seeded_and_prefix_stable():
    task = get_task("reasoning_gym:leg_counting", max_animals=4)
    test = task.test(30)
    assert len({e.question for e in test}) == 30
    assert [e.question for e in task.test(10)] == [e.question for e in test[:10]]
    train = task.train(60, seed=1)
    assert not {e.question for e in train} & {e.question for e in test}
    assert [e.question for e in train] == [e.question for e in get_task("reasoning_gym:leg_counting", max_animals=4)
                                           .train(60, seed=1)]
    assert [e.question for e in train] != [e.question for e in task.train(60, seed=2)]
    assert "<answer>" in test[0].prompt and test[0].prompt.endswith("Assistant:")   # R1's template


def test_bad_names_and_options_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="reasoning_gym:leg_counting"):
        get_task("reasoning_gym:no_such_generator")
    with pytest.raises(ValueError, match="unknown option 'nope'.*max_animals"):
        get_task("reasoning_gym:leg_counting", nope=1)
    with pytest.raises(ValueError, match="'seed' is set by r1core"):
        get_task("reasoning_gym:leg_counting", seed=3)
    with pytest.raises(ValueError, match="bad options"):
        get_task("reasoning_gym:leg_counting", min_animals=5, max_animals=2)


def test_missing_extra_is_one_line_naming_it(monkeypatch):
    monkeypatch.setattr(rgym, "available", lambda: False)
    with pytest.raises(ImportError) as info:
        get_task("reasoning_gym:leg_counting")
    assert "r1core[tasks]" in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)   # the CLI prints ValueErrors as one line


def test_mixture_per_task_pass_at_1_and_refusals():
    m = get_task("mixture", tasks={"reasoning_gym:leg_counting": 1, "countdown": 1, "arithmetic": {"weight": 2}})
    test = m.test(12)
    names = [e.extra["subtask"] for e in test]
    assert names.count("arithmetic") == 6 and names.count("countdown") == 3
    comps = [[_completion(e.answer if e.extra["subtask"] != "countdown" else "0")] for e in test]
    result = evaluate(m, test, comps)
    assert result["pass@1/arithmetic"] == 1.0 and result["pass@1/reasoning_gym:leg_counting"] == 1.0
    assert result["pass@1/countdown"] == 0.0 and result["pass@1"] == pytest.approx(9 / 12)
    train = m.train(40, seed=0)
    assert {e.extra["subtask"] for e in train} == {"reasoning_gym:leg_counting", "countdown", "arithmetic"}
    for bad, msg in (({"arithmetic": 0}, "> 0"), ({"arithmetic": -1}, "> 0"), ({"arithmetic": True}, "> 0"),
                     ({"nope": 1}, "unknown task 'nope'"), ({}, "non-empty"),
                     ({"reasoning_gym:nope": 1}, "unknown reasoning-gym task")):
        with pytest.raises(ValueError, match=msg):
            get_task("mixture", tasks=bad)


def test_mixture_config_is_refused_before_any_work():
    from r1core.train.config import load_config
    with pytest.raises(ValueError, match="task.mixture.chain_sum: the weight"):
        load_config(None, ["task.mixture.arithmetic=1", "task.mixture.chain_sum=0"])
    with pytest.raises(ValueError, match="unknown task"):
        load_config(None, ["task.mixture.arithmetc=1"])
    cfg = load_config(None, ["task.mixture.reasoning_gym:gcd=2", "task.mixture.arithmetic.weight=1",
                             "task.mixture.arithmetic.args.digits=2"])
    assert cfg.task.mixture == {"reasoning_gym:gcd": 2, "arithmetic": {"weight": 1, "args": {"digits": 2}}}


@pytest.fixture
def broken_workers(monkeypatch):
    """Reward workers that import the misbehaving dataset; the pool is closed before and after."""
    helpers = str(Path(__file__).parent / "rg_helpers")
    monkeypatch.syspath_prepend(helpers)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([helpers, os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv(rgym.PRELOAD_ENV, "reasoning_gym,r1core_rg_broken")
    import r1core_rg_broken  # noqa: F401  (registers it here too, for the option check)
    if pool._POOL is not None:
        pool._POOL.close()
    yield
    if pool._POOL is not None:
        pool._POOL.close()
    sys.modules.pop("r1core_rg_broken", None)


def test_hanging_or_raising_generator_and_verifier_cost_one_item(broken_workers, monkeypatch):
    from r1core.tasks.rgym import ReasoningGymTask
    monkeypatch.setattr(ReasoningGymTask, "chunk_timeout", 1.0)
    monkeypatch.setattr(ReasoningGymTask, "item_timeout", 0.0)
    task = get_task("reasoning_gym:r1core_test_broken", test_fraction=0.5)
    examples = task.train(3, seed=0)          # hanging and raising seeds are skipped, not fatal
    assert len(examples) == 3 and all(e.answer == str(int(e.question.split()[2]) + 1) for e in examples)
    e = examples[0]
    comps = [_completion(e.answer), _completion("hang"), _completion("raise"), _completion("nope")]
    rb = task.reward(comps, [e], group_size=4, timeout=1.0)
    assert rb.per_reward[:, rb.names.index("reasoning_gym")].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert pool.get_pool().restarts >= 1                 # the hanging verifier's worker was killed
    rb = task.reward([_completion(e.answer)] * 2, [e], group_size=2)   # and the pool still serves
    assert rb.per_reward[:, 0].tolist() == [1.0, 1.0]


def test_reasoning_gym_task_config_is_checked_before_any_work():
    from r1core.train.config import load_config
    with pytest.raises(ValueError, match="unknown reasoning-gym task 'leg_countin'"):
        load_config(None, ["task=reasoning_gym:leg_countin"])
    with pytest.raises(ValueError, match="unknown option 'max_legs'"):
        load_config(None, ["task=reasoning_gym:leg_counting", "task.args.max_legs=3"])
    assert load_config(None, ["task=reasoning_gym:leg_counting", "task.args.max_animals=4"]).task.args == {"max_animals": 4}
