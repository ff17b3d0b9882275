"""Normalise an extracted answer into a canonical string: what string comparison, the number
reader and the expression parser all start from.

Rules, in order (docs/rewards.md lists the decisions):
  * control characters and NUL dropped; math delimiters $ \\( \\) \\[ \\] dropped; \\left \\right
    \\displaystyle and LaTeX spacing (\\, \\; \\! \\: \\quad ~) dropped; \\dfrac/\\tfrac -> \\frac;
  * text wrappers (\\text{…} \\mathrm{…} \\mathbf{…} \\textbf{…} \\mbox{…} \\operatorname{…}) replaced by
    their content; degrees (^\\circ, °) dropped; \\% -> %;
  * a single leading assignment "x = 3" / "\\theta=3" / "x \\in [1, 2]" -> its right-hand side;
    a trailing full stop dropped;
  * units: a number followed by words ("5 cm", "12 apples", "3 hours") keeps the number -- only when
    the words hold no digit and no connective ("6 and 8", "3 or 4", "2 to 5" stay as they are); a
    known unit glued to a number ("5cm", "10kg") too; currency signs and codes ($, \\$, USD, €, £) dropped;
  * LaTeX digit-group separators: "14{,}916" and "32,\\!349" (groups of exactly three digits) lose
    them, "0{,}5" (any other group) is a decimal comma -> "0.5"; a bare "3,5" stays a list;
  * thousands separators "1,234,567" (groups of exactly three digits, a first group not starting
    with 0) -> "1234567", only when the whole answer is that number (a comma inside a tuple "(12,102)" is never a separator);
  * \\begin{pmatrix|bmatrix|Bmatrix} -> \\begin{matrix} (the same matrix in another environment);
  * a mixed number "2\\frac{1}{3}" (the whole answer, digits only, proper fraction) -> \\frac{7}{3};
    \\mathbb{R} -> (-\\infty,\\infty); \\varnothing, \\{\\} -> \\emptyset;
  * "and" / "or" / ";" between answers -> "," (a list); all whitespace removed.
Every rule is written so that it cannot merge two different answers (tests/rewards/test_rewards_kinds.py).
Input longer than MAX_NORMALIZE_CHARS is only stripped (no regex work on huge strings).
"""
from __future__ import annotations

import re

MAX_NORMALIZE_CHARS = 1000

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_DELIMS = re.compile(r"\\[()\[\]]|\$")
_DROP = re.compile(r"\\(?:left|right|displaystyle|textstyle|bigl?|bigr?|Bigl?|Bigr?)(?![a-zA-Z])"
                   r"|\\[,;!: ]|\\q?quad(?![a-zA-Z])|~")
_FRAC = re.compile(r"\\[dtc]frac(?![a-zA-Z])")
_LATEX_THOUSANDS = re.compile(r"(?<=\d)(?:\{,\}|,\\!)(?=\d{3}(?!\d))")
_DECIMAL_COMMA = re.compile(r"(?<=\d)\{,\}(?=\d)")
_WRAPPER = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mathit|mbox|operatorname|boldsymbol)"
                      r"\s*\{([^{}]*)\}")
_DEGREE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree(?![a-zA-Z])")
_ASSIGN = re.compile(r"^\s*(?:[a-zA-Z](?:_\{?[a-zA-Z0-9]+\}?)?|\\[a-zA-Z]+)\s*(?:=|\\in(?![a-zA-Z]))\s*(?=\S)")
_CURRENCY = re.compile(r"\\\$|[$€£¥]|\b(?:USD|EUR|GBP|dollars?|euros?)\b\.?", re.IGNORECASE)
_NUMBER = r"[-+]?(?:\d+(?:,\d{3})*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_CONNECTIVE = r"(?:and|or|to|plus|minus|times|over|by|per|of|not|than|but)"
_NUMBER_THEN_WORDS = re.compile(rf"^({_NUMBER}%?)\s+(?!.*\b{_CONNECTIVE}\b)[a-zA-Z][a-zA-Z\s.\-/]*(?:\^\{{?[23]\}}?)?$",
                                re.IGNORECASE)
_UNITS = ("mm|cm|km|m|mi|ft|in|yd|kg|mg|g|lb|lbs|oz|ml|mL|l|L|s|sec|secs|min|mins|h|hr|hrs|"
          "mph|kph|km/h|m/s|cm\\^2|m\\^2|cm\\^3|m\\^3|units?|sq")
_NUMBER_THEN_UNIT = re.compile(rf"^({_NUMBER}%?)(?:{_UNITS})$")
_THOUSANDS = re.compile(r"[-+]?(?!0)\d{1,3}(?:,\d{3})+(?:\.\d+)?%?")   # "0,111" groups nothing: a decimal comma
_JOIN = re.compile(r"\s*(?:,\s*)?\b(?:and|or)\b\s*|\s*;\s*", re.IGNORECASE)
_WORDS = re.compile(r"[a-zA-Z]{2,}")
_REALS = re.compile(r"\\mathbb\s*\{?\s*R\s*\}?|ℝ")
_EMPTY = re.compile(r"\\varnothing(?![a-zA-Z])|\\emptyset(?![a-zA-Z])|∅|\\\{\s*\\\}")
_MIXED = re.compile(r"([-+]?)\s*(\d+)\s*\\[dtc]?frac\s*\{\s*(\d+)\s*\}\s*\{\s*(\d+)\s*\}")
_MATRIX = re.compile(r"\\(begin|end)\{[pbB]?matrix\}")
_SPACE = re.compile(r"\s+")
_COMMAND = re.compile(r"\\[a-zA-Z]+")
_PLAIN_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def normalize(answer: str, *, strip_label: bool = True) -> str:
    """The canonical form of an answer string (see the module docstring); `strip_label=False`
    keeps a leading "x =" (to compare equations as equations)."""
    s = answer.strip()
    if len(s) > MAX_NORMALIZE_CHARS or _PLAIN_NUMBER.fullmatch(s):  # the common case: nothing to do
        return s
    s = _CONTROL.sub("", s)
    s = s.replace("\\$", "")  # an escaped dollar is a currency sign, not a math delimiter
    s = _DELIMS.sub("", s)
    s = _LATEX_THOUSANDS.sub("", s)
    s = _DECIMAL_COMMA.sub(".", s)
    s = _DROP.sub(" ", s)
    s = _MATRIX.sub(r"\\\1{matrix}", s)
    s = _REALS.sub(r"(-\\infty,\\infty)", s)
    s = _EMPTY.sub(r"\\emptyset", s)
    m = _MIXED.fullmatch(s.strip())
    if m:  # "2\frac{1}{3}" is the mixed number 7/3 (not 2·1/3): whole answers of digits only
        sign, whole, num, den = m.groups()
        if int(den) > 0 and int(num) < int(den):
            s = f"{sign}\\frac{{{int(whole) * int(den) + int(num)}}}{{{den}}}"  # pmatrix, bmatrix, Bmatrix: one matrix (vmatrix, a determinant, stays)
    s = _FRAC.sub(r"\\frac", s)
    for _ in range(4):  # nested wrappers: \text{\textbf{5}}
        t = _WRAPPER.sub(r" \1 ", s)
        if t == s:
            break
        s = t
    s = _DEGREE.sub("", s)
    s = s.replace("\\%", "%").strip()
    s = s.rstrip(".").strip()
    if strip_label and s.count("=") <= 1:
        s = _ASSIGN.sub("", s, count=1)
    s = _CURRENCY.sub("", s).strip()
    m = _NUMBER_THEN_WORDS.match(s) or _NUMBER_THEN_UNIT.match(s.replace(" ", ""))
    if m:
        s = m.group(1)
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    if _JOIN.search(s) and not _WORDS.search(_JOIN.sub(" ", _COMMAND.sub(" ", s))):
        s = _JOIN.sub(",", s)  # "2 and 3", "x=1 or x=2", "1; 4": a list (no other words around)
    s = _SPACE.sub("", s)
    return s.rstrip(".")
