"""What a task is: examples with a prompt, a reference answer and the extra columns its rewards
read, plus the reward weights that score a completion for it.

API the trainer relies on (keep stable; docs/rewards.md):
    task = r1core.tasks.get_task("countdown", n_numbers=4, template="r1zero")
    task.train(n, seed=0) -> list[Example]   # seeded, may repeat problems, never a test problem
    task.test(n=None)     -> list[Example]   # the fixed held-out split, distinct problems, stable order
    task.reward_weights   -> {"countdown": 1.0, "format": 0.1}
    task.columns(examples, group_size=G) -> {"answer": [...], "numbers": [...], ...}  (rows i*G .. i*G+G-1)
    task.reward(completions, examples, group_size=G) -> RewardBatch   (r1core.rewards.score)
    Example.prompt (str), .answer (str), .question (str), .messages (chat form), .extra (dict)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from r1core.tasks.prompts import R1ZERO_SYSTEM, build_prompt, chat_messages


@dataclass(frozen=True)
class Example:
    """One problem.  `prompt` is what the model sees (already templated), `answer` the reference
    final answer, `extra` the task's additional reward columns (countdown: numbers, target)."""
    question: str
    answer: str
    prompt: str
    messages: tuple = ()
    extra: dict = field(default_factory=dict)

    def columns(self) -> dict[str, Any]:
        """The keyword columns the rewards of this example read."""
        return {"answer": self.answer, **self.extra}

    def __getitem__(self, key: str) -> Any:  # dict-style access, as dataset rows are read
        if key in ("question", "answer", "prompt", "messages"):
            return getattr(self, key)
        return self.extra[key]


class Task:
    """Base of every task: prompt templating, reward columns, scoring.  Subclasses implement
    `train` and `test`."""

    name = "task"
    default_weights: dict[str, float] = {"accuracy": 1.0, "format": 0.1}
    correctness = "accuracy"  # the reward whose value 1 means "right" (evaluation, pass@k)

    def __init__(self, *, template: str = "r1zero", tokenizer: Any = None, system: str | None = R1ZERO_SYSTEM,
                 reward_weights: dict[str, float] | None = None):
        build_prompt("check", template=template, tokenizer=tokenizer, system=system)  # validates the options
        self.template, self.tokenizer, self.system = template, tokenizer, system
        weights = dict(self.default_weights if reward_weights is None else reward_weights)
        if not weights or not all(isinstance(k, str) and isinstance(v, (int, float)) for k, v in weights.items()):
            raise ValueError(f"reward_weights: expected a non-empty dict name -> float, got {reward_weights!r}")
        self.reward_weights = {k: float(v) for k, v in weights.items()}

    # -- to implement ---------------------------------------------------------------------------
    def train(self, n: int, seed: int = 0) -> list[Example]:
        raise NotImplementedError

    def test(self, n: int | None = None) -> list[Example]:
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------
    def example(self, question: str, answer: str, **extra: Any) -> Example:
        prompt = build_prompt(question, template=self.template, tokenizer=self.tokenizer, system=self.system)
        messages = tuple(chat_messages(question, system=self.system))
        return Example(question=question, answer=str(answer), prompt=prompt, messages=messages, extra=extra)

    def columns(self, examples: Sequence[Example], *, group_size: int = 1) -> dict[str, list]:
        """Per-completion reward columns: each example's columns repeated `group_size` times."""
        if not isinstance(group_size, int) or group_size < 1:
            raise ValueError(f"group_size: expected an int >= 1, got {group_size!r}")
        rows = [ex.columns() for ex in examples for _ in range(group_size)]
        keys = sorted({k for r in rows for k in r})
        return {k: [r.get(k) for r in rows] for k in keys}

    def reward(self, completions: Sequence[Any], examples: Sequence[Example], *, group_size: int = 1, **kw: Any):
        """Score completions (rows i*G .. i*G+G-1 answer examples[i]) with this task's weights."""
        from r1core.rewards import score
        if len(completions) != len(examples) * group_size:
            raise ValueError(f"completions: expected len(examples) * group_size = {len(examples) * group_size}, "
                             f"got {len(completions)}")
        return score(self.reward_weights, completions, **self.columns(examples, group_size=group_size), **kw)

    def __repr__(self) -> str:
        return f"<task {self.name} template={self.template} rewards={self.reward_weights}>"


def check_count(n: Any, name: str = "n", *, allow_none: bool = False) -> int | None:
    if n is None and allow_none:
        return None
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"{name}: expected an int >= 0, got {n!r}")
    return n


_REGISTRY: dict[str, Callable[..., Task]] = {}
_FAMILIES: dict[str, Callable[..., Task]] = {}   # "reasoning_gym" -> factory(member, **kw), for "reasoning_gym:<member>"


def register_task(name: str, factory: Callable[..., Task] | None = None, *, family: bool = False):
    """Register a task factory under `name` (usable as a decorator).  With family=True the factory
    serves every name "<name>:<member>" and is called as factory(member, **kwargs)."""
    def add(f):
        (_FAMILIES if family else _REGISTRY)[name] = f
        return f
    return add(factory) if factory is not None else add


def get_task(name: str, **kwargs: Any) -> Task:
    """Build the task registered as `name` with its knobs, e.g. get_task("arithmetic", digits=4) or
    get_task("reasoning_gym:leg_counting", max_animals=5)."""
    if not isinstance(name, str):
        raise ValueError(f"task: expected a task name (str), got {name!r}")
    family, sep, member = name.partition(":")
    if sep and family in _FAMILIES:
        return _FAMILIES[family](member, **kwargs)
    if name not in _REGISTRY:
        raise ValueError(f"task: unknown {name!r}; have {task_names()}")
    return _REGISTRY[name](**kwargs)


def task_names() -> list[str]:
    """Registered task names; a family shows as "<family>:<name>"."""
    return sorted([*_REGISTRY, *(f"{f}:<name>" for f in _FAMILIES)])
