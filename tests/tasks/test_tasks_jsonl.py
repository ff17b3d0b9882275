"""The GSM8K/MATH-style JSONL loader and dataset tasks: final answers, clear errors on bad files."""
import json

import pytest

from r1core.tasks import final_answer, get_task, load_jsonl
from r1core.tasks.jsonl import DATA_DIR


def write(tmp_path, lines, name="d.jsonl"):
    p = tmp_path / name
    p.write_text("\n".join(l if isinstance(l, str) else json.dumps(l) for l in lines) + "\n")
    return p


def test_final_answer_conventions():
    assert final_answer("48/2 = 24\n24 + 48 = 72\n#### 72") == "72"
    assert final_answer("#### 1,234") == "1234"
    assert final_answer("Thus $\\boxed{\\frac{1}{2}}$.") == "\\frac{1}{2}"
    assert final_answer(" 17 ") == "17"


def test_load_gsm8k_and_math_records(tmp_path):
    p = write(tmp_path, [{"question": "1+1?", "answer": "1+1=2\n#### 2"},
                         {"problem": "Half?", "solution": "It is $\\boxed{\\frac12}$.", "level": "Level 1"},
                         "", {"question": "n?", "answer": 3}])
    recs = load_jsonl(p)
    assert [r["answer"] for r in recs] == ["2", "\\frac12", "3"]
    assert recs[1]["question"] == "Half?" and recs[1]["level"] == "Level 1"
    assert recs[0]["solution"].startswith("1+1=2")
    p2 = write(tmp_path, [{"q": "a", "a": "#### 1"}], "custom.jsonl")
    assert load_jsonl(p2, question_key="q", answer_key="a")[0]["answer"] == "1"


@pytest.mark.parametrize("lines,match", [
    (["{not json"], r"d.jsonl:1: invalid JSON"),
    ([{"question": "a", "answer": "1"}, "[1, 2]"], r"d.jsonl:2: expected a JSON object"),
    ([{"prompt": "a", "answer": "1"}], r"d.jsonl:1: missing 'question' or 'problem'"),
    ([{"question": "a"}], r"missing 'answer' or 'solution'"),
    ([{"question": ["a"], "answer": "1"}], r"'question' must be a string"),
    ([{"question": "a", "answer": "#### "}], r"empty question or final answer"),
    (["", "  "], r"holds no records"),
])
def test_bad_files_fail_loudly(tmp_path, lines, match):
    with pytest.raises(ValueError, match=match):
        load_jsonl(write(tmp_path, lines))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no JSONL file"):
        load_jsonl(tmp_path / "absent.jsonl")


def test_jsonl_task_splits_and_sampling(tmp_path):
    p = write(tmp_path, [{"question": f"What is {i} + {i}?", "answer": f"#### {2 * i}"} for i in range(200)])
    task = get_task("gsm8k", path=str(p), test_fraction=0.2)
    test = task.test()
    assert 20 < len(test) < 60 and task.test(5) == test[:5]
    train = task.train(500, seed=1)
    assert len(train) == 500 and train == task.train(500, seed=1) and train != task.train(500, seed=2)
    assert {e.question for e in train}.isdisjoint({e.question for e in test})
    assert len({e.question for e in train[:len(task._train)]}) == len(task._train)  # one pass = no repeats
    e = train[0]
    assert task.reward([f"<think>x</think><answer>{e.answer}</answer>"], [e]).per_reward.tolist() == [[1.0, 1.0]]
    tp = write(tmp_path, [{"question": "held out?", "answer": "#### 1"}], "test.jsonl")
    task = get_task("jsonl", path=str(p), test_path=str(tp))
    assert [x.question for x in task.test()] == ["held out?"] and len(task._train) == 200


def test_shipped_word_problems():
    lines = (DATA_DIR / "word_problems.jsonl").read_text().splitlines()
    assert len(lines) == 20
    task = get_task("word_problems")
    assert task.test() and task.train(8, seed=0)
    for rec in load_jsonl(DATA_DIR / "word_problems.jsonl"):
        assert rec["answer"].isdigit()
