"""DeepSeek-R1's language-consistency reward: the share of the words in the chain of thought that
are written in the target language, judged by Unicode script (deterministic, no model).

Words: a run of >= 2 letters of an alphabetic script (Latin, Cyrillic, Greek, Arabic, Hebrew,
Hangul, Devanagari, Thai), or one character of a script written without spaces (Han, Hiragana,
Katakana).  LaTeX commands (\\frac) and single Latin/Greek letters (math variables) are not words.
A language counts the words of its scripts (en/fr/de/… Latin, zh Han, ja Han + kana, ko Hangul,
ru Cyrillic, …).  The chain of thought is the <think> block (to the end when unterminated; the text
before "</think>" when the prompt opened it; the whole completion when there is no tag).  No words
at all scores 0: an empty chain of thought earns nothing.
"""
from __future__ import annotations

import re

import numpy as np

from .registry import RewardOptionError, register

# script -> (code point ranges, minimum letters per word: 1 = every character is a word)
SCRIPTS: dict[str, tuple[tuple[tuple[int, int], ...], int]] = {
    "latin": (((0x41, 0x5A), (0x61, 0x7A), (0xC0, 0xD6), (0xD8, 0xF6), (0xF8, 0x24F), (0x1E00, 0x1EFF)), 2),
    "cyrillic": (((0x400, 0x4FF),), 2),
    "greek": (((0x370, 0x3FF), (0x1F00, 0x1FFF)), 2),
    "arabic": (((0x600, 0x6FF), (0x750, 0x77F)), 2),
    "hebrew": (((0x590, 0x5FF),), 2),
    "hangul": (((0xAC00, 0xD7AF), (0x1100, 0x11FF), (0x3130, 0x318F)), 1),
    "devanagari": (((0x900, 0x97F),), 2),
    "thai": (((0xE00, 0xE7F),), 1),
    "han": (((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF)), 1),
    "hiragana": (((0x3040, 0x309F),), 1),
    "katakana": (((0x30A0, 0x30FF),), 1),
}
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")


def _script_table() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sorted range edges and the script id (-1: not a letter) of each interval between them."""
    spans = sorted((lo, hi, k) for k, (ranges, _) in enumerate(SCRIPTS.values()) for lo, hi in ranges)
    edges, ids = [0], [-1]
    for lo, hi, k in spans:
        edges += [lo, hi + 1]
        ids += [k, -1]
    min_len = np.array([m for _, m in SCRIPTS.values()], dtype=np.int64)
    per_char = np.array([name in ("han", "hiragana", "katakana") for name in SCRIPTS], dtype=bool)
    return np.array(edges, dtype=np.int64), np.array(ids, dtype=np.int64), min_len, per_char


_EDGES, _IDS, _MIN_LEN, _PER_CHAR = _script_table()

_LATIN = ("en", "fr", "de", "es", "it", "pt", "nl", "sv", "da", "no", "fi", "pl", "cs", "ro", "hu", "tr",
          "id", "ms", "vi", "ca", "sk", "sl", "hr", "et", "lv", "lt", "sw", "tl")
LANGUAGES: dict[str, tuple[str, ...]] = {
    **{code: ("latin",) for code in _LATIN},
    "zh": ("han",), "ja": ("han", "hiragana", "katakana"), "ko": ("hangul",),
    "ru": ("cyrillic",), "uk": ("cyrillic",), "bg": ("cyrillic",), "sr": ("cyrillic",),
    "el": ("greek",), "ar": ("arabic",), "fa": ("arabic",), "ur": ("arabic",), "he": ("hebrew",),
    "hi": ("devanagari",), "mr": ("devanagari",), "ne": ("devanagari",), "th": ("thai",),
}


def thinking(completion: str) -> str:
    """The chain-of-thought part of a completion."""
    start = completion.find("<think>")
    if start >= 0:
        end = completion.find("</think>", start)
        return completion[start + 7:end if end >= 0 else len(completion)]
    end = completion.find("</think>")
    return completion[:end] if end >= 0 else completion


def word_counts(text: str) -> dict[str, int]:
    """Words per script (see the module docstring).  Vectorised: the code points are classified
    with one searchsorted and cut into runs of one script, so a 1 MB text costs milliseconds."""
    if "\\" in text:
        text = _LATEX_COMMAND.sub(" ", text)
    cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    if cps.size == 0:
        return dict.fromkeys(SCRIPTS, 0)
    sid = _IDS[np.searchsorted(_EDGES, cps, side="right") - 1]
    starts = np.concatenate(([0], np.flatnonzero(sid[1:] != sid[:-1]) + 1))
    lengths = np.diff(np.append(starts, sid.size))
    script = sid[starts]
    keep = script >= 0
    script, lengths = script[keep], lengths[keep]
    k = len(SCRIPTS)
    chars = np.bincount(script, weights=lengths, minlength=k)
    runs = np.bincount(script, weights=lengths >= _MIN_LEN[script], minlength=k)
    words = np.where(_PER_CHAR, chars, runs)
    return {name: int(words[i]) for i, name in enumerate(SCRIPTS)}


@register("language")
def language(completion: str, *, lang: str = "en") -> float:
    """Share of the chain of thought's words written in language `lang` (ISO 639-1 code)."""
    scripts = LANGUAGES.get(lang) if isinstance(lang, str) else None
    if scripts is None:
        raise RewardOptionError(f"lang: expected one of {sorted(LANGUAGES)}, got {lang!r}")
    counts = word_counts(thinking(completion))
    total = sum(counts.values())
    return sum(counts[s] for s in scripts) / total if total else 0.0
