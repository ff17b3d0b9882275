"""Rule-based rewards (docs/spec.md §5): plain functions registered by name, each returning a float in
[0, 1] that never raises on any text, a batch scorer over worker processes, and a TRL adapter.

    from r1core.rewards import get, score, trl_reward
    get("accuracy")(completion, answer="42")                 -> 1.0 / 0.0
    score({"accuracy": 1.0, "format": 0.1}, completions, answer=answers).total   # [N]

Built-in rewards: accuracy, format, tag_count, language, countdown, length, reasoning_gym (a
reasoning-gym task's own verifier; optional extra `tasks`), routed (a mixture row's own correctness
reward).  This package imports nothing else from r1core (its worker processes load it alone).  Details: docs/rewards.md.
"""
from .accuracy import accuracy, answer_key, is_equivalent
from .countdown import countdown, evaluate_expression
from .extract import answer_is, answer_tag, extract_answer, last_boxed, reference_answer
from .format import format_reward, tag_count
from .language import language
from .length import length
from .normalize import normalize
from . import rgym, routed  # noqa: F401  (register the rewards "reasoning_gym" and "routed")
from .registry import RewardOptionError, as_text, get, names, register, safe_reward
from .score import RewardBatch, score
from .trl import trl_reward

format = format_reward  # noqa: A001  (docs/spec.md §5 name; not in __all__ so `import *` never shadows the builtin)

__all__ = [
    "RewardBatch", "RewardOptionError", "accuracy", "answer_is", "answer_key", "answer_tag", "as_text", "countdown",
    "evaluate_expression", "extract_answer", "format_reward", "get", "is_equivalent", "language", "last_boxed",
    "length", "names", "normalize", "reference_answer", "register", "safe_reward", "score", "tag_count",
    "trl_reward",
]
