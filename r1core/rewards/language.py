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

from .registry import RewardOptionError, register

SCRIPTS = {
    "latin": r"[A-Za-z\u00C0-\u024F\u1E00-\u1EFF]{2,}",
    "cyrillic": r"[\u0400-\u04FF]{2,}",
    "greek": r"[\u0370-\u03FF\u1F00-\u1FFF]{2,}",
    "arabic": r"[\u0600-\u06FF\u0750-\u077F]{2,}",
    "hebrew": r"[\u0590-\u05FF]{2,}",
    "hangul": r"[\uAC00-\uD7AF\u1100-\u11FF\u3130-\u318F]+",
    "devanagari": r"[\u0900-\u097F]{2,}",
    "thai": r"[\u0E00-\u0E7F]+",
    "han": r"[\u3400-\u4DBF\u4E00-\u9FFF\uF900-\uFAFF]",
    "hiragana": r"[\u3040-\u309F]",
    "katakana": r"[\u30A0-\u30FF]",
}
_SCRIPT_RE = {name: re.compile(rx) for name, rx in SCRIPTS.items()}
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")

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
    """Words per script (see the module docstring)."""
    text = _LATEX_COMMAND.sub(" ", text)
    return {name: len(rx.findall(text)) for name, rx in _SCRIPT_RE.items()}


@register("language")
def language(completion: str, *, lang: str = "en") -> float:
    """Share of the chain of thought's words written in language `lang` (ISO 639-1 code)."""
    scripts = LANGUAGES.get(lang) if isinstance(lang, str) else None
    if scripts is None:
        raise RewardOptionError(f"lang: expected one of {sorted(LANGUAGES)}, got {lang!r}")
    counts = word_counts(thinking(completion))
    total = sum(counts.values())
    return sum(counts[s] for s in scripts) / total if total else 0.0
