"""format (strict / lenient), tag_count, language consistency and length rewards."""
import pytest

from r1core.rewards import RewardOptionError, format_reward, get, language, length, tag_count
from r1core.rewards.language import thinking, word_counts

GOOD = "<think>\nadd them: 2 + 3\n</think>\n<answer> 5 </answer>"


@pytest.mark.parametrize("text,strict,lenient", [
    (GOOD, 1.0, 1.0),
    ("  " + GOOD + "\n", 1.0, 1.0),
    ("<think>a</think><answer>5</answer>", 1.0, 1.0),
    ("<think></think> <answer>5</answer>", 1.0, 1.0),
    ("<think>a</think> <answer> </answer>", 0.0, 1.0),                   # empty answer
    ("Sure! <think>a</think><answer>5</answer>", 0.0, 1.0),             # text before
    ("<think>a</think><answer>5</answer> bye", 0.0, 1.0),               # text after
    ("<think>a</think> so <answer>5</answer>", 0.0, 1.0),               # text between
    ("<think>a</think><think>b</think><answer>5</answer>", 0.0, 1.0),   # repeated block
    ("<answer>5</answer><think>a</think>", 0.0, 0.0),                   # wrong order
    ("<think>a</think><answer>5", 0.0, 0.0),                            # unterminated
    ("<think>a <answer>5</answer></think>", 0.0, 0.0),
    ("5", 0.0, 0.0),
])
def test_format_modes(text, strict, lenient):
    assert format_reward(text) == strict
    assert format_reward(text, mode="lenient") == lenient
    assert get("format")(text, mode="strict") == strict


def test_format_think_in_prompt():
    assert format_reward("reasoning</think><answer>5</answer>", think_in_prompt=True) == 1.0
    assert format_reward("reasoning</think><answer>5</answer>") == 0.0


def test_format_bad_mode_raises():
    with pytest.raises(ValueError, match="mode"):
        format_reward(GOOD, mode="loose")


@pytest.mark.parametrize("text,want", [
    (GOOD, 1.0), ("<think>", 0.25), ("<think></think>", 0.5), ("<think><think></think><answer>", 0.5), ("", 0.0),
])
def test_tag_count(text, want):
    assert tag_count(text) == want


def test_language_scripts():
    assert language("<think>We add the two numbers</think><answer>5</answer>", lang="en") == 1.0
    assert language("<think>我们把两个数相加</think>", lang="zh") == 1.0
    assert language("<think>我们把两个数相加</think>", lang="en") == 0.0
    mixed = "<think>我们 add 两个 numbers</think>"  # 4 Han characters, 2 English words
    assert language(mixed, lang="zh") == pytest.approx(4 / 6)
    assert language(mixed, lang="en") == pytest.approx(2 / 6)
    assert language("<think>Мы складываем числа</think>", lang="ru") == 1.0
    assert language("<think>ひらがなと漢字</think>", lang="ja") == 1.0
    assert language("<think>수를 더합니다</think>", lang="ko") == 1.0


def test_language_ignores_math_and_latex():
    # \frac, single-letter variables and digits are not words: only 我们/计算 count
    assert language("<think>我们计算 \\frac{a}{b} + x = 3</think>", lang="zh") == 1.0
    assert word_counts("x y z 1 2 3 \\alpha") == dict.fromkeys(word_counts(""), 0)


def test_language_thinking_part():
    assert thinking("<think>abc</think> def") == "abc"
    assert thinking("pre <think>abc") == "abc"
    assert thinking("abc</think> def") == "abc"
    assert thinking("no tags") == "no tags"
    assert language("<think></think> English words after", lang="en") == 0.0  # empty CoT earns nothing


def test_language_is_deterministic_and_checks_lang():
    text = "<think>numbers 数字 числа</think>"
    assert language(text, lang="en") == language(text, lang="en") == pytest.approx(1 / 4)
    with pytest.raises(ValueError, match="lang"):
        language(text, lang="klingon")


def test_length_dapo_shape():
    assert length("x" * 50, max_len=100, buffer=20) == 1.0
    assert length("x" * 80, max_len=100, buffer=20) == 1.0
    assert length("x" * 90, max_len=100, buffer=20) == pytest.approx(0.5)
    assert length("x" * 100, max_len=100, buffer=20) == 0.0
    assert length("x" * 500, max_len=100, buffer=20) == 0.0
    assert length("x", max_len=100, buffer=20, num_tokens=95) == pytest.approx(0.25)
    assert length("x" * 100, max_len=100) == 1.0 and length("x" * 101, max_len=100) == 0.0   # hard cut
    with pytest.raises(ValueError, match="buffer"):
        length("x", max_len=10, buffer=11)
    with pytest.raises(ValueError, match="max_len"):
        length("x", max_len=0)
