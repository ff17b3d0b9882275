"""Find the final answer in a completion (docs/spec.md §5): the last complete \\boxed{…} (nested braces,
\\fbox too; consecutive boxes joined by "," / "and" / "or" / ";" / spaces count together, as one
list), else the content of the last <answer>…</answer>, else what follows a final "answer is" /
"answer:" (its math span, or its sentence), else -- by `unmarked` -- nothing ("none"), the whole
completion when it is itself a short answer ("bare", the default), or the last math span / number
of the text ("last", for evaluation).  docs/rewards.md defends the defaults.

Every search is bounded whatever the text: candidates are found from the end with str.rfind, at
most MAX_CANDIDATES of them are tried, and a box whose braces do not close within MAX_ANSWER_CHARS
characters does not count (a 1 MB completion costs a few C-level scans, never a quadratic loop).
"""
from __future__ import annotations

import re

MAX_ANSWER_CHARS = 4096   # an extracted answer is never longer than this
MAX_CANDIDATES = 32       # boxes tried from the end before giving up
MAX_JOINED = 8            # consecutive boxes read together as one list answer
MAX_GAP_CHARS = 64        # ... when at most this much separates them (also bounds the gap regex)
MAX_SPAN_CHARS = 512      # a math span $…$ read without a marker is at most this long
TAIL_CHARS = 8192         # the "answer is" and "last" rules look at the end of the text only
BARE_CHARS = 200          # a completion this short, with no prose, is its own answer ("bare")
UNMARKED = ("none", "bare", "last")

_BRACE = re.compile(r"\\[{}]|[{}]")  # escaped braces (\{ \} : LaTeX set braces) do not group
_BOX_COMMANDS = ("\\boxed", "\\fbox")
_ANSWER_IS = re.compile(r"answer\s*(?:is|:)\s*:?\s*(.+)", re.IGNORECASE)
# between two boxes that form one answer: delimiters, spacing and one separator word at most
_BOX_GAP = re.compile(r"(?:\s|\$|\\[,;!: ]|\\q?quad)*(?:,|;|\\text\{\s*(?:and|or)\s*\}|(?:,\s*)?(?:and|or))?"
                      r"(?:\s|\$|\\[,;!: ]|\\q?quad)*"
                      r"(?:[a-zA-Z](?:_\{?[a-zA-Z0-9]{1,4}\}?)?\s*=\s*)?", re.IGNORECASE)  # "$x=\boxed{-1}$ or $x=\boxed{4}$"
_SPAN_GAP = re.compile(r"\s*(?:(?:,\s*)?(?:and|or)\b|,|;)\s*", re.IGNORECASE)
_SPAN = (r"\$\$([^$]{1,%d})\$\$|\$([^$]{1,%d})\$|\\\(((?:(?!\\\)).){1,%d})\\\)|\\\[((?:(?!\\\]).){1,%d})\\\]"
         % ((MAX_SPAN_CHARS,) * 4))  # bounded repeats: an unclosed "\\(" costs at most 512 steps
_LEADING_SPAN = re.compile(r"\s*(?:" + _SPAN + ")", re.DOTALL)
_NOT_BARE = re.compile(r"</?[a-zA-Z]+>|\\boxed|\\fbox")  # template tags, an unclosed box: not an answer
_LATEX_CMD = re.compile(r"\\[a-zA-Z]+")
_PROSE = re.compile(r"[a-zA-Z]{2,}[\s,]+[a-zA-Z]{2,}")  # two words in a row: a sentence, not an answer
_LAST_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?%?")
_SENTENCE_END = re.compile(r"\.(?:\s|$)|\s(?:because|since|as|which|so|where)\s", re.IGNORECASE)


def _braced_end(text: str, open_at: int) -> int | None:
    """Index of the "}" closing the group whose "{" is at `open_at`, or None if it does not close in time."""
    depth = 0
    end = min(len(text), open_at + MAX_ANSWER_CHARS + 2)
    for m in _BRACE.finditer(text, open_at, end):
        tok = m.group()
        if len(tok) == 2:
            continue
        depth += 1 if tok == "{" else -1
        if depth == 0:
            return m.start()
    return None


def _box_span(text: str, at: int, command: str) -> tuple[str, int] | None:
    """(argument, end index) of the box command starting at `at`: `\\boxed{…}` or `\\boxed 5`."""
    i = at + len(command)
    if i < len(text) and text[i].isalpha():  # \boxedsomething is another command
        return None
    while i < len(text) and text[i] in " \t":
        i += 1
    if i < len(text) and text[i] == "{":
        close = _braced_end(text, i)
        return None if close is None else (text[i + 1:close], close + 1)
    if at + len(command) < i:  # "\boxed 5": one space-separated token
        m = re.match(r"[^\s$]{1,64}", text[i:i + 64])
        return (m.group(), i + m.end()) if m else None
    return None


def _last_box_before(text: str, hi: int) -> tuple[str, int, int] | None:
    """(content, start, end) of the last complete box starting before `hi`."""
    for _ in range(MAX_CANDIDATES):
        at, command = max((text.rfind(c, 0, hi), c) for c in _BOX_COMMANDS)
        if at < 0:
            return None
        span = _box_span(text, at, command)
        if span is not None:
            return span[0], at, span[1]
        hi = at
    return None


def last_boxed(text: str) -> str | None:
    """The content of the last complete \\boxed{…} / \\fbox{…} in `text`, or None."""
    if "\\boxed" not in text and "\\fbox" not in text:
        return None
    found = _last_box_before(text, len(text))
    return None if found is None else found[0]


def boxed_answers(text: str) -> list[str]:
    """The last box and the boxes right before it that are joined to it only by a separator
    ("\\boxed{(2, 2)} and \\boxed{(6, 2)}", "\\boxed{1}, \\boxed{4}"), in text order; [] when none.
    A box followed by other words ("\\boxed{3} ... wait, \\boxed{5}") is a corrected answer, not a part."""
    if "\\boxed" not in text and "\\fbox" not in text:
        return []
    last = _last_box_before(text, len(text))
    if last is None:
        return []
    parts, start = [last[0]], last[1]
    while len(parts) < MAX_JOINED:
        prev = _last_box_before(text, start)
        if prev is None or start - prev[2] > MAX_GAP_CHARS or _BOX_GAP.fullmatch(text, prev[2], start) is None:
            break
        parts.append(prev[0])
        start = prev[1]
    return parts[::-1]


def all_boxed(text: str) -> list[str]:
    """Every complete box of the text in text order (the last MAX_CANDIDATES at most): what a
    verifier that reads all boxes together (math-verify) sees; accuracy() uses it only against a
    gold with several elements (docs/rewards.md, "several boxed answers")."""
    if "\\boxed" not in text and "\\fbox" not in text:
        return []
    out, hi = [], len(text)
    while len(out) < MAX_CANDIDATES:
        found = _last_box_before(text, hi)
        if found is None:
            break
        out.append(found[0])
        hi = found[1]
    return out[::-1]


def answer_tag(text: str) -> str | None:
    """The content of the last closed <answer>…</answer>, or None (an unterminated tag is no answer)."""
    close = text.rfind("</answer>")
    if close < 0:
        return None
    start = text.rfind("<answer>", 0, close)
    if start < 0 or close - start - 8 > MAX_ANSWER_CHARS:
        return None
    return text[start + 8:close]


def _span(m: re.Match) -> str:
    return next(g for g in m.groups() if g is not None)


def answer_is(text: str) -> str | None:
    """What follows the last "answer is" / "answer:" near the end: its leading math span
    ("$\\frac12$. I hope it is correct" -> "\\frac12"), else its sentence on that line
    ("5 because it is prime" -> "5")."""
    tail = text[-TAIL_CHARS:]
    low = tail.lower()
    at = low.rfind("answer")
    while at >= 0:
        m = _ANSWER_IS.match(tail, at, min(len(tail), at + 32 + MAX_ANSWER_CHARS))
        if m:
            rest = m.group(1).strip("*_ ")
            span = _LEADING_SPAN.match(rest)
            if span:  # "$1$ and $2$": math spans joined by separators are one list answer
                parts, end = [_span(span).strip()], span.end()
                while len(parts) < MAX_JOINED:
                    gap = _SPAN_GAP.match(rest, end)
                    nxt = _LEADING_SPAN.match(rest, gap.end()) if gap and gap.end() > end else None
                    if nxt is None:
                        break
                    parts.append(_span(nxt).strip())
                    end = nxt.end()
                return ", ".join(p for p in parts if p) or None
            line = rest.split("\n", 1)[0]
            cut = _SENTENCE_END.search(line)
            if cut:
                line = line[:cut.start()]
            line = line.strip("*_ ").rstrip(".,;:").strip("*_ ")
            return line or None
        at = low.rfind("answer", 0, at)
    return None


def _bare(text: str) -> str | None:
    """The completion itself when it is a short answer and not prose: "$x = 3$", "(0, 1)", "5 cm"."""
    s = text.strip()
    if not s or len(s) > BARE_CHARS or "\n" in s or _NOT_BARE.search(s):
        return None
    span = _LEADING_SPAN.match(s)
    if span and span.end() >= len(s.rstrip(". ")):
        return _span(span).strip() or None
    if _PROSE.search(_LATEX_CMD.sub(" ", s)):
        return None
    return s.rstrip(". ") or None


def _last_span(tail: str) -> str | None:
    """The last $…$ / $$…$$ / \\(…\\) / \\[…\\] of `tail` (str.rfind only: linear on any text)."""
    best, best_end = None, -1
    n = tail.count("$")
    hi = len(tail)
    if n % 2:  # an odd number: the last "$" is unpaired
        hi = tail.rfind("$")
    close = tail.rfind("$", 0, hi)
    if close > 0:
        open_ = tail.rfind("$", 0, close)
        if open_ >= 0 and close - open_ <= MAX_SPAN_CHARS + 1:
            best, best_end = tail[open_ + 1:close].strip("$"), close
    for opener, closer in (("\\(", "\\)"), ("\\[", "\\]")):
        close = tail.rfind(closer)
        if close > best_end:
            open_ = tail.rfind(opener, max(0, close - MAX_SPAN_CHARS - 2), close)
            if open_ >= 0:
                best, best_end = tail[open_ + 2:close], close
    return best.strip() if best is not None and best.strip() else None


def last_expression(text: str) -> str | None:
    """The last math span ($…$, \\(…\\), \\[…\\]) of the text's end, else its last number."""
    tail = text[-TAIL_CHARS:]
    span = _last_span(tail)
    if span is not None:
        return span
    found = None
    for found in _LAST_NUMBER.finditer(tail):
        pass
    return found.group() if found is not None else None


def _in_prose(answer: str) -> str:
    """An answer block written as a sentence ("The total is 42 dollars") gives its only math span
    or, failing that, its only number; with several ("42, not 43") it stays as it is (no guess)."""
    if not _PROSE.search(_LATEX_CMD.sub(" ", answer)):
        return answer
    inner = answer_is(answer)
    if inner is not None:
        return inner
    spans = [_span(m) for m in re.finditer(_SPAN, answer)]
    if len(spans) == 1 and spans[0].strip():
        return spans[0].strip()
    if not spans:
        numbers = _LAST_NUMBER.findall(answer)
        if len(numbers) == 1:
            return numbers[0]
    return answer


def extract_answer(text: str, unmarked: str = "none") -> str | None:
    """The final answer of a completion (stripped), or None when it gives none.  `unmarked` says
    what counts when there is no marker (box, answer tag, "answer is"): "none" (nothing), "bare"
    (the completion itself when it is a short answer) or "last" (its last math span / number)."""
    boxes = boxed_answers(text)
    if boxes:
        found = ", ".join(b.strip() for b in boxes if b.strip())
        if found:
            return found[:MAX_ANSWER_CHARS]
    tag = answer_tag(text)
    if tag is not None and tag.strip():
        return _in_prose(tag.strip())[:MAX_ANSWER_CHARS]
    rules = (answer_is,) + ({"none": (), "bare": (_bare,), "last": (_bare, last_expression)}[unmarked])
    for rule in rules:
        found = rule(text)
        if found is not None and found.strip():
            return found.strip()[:MAX_ANSWER_CHARS]
    return None


def reference_answer(reference: str) -> str:
    """The final answer inside a reference: after the last "####" (GSM8K, thousands commas
    dropped), else the last \\boxed{…} (MATH solutions; several joined ones as a list), else the
    reference stripped (of one enclosing "$…$" too)."""
    if "####" in reference:
        return reference.rsplit("####", 1)[1].strip().replace(",", "")
    boxes = [b.strip() for b in boxed_answers(reference) if b.strip()]
    if boxes:
        return ", ".join(boxes)
    s = reference.strip()
    span = _LEADING_SPAN.match(s)  # a gold answer written "$…$" is that math
    if span and span.end() >= len(s.rstrip(". ")):
        return _span(span).strip()
    return s
