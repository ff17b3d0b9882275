"""A small, restricted parser for math answers (LaTeX or plain text) -> an expression tree.

Why our own: model output is never `eval`-ed, and sympy must never see an input whose evaluation
cannot finish (`9^{9^{9^9}}` makes sympy build a number with 10^8 digits).  The parser accepts
numbers, letters (with subscripts), + - * / ^ (and **), implicit products, ( ) { } [ ] | |,
\\frac \\sqrt (with index) \\cdot \\times \\div, trig/log/exp functions, \\pi, e, i, \\infty and Greek
letters; anything else is "not an expression" (None).  While parsing it folds rational constants
exactly (Fractions), which answers `2^{10}` = `1024` or `\\frac{3}{6}` = `0.5` without sympy, and
enforces the limits below, so what reaches sympy is small.

Tree nodes are tuples: ("num", Fraction) ("sym", name) ("const", "pi"|"e"|"i"|"oo")
("add"|"mul"|"div"|"pow", a, b) ("neg", a) ("func", name, a) ("root", a, n) ("log", a, base).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

MAX_EXPR_CHARS = 512      # longer answers are compared as strings only
MAX_TOKENS = 256
MAX_DEPTH = 48            # nesting of the recursive descent
MAX_EXPONENT = 1000       # |a numeric exponent| (also the digits of a scientific-notation exponent)
MAX_BITS = 1 << 16        # numerator + denominator bits of any folded constant
MAX_DIGITS = 400          # digits of one number literal
MAX_DEGREE = 1000         # (x^{1000})^{1000} would make sympy expand a degree-10^6 power

FUNCS = {"sin", "cos", "tan", "sec", "csc", "cot", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh",
         "exp", "ln", "log", "abs"}
GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "vartheta",
         "iota", "kappa", "lambda", "mu", "nu", "xi", "rho", "sigma", "tau", "upsilon", "phi", "varphi",
         "chi", "psi", "omega", "Gamma", "Delta", "Theta", "Lambda", "Xi", "Sigma", "Phi", "Psi", "Omega"}
_WORDS = sorted(FUNCS | {"sqrt", "pi", "infinity", "inf", "oo"}, key=len, reverse=True)
_UNICODE = {"π": "\\pi", "√": "\\sqrt", "∞": "\\infty", "×": "*", "÷": "/", "·": "*", "⋅": "*", "−": "-",
            "–": "-"}

_TOKEN = re.compile(
    r"\s*(?:"
    r"(?P<num>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+(?![a-zA-Z]))?)"
    r"|(?P<cmd>\\[a-zA-Z]+)"
    r"|(?P<word>" + "|".join(_WORDS) + r")(?![a-zA-Z])"
    r"|(?P<letter>[a-zA-Z])"
    r"|(?P<op>\*\*|[-+*/^_(){}\[\]|,])"
    r")")


class NotExpression(ValueError):
    """The text is not an expression this parser accepts (or breaks a limit)."""


class LimitExceeded(NotExpression):
    """The text breaks one of the size limits above (a hostile or absurd answer, not a syntax gap)."""


@dataclass(frozen=True)
class Parsed:
    tree: tuple
    value: Fraction | None  # the exact rational value when the expression is a rational constant
    degree: int = 0         # a bound on the polynomial degree in the symbols ((x^a)^b: a·b)

    def __post_init__(self):
        if self.degree > MAX_DEGREE:
            raise LimitExceeded("degree too large")


def tokenize(text: str) -> list[tuple[str, str]]:
    for u, r in _UNICODE.items():
        text = text.replace(u, r)
    out, i = [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        m = _TOKEN.match(text, i)
        if not m or m.end() == i:
            raise NotExpression(f"unexpected {text[i]!r}")
        kind = m.lastgroup
        tok = m.group(kind)
        if kind == "op" and tok == "**":
            tok = "^"
        if kind == "num" and len(tok) > MAX_DIGITS:
            raise LimitExceeded("number too long")
        out.append((kind, tok))
        if len(out) > MAX_TOKENS:
            raise LimitExceeded("too many tokens")
        i = m.end()
    return out


def _bits(v: Fraction) -> int:
    return v.numerator.bit_length() + v.denominator.bit_length()


def _number(tok: str) -> Fraction:
    mant, _, exp = tok.lower().partition("e")
    v = Fraction(mant)
    if exp:
        e = int(exp)
        if abs(e) > MAX_EXPONENT:
            raise LimitExceeded("exponent too large")
        v *= Fraction(10) ** e
    return v


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]):
        self.toks, self.i, self.depth = tokens, 0, 0

    # -- token helpers ------------------------------------------------------------------------
    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def at(self, *values: str) -> bool:
        t = self.peek()
        return t is not None and t[1] in values

    def take(self, value: str | None = None) -> tuple[str, str]:
        t = self.peek()
        if t is None or (value is not None and t[1] != value):
            raise NotExpression(f"expected {value!r}")
        self.i += 1
        return t

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise LimitExceeded("nested too deeply")

    # -- grammar ------------------------------------------------------------------------------
    def expr(self) -> Parsed:
        self.enter()
        node = self.term()
        while self.at("+", "-"):
            op = self.take()[1]
            rhs = self.term()
            if op == "-":
                rhs = _neg(rhs)
            node = _binary("add", node, rhs)
        self.depth -= 1
        return node

    def term(self) -> Parsed:
        node = self.unary()
        while True:
            if self.at("*", "\\cdot", "\\times"):
                self.take()
                node = _binary("mul", node, self.unary())
            elif self.at("/", "\\div"):
                self.take()
                node = _binary("div", node, self.unary())
            elif self.starts_primary():
                node = _binary("mul", node, self.power())
            else:
                return node

    def unary(self) -> Parsed:
        if self.at("-", "+"):
            self.enter()
            sign = self.take()[1]
            inner = self.unary()
            self.depth -= 1
            return _neg(inner) if sign == "-" else inner
        return self.power()

    def power(self) -> Parsed:
        self.enter()
        base = self.primary()
        if self.at("^"):
            self.take()
            base = _pow(base, self.exponent())
        self.depth -= 1
        return base

    def exponent(self) -> Parsed:
        if self.at("{"):
            return self.group()
        if self.at("-", "+"):
            sign = self.take()[1]
            e = self.exponent()
            return _neg(e) if sign == "-" else e
        return self.power()  # right-associative: 2^3^2 = 2^(3^2)

    def starts_primary(self) -> bool:
        t = self.peek()
        if t is None:
            return False
        kind, tok = t
        return kind in ("num", "letter", "word") or tok in ("(", "{", "[") or (
            kind == "cmd" and tok not in ("\\cdot", "\\times", "\\div"))

    def group(self) -> Parsed:
        """A LaTeX argument: {expr}, or a single digit / letter / command."""
        if self.at("{"):
            self.take("{")
            inner = self.expr()
            self.take("}")
            return inner
        t = self.peek()
        if t and t[0] == "num":  # \frac12 = \frac{1}{2}: one digit per argument
            tok = t[1]
            if len(tok) > 1 and tok[0].isdigit():
                self.toks[self.i] = ("num", tok[1:])
                return Parsed(("num", Fraction(int(tok[0]))), Fraction(int(tok[0])))
        return self.primary()

    def primary(self) -> Parsed:
        self.enter()
        kind, tok = self.take()
        if kind == "num":
            v = _number(tok)
            node = Parsed(("num", v), v)
        elif tok in ("(", "[", "{"):
            close = {"(": ")", "[": "]", "{": "}"}[tok]
            node = self.expr()
            self.take(close)
        elif tok == "|":
            inner = self.expr()
            self.take("|")
            node = Parsed(("func", "abs", inner.tree), abs(inner.value) if inner.value is not None else None,
                          inner.degree)
        elif kind == "letter":
            node = self.letter(tok)
        elif kind in ("word", "cmd"):
            node = self.named(tok.lstrip("\\"))
        else:
            raise NotExpression(f"unexpected {tok!r}")
        self.depth -= 1
        return node

    def letter(self, tok: str) -> Parsed:
        if tok == "e":
            return Parsed(("const", "e"), None)
        if tok == "i":
            return Parsed(("const", "i"), None)
        name = tok
        if self.at("_"):
            self.take("_")
            sub = self.take("{")[1] if self.at("{") else None
            parts = []
            while sub is not None and not self.at("}"):
                parts.append(self.take()[1])
            if sub is not None:
                self.take("}")
            else:
                parts.append(self.take()[1])
            name = f"{tok}_{''.join(parts)}"
            if not re.fullmatch(r"[a-zA-Z]_[a-zA-Z0-9]{1,8}", name):
                raise NotExpression("unsupported subscript")
        return Parsed(("sym", name), None, 1)

    def named(self, name: str) -> Parsed:
        if name == "frac":
            num, den = self.group(), self.group()
            return _binary("div", num, den)
        if name == "sqrt":
            index = None
            if self.at("["):
                self.take("[")
                index = self.expr()
                self.take("]")
            arg = self.group()
            return _root(arg, index)
        if name == "pi":
            return Parsed(("const", "pi"), None)
        if name in ("infty", "infinity", "inf", "oo"):
            return Parsed(("const", "oo"), None)
        if name in GREEK:
            return Parsed(("sym", name), None, 1)
        if name in FUNCS:
            base = None
            if name == "log" and self.at("_"):
                self.take("_")
                base = self.group()
            power = None
            if self.at("^"):  # \sin^2 x
                self.take("^")
                power = self.exponent()
            arg = self.group() if self.at("{", "(") else self.power()
            node = Parsed(("log", arg.tree, base.tree), None, arg.degree + base.degree) if base is not None else \
                Parsed(("func", name, arg.tree), None, arg.degree)
            if name == "abs" and arg.value is not None:
                node = Parsed(node.tree, abs(arg.value), arg.degree)
            return _pow(node, power) if power is not None else node
        raise NotExpression(f"unsupported command \\{name}")


def _check(v: Fraction | None) -> Fraction | None:
    if v is not None and _bits(v) > MAX_BITS:
        raise LimitExceeded("constant too large")
    return v


def _neg(a: Parsed) -> Parsed:
    return Parsed(("neg", a.tree), -a.value if a.value is not None else None, a.degree)


def _binary(op: str, a: Parsed, b: Parsed) -> Parsed:
    v = None
    if a.value is not None and b.value is not None:
        if op == "add":
            v = a.value + b.value
        elif op == "mul":
            v = a.value * b.value
        elif b.value == 0:
            raise NotExpression("division by zero")
        else:
            v = a.value / b.value
    degree = max(a.degree, b.degree) if op == "add" else a.degree + b.degree
    return Parsed((op, a.tree, b.tree), _check(v), degree)


def _pow(base: Parsed, exp: Parsed) -> Parsed:
    v = None
    if exp.value is not None:
        if abs(exp.value) > MAX_EXPONENT:
            raise LimitExceeded("exponent too large")
        if base.value is not None and exp.value.denominator == 1:
            e = exp.value.numerator
            if base.value == 0 and e < 0:
                raise NotExpression("division by zero")
            if _bits(base.value) * abs(e) > MAX_BITS:
                raise LimitExceeded("power too large")
            v = base.value ** e
    elif _is_tower(exp.tree):  # a power tower in the exponent of anything: refuse
        raise LimitExceeded("power tower")
    if exp.value is not None:
        degree = base.degree * -(-abs(exp.value.numerator) // exp.value.denominator)
    else:
        degree = base.degree + exp.degree
    return Parsed(("pow", base.tree, exp.tree), _check(v), degree)


def _is_tower(tree: tuple) -> bool:
    return tree[0] == "pow" and tree[2][0] == "pow"


def _root(arg: Parsed, index: Parsed | None) -> Parsed:
    if index is not None and (index.value is None or index.value.denominator != 1 or
                              not 2 <= index.value <= MAX_EXPONENT):
        raise NotExpression("unsupported root index")
    n = 2 if index is None else index.value.numerator
    v = None
    if arg.value is not None and arg.value >= 0:  # exact when numerator and denominator are n-th powers
        p, q = _iroot(arg.value.numerator, n), _iroot(arg.value.denominator, n)
        if p is not None and q is not None:
            v = Fraction(p, q)
    return Parsed(("root", arg.tree, n), v, arg.degree)


def _iroot(x: int, n: int) -> int | None:
    if x.bit_length() > 4096:
        return None
    r = round(x ** (1.0 / n)) if x < 2 ** 1000 else None
    if r is None:
        return None
    for c in (r - 1, r, r + 1):
        if c >= 0 and c ** n == x:
            return c
    return None


_KNOWN_NAMES = re.compile(r"\\[a-zA-Z]+|(?<![a-zA-Z])(?:" + "|".join(_WORDS) + r")(?![a-zA-Z])")
_WORD_RUN = re.compile(r"[a-zA-Z]{3,}")


def parse(text: str) -> Parsed | None:
    """The expression tree of `text`, or None when it is not an expression we accept.  Runs of three
    or more letters that are not a known name ("hello") make it prose, not a product of symbols."""
    if not text or len(text) > MAX_EXPR_CHARS or _WORD_RUN.search(_KNOWN_NAMES.sub(" ", text)):
        return None
    try:
        p = _Parser(tokenize(text))
        if not p.toks:
            return None
        out = p.expr()
        if p.peek() is not None:
            return None
        return out
    except (NotExpression, ValueError, ZeroDivisionError, OverflowError, RecursionError):
        return None


# Signs of an answer whose evaluation cannot finish, in syntax our parser does not read (so math-verify,
# which reads more, would meet them): a power in an exponent, a chain of **, a huge factorial, a huge
# exponent or literal, a sum or product with a huge bound.
_COSTLY = re.compile(
    r"\^\s*\{[^{}]*\^|\^\s*\(?[-+]?\w+\)?\s*\^|\*\*[^*]*\*\*"
    r"|\d{4,}\s*!|\d!\s*!|\^\s*\{?\s*[-+]?\d{4,}|\d[eE][-+]?\d{4,}|\d{" + str(MAX_DIGITS + 1) + r"}"
    r"|\\(?:sum|prod)\w*_\{[^{}]*\}\^\{?\s*\d{5,}")


def _bounded(text: str) -> bool | None:
    """True: our parser reads `text` within its limits; False: it breaks one; None: not our syntax."""
    try:
        p = _Parser(tokenize(text))
        if p.toks:
            p.expr()
            if p.peek() is None:
                return True
    except LimitExceeded:
        return False
    except (NotExpression, ValueError, ZeroDivisionError, OverflowError, RecursionError):
        pass
    return None


def _top_items(text: str) -> list[str]:
    """`text` split on commas outside brackets, one enclosing bracket pair dropped first."""
    if len(text) > 1 and text[0] in "([{" and text[-1] in ")]}":
        text = text[1:-1]
    items, depth, start = [], 0, 0
    for i, c in enumerate(text):
        depth += c in "([{"
        depth -= c in ")]}"
        if c == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    return items + [text[start:]]


def too_costly(text: str) -> bool:
    """True when `text` breaks our parser's limits or -- where our parser cannot read it -- shows a
    sign of an evaluation that cannot finish (_COSTLY): such an answer scores 0 before any other
    checker sees it.  What our parser reads within its limits is bounded by construction; a tuple
    or list is judged item by item."""
    if len(text) > 4 * MAX_EXPR_CHARS:
        return True
    whole = _bounded(text)
    if whole is not None:
        return not whole
    items = _top_items(text) if "," in text else [text]
    for item in items[:64]:
        ok = _bounded(item) if len(items) > 1 else None
        if ok is False or (ok is None and _COSTLY.search(item)):
            return True
    return len(items) > 64 and _COSTLY.search(text) is not None
