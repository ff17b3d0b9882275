"""Tasks: seeded problem generators and dataset loaders, prompts, evaluation (pass@k, cons@k).

    from r1core.tasks import get_task
    task = get_task("countdown", n_numbers=4)       # or "arithmetic", "chain_sum", "gsm8k"/"jsonl"
    batch = task.train(64, seed=0)                  # [Example(prompt, answer, extra={numbers, target})]
    rewards = task.reward(completions, batch, group_size=G)

Built-in tasks: arithmetic, chain_sum, countdown (generated), jsonl / gsm8k (path=…), word_problems
(20 shipped problems), reasoning_gym:<name> (any reasoning-gym generator; extra `tasks`), mixture
(tasks={name: weight}).  API details: docs/rewards.md.
"""
from r1core.tasks.base import Example, Task, get_task, register_task, task_names
from r1core.tasks.evaluation import cons_at_k, evaluate, majority_vote, mean_pass_at_k, pass_at_1, pass_at_k
from r1core.tasks.generated import ArithmeticTask, ChainSumTask, CountdownTask, GeneratedTask
from r1core.tasks.jsonl import JsonlTask, WordProblemsTask, final_answer, load_jsonl
from r1core.tasks.mixture import MixtureTask
from r1core.tasks.rgym import ReasoningGymTask
from r1core.tasks.prompts import R1ZERO_SYSTEM, R1ZERO_TEMPLATE, build_prompt, chat_prompt, r1zero_prompt

__all__ = [
    "ArithmeticTask", "ChainSumTask", "CountdownTask", "Example", "GeneratedTask", "JsonlTask", "MixtureTask", "R1ZERO_SYSTEM", "ReasoningGymTask",
    "R1ZERO_TEMPLATE", "Task", "WordProblemsTask", "build_prompt", "chat_prompt", "cons_at_k", "evaluate",
    "final_answer", "get_task", "load_jsonl", "majority_vote", "mean_pass_at_k", "pass_at_1", "pass_at_k",
    "r1zero_prompt", "register_task", "task_names",
]
