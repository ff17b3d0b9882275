"""Format rewards for the R1-Zero template `<think> … </think> <answer> … </answer>`.

`format` (mode="strict"): the whole completion (outer whitespace aside) is exactly one think block
followed, after optional whitespace, by exactly one non-empty answer block.  mode="lenient": the
four tags appear in that order somewhere (text around them and repeats allowed).
`think_in_prompt=True` is for prompts that already end with "<think>" (e.g. R1-distilled chat
templates): the completion then starts inside the think block.
`tag_count`: 0.25 for each of the four tags that appears exactly once (partial credit that helps a
model learn the format early).
All checks are str.find/str.count scans: linear in the text, no regex backtracking.
"""
from __future__ import annotations

from .registry import RewardOptionError, register

TAGS = ("<think>", "</think>", "<answer>", "</answer>")
MODES = ("strict", "lenient")


def _strict(s: str) -> bool:
    s = s.strip()
    if not s.startswith("<think>") or not s.endswith("</answer>"):
        return False
    if any(s.count(t) != 1 for t in TAGS):
        return False
    close_think, open_answer = s.find("</think>"), s.find("<answer>")
    if not close_think < open_answer:
        return False
    between = s[close_think + len("</think>"):open_answer]
    answer = s[open_answer + len("<answer>"):-len("</answer>")]
    return not between.strip() and bool(answer.strip())


def _lenient(s: str) -> bool:
    at = 0
    for tag in TAGS:
        at = s.find(tag, at)
        if at < 0:
            return False
        at += len(tag)
    return True


@register("format")
def format_reward(completion: str, *, mode: str = "strict", think_in_prompt: bool = False) -> float:
    """1.0 when the completion follows the R1-Zero template (see the module docstring)."""
    if mode not in MODES:
        raise RewardOptionError(f"mode: expected one of {MODES}, got {mode!r}")
    text = "<think>" + completion if think_in_prompt else completion
    return 1.0 if (_strict(text) if mode == "strict" else _lenient(text)) else 0.0


@register("tag_count")
def tag_count(completion: str, *, think_in_prompt: bool = False) -> float:
    """0.25 per template tag that appears exactly once."""
    text = "<think>" + completion if think_in_prompt else completion
    return sum(0.25 for t in TAGS if text.count(t) == 1)
