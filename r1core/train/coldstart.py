"""Built-in cold-start sets: a few hundred short, correct, well-formatted examples that teach a small
model the R1 answer format before RL (R1 pipeline stage 1, in miniature).

    sft.data = "builtin:arithmetic"      # `sft.data` may name one of BUILTIN instead of a JSONL file

"arithmetic": single-digit sums, differences and products ("What is 7 + 5?") answered as
    <think>
    7 + 5 = 12
    </think>
    <answer>12</answer>
The RL task is then harder (two-digit operands): the cold start teaches the *format* on facts the
model already knows; whatever accuracy it gains on the held-out two-digit problems comes from RL.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

BUILTIN = ("arithmetic",)


def arithmetic_records(n: int, seed: int = 0, ops: str = "+-*") -> list[dict]:
    rng = random.Random(f"coldstart-arithmetic-{seed}")
    out = []
    for _ in range(n):
        a, b, op = rng.randint(0, 9), rng.randint(0, 9), rng.choice(ops)
        value = {"+": a + b, "-": a - b, "*": a * b}[op]
        out.append({"prompt": f"What is {a} {op} {b}?",
                    "completion": f"<think>\n{a} {op} {b} = {value}\n</think>\n<answer>{value}</answer>",
                    "answer": str(value)})
    return out


def resolve_sft_data(spec: str, folder: str | Path, *, n: int = 256, seed: int = 0, ops: str = "+-*") -> str:
    """A JSONL path for `spec`: a file as is, or "builtin:<name>" written into `folder`."""
    if not spec.startswith("builtin:"):
        return spec
    name = spec.removeprefix("builtin:")
    if name not in BUILTIN:
        raise ValueError(f"sft.data: unknown built-in cold-start set {name!r}; have {list(BUILTIN)}")
    path = Path(folder) / f"coldstart-{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in arithmetic_records(n, seed, ops)))
    return str(path)
