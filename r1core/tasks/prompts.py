"""Prompt building: the DeepSeek-R1-Zero template (plain text) and chat-template prompts.

R1-Zero trains a base model with a fixed plain-text template (R1 paper, Table 1; exact text below,
including the "." after the question).  Instruct models are prompted through their tokenizer's
chat template instead: the same instructions go in a system message and the question in the user
message.
"""
from __future__ import annotations

from typing import Any

R1ZERO_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> "
    "</answer> tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here "
    "</answer>. User: {prompt}. Assistant:"
)

# The instructions of the template without the "User: … Assistant:" frame: the system message of a
# chat prompt, so a chat model is asked for the same <think>/<answer> format as a base model.
R1ZERO_SYSTEM = R1ZERO_TEMPLATE.split(" User: ")[0]

TEMPLATES = ("r1zero", "chat", "plain")


def r1zero_prompt(question: str) -> str:
    """The R1-Zero training prompt for one question (the model continues after "Assistant:")."""
    return R1ZERO_TEMPLATE.format(prompt=question)


def chat_messages(question: str, *, system: str | None = R1ZERO_SYSTEM) -> list[dict[str, str]]:
    """The messages of a chat prompt: an optional system message, then the question."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": question})
    return messages


def chat_prompt(question: str, tokenizer: Any, *, system: str | None = R1ZERO_SYSTEM) -> str:
    """The question rendered by `tokenizer.apply_chat_template` (generation prompt added).

    Templates that refuse a system role (they raise) get the system text prepended to the user
    message instead, so every chat model sees the same instructions.
    """
    apply = getattr(tokenizer, "apply_chat_template", None)
    if not callable(apply):
        raise TypeError(f"tokenizer: needs an apply_chat_template method, got {type(tokenizer).__name__}")
    try:
        text = apply(chat_messages(question, system=system), tokenize=False, add_generation_prompt=True)
    except Exception:
        if not system:
            raise
        text = apply(chat_messages(f"{system}\n\n{question}", system=None), tokenize=False,
                     add_generation_prompt=True)
    if not isinstance(text, str):
        raise TypeError(f"tokenizer.apply_chat_template returned {type(text).__name__}, expected str")
    return text


def build_prompt(question: str, *, template: str = "r1zero", tokenizer: Any = None,
                 system: str | None = R1ZERO_SYSTEM) -> str:
    """One prompt string: template "r1zero" (base models), "chat" (needs `tokenizer`) or "plain"
    (the question as is)."""
    if template == "r1zero":
        return r1zero_prompt(question)
    if template == "plain":
        return question
    if template == "chat":
        if tokenizer is None:
            raise ValueError("template='chat' needs tokenizer= (an object with apply_chat_template)")
        return chat_prompt(question, tokenizer, system=system)
    raise ValueError(f"template: expected one of {TEMPLATES}, got {template!r}")
