"""Find the final answer in a completion (SPEC §5): the last complete \\boxed{…} (nested braces,
\\fbox too), else the content of the last <answer>…</answer>, else what follows a final
"answer is" / "answer:".

Every search is bounded whatever the text: candidates are found from the end with str.rfind, at
most MAX_CANDIDATES of them are tried, and a box whose braces do not close within MAX_ANSWER_CHARS
characters does not count (a 1 MB completion costs a few C-level scans, never a quadratic loop).
"""
from __future__ import annotations

import re

MAX_ANSWER_CHARS = 4096   # an extracted answer is never longer than this
MAX_CANDIDATES = 32       # boxes tried from the end before giving up
TAIL_CHARS = 8192         # the "answer is" rule looks at the end of the text only

_BRACE = re.compile(r"\\[{}]|[{}]")  # escaped braces (\{ \} : LaTeX set braces) do not group
_BOX_COMMANDS = ("\\boxed", "\\fbox")
_ANSWER_IS = re.compile(r"answer\s*(?:is|:)\s*:?\s*(.+)", re.IGNORECASE)


def _braced(text: str, open_at: int) -> str | None:
    """Content of the group whose "{" is at `open_at`, or None if it does not close in time."""
    depth = 0
    end = min(len(text), open_at + MAX_ANSWER_CHARS + 2)
    for m in _BRACE.finditer(text, open_at, end):
        tok = m.group()
        if len(tok) == 2:
            continue
        depth += 1 if tok == "{" else -1
        if depth == 0:
            return text[open_at + 1:m.start()]
    return None


def _box_at(text: str, at: int, command: str) -> str | None:
    """The argument of the box command starting at `at`: `\\boxed{…}` or `\\boxed 5`."""
    i = at + len(command)
    if i < len(text) and text[i].isalpha():  # \boxedsomething is another command
        return None
    while i < len(text) and text[i] in " \t":
        i += 1
    if i < len(text) and text[i] == "{":
        return _braced(text, i)
    if at + len(command) < i:  # "\boxed 5": one space-separated token
        m = re.match(r"[^\s$]{1,64}", text[i:i + 64])
        return m.group() if m else None
    return None


def last_boxed(text: str) -> str | None:
    """The content of the last complete \\boxed{…} / \\fbox{…} in `text`, or None."""
    if "\\boxed" not in text and "\\fbox" not in text:
        return None
    hi = len(text)
    for _ in range(MAX_CANDIDATES):
        at, command = max((text.rfind(c, 0, hi), c) for c in _BOX_COMMANDS)
        if at < 0:
            return None
        content = _box_at(text, at, command)
        if content is not None:
            return content
        hi = at
    return None


def answer_tag(text: str) -> str | None:
    """The content of the last closed <answer>…</answer>, or None (an unterminated tag is no answer)."""
    close = text.rfind("</answer>")
    if close < 0:
        return None
    start = text.rfind("<answer>", 0, close)
    if start < 0 or close - start - 8 > MAX_ANSWER_CHARS:
        return None
    return text[start + 8:close]


def answer_is(text: str) -> str | None:
    """What follows the last "answer is" / "answer:" near the end, to the end of its line."""
    tail = text[-TAIL_CHARS:]
    low = tail.lower()
    at = low.rfind("answer")
    while at >= 0:
        m = _ANSWER_IS.match(tail, at, min(len(tail), at + 32 + MAX_ANSWER_CHARS))
        if m:
            line = m.group(1).split("\n", 1)[0].strip()
            line = line.strip("*_ ").rstrip(".").strip("*_ ")
            return line or None
        at = low.rfind("answer", 0, at)
    return None


def extract_answer(text: str) -> str | None:
    """The final answer of a completion (stripped), or None when it gives none."""
    for rule in (last_boxed, answer_tag, answer_is):
        found = rule(text)
        if found is not None and found.strip():
            return found.strip()[:MAX_ANSWER_CHARS]
    return None


def reference_answer(reference: str) -> str:
    """The final answer inside a reference: after the last "####" (GSM8K, thousands commas
    dropped), else the last \\boxed{…} (MATH solutions), else the reference stripped."""
    if "####" in reference:
        return reference.rsplit("####", 1)[1].strip().replace(",", "")
    boxed = last_boxed(reference)
    return boxed.strip() if boxed is not None else reference.strip()
