"""The R1-Zero template text (exactly the paper's) and chat-template prompts."""
import pytest

from r1core.tasks import R1ZERO_SYSTEM, build_prompt, chat_prompt, get_task, r1zero_prompt

PAPER = ("A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
         "The assistant first thinks about the reasoning process in the mind and then provides the user with the "
         "answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> "
         "tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>. "
         "User: What is 2 + 2?. Assistant:")


class FakeTokenizer:
    """apply_chat_template like Hugging Face's, rendering roles as tags."""

    def __init__(self, system_ok=True):
        self.system_ok = system_ok
        self.seen = None

    def apply_chat_template(self, messages, tokenize=True, add_generation_prompt=False):
        assert tokenize is False and add_generation_prompt is True
        if not self.system_ok and any(m["role"] == "system" for m in messages):
            raise ValueError("System role not supported")
        self.seen = messages
        return "".join(f"<|{m['role']}|>{m['content']}" for m in messages) + "<|assistant|>"


def test_r1zero_template_is_the_papers():
    assert r1zero_prompt("What is 2 + 2?") == PAPER
    assert build_prompt("What is 2 + 2?") == PAPER
    assert build_prompt("Q", template="plain") == "Q"
    assert R1ZERO_SYSTEM.endswith("<answer> answer here </answer>.")


def test_chat_prompt_with_and_without_system_role():
    tok = FakeTokenizer()
    text = chat_prompt("Q?", tok)
    assert text == f"<|system|>{R1ZERO_SYSTEM}<|user|>Q?<|assistant|>"
    tok = FakeTokenizer(system_ok=False)
    text = chat_prompt("Q?", tok)
    assert tok.seen == [{"role": "user", "content": f"{R1ZERO_SYSTEM}\n\nQ?"}]
    assert chat_prompt("Q?", FakeTokenizer(), system=None) == "<|user|>Q?<|assistant|>"


def test_chat_prompt_errors():
    with pytest.raises(TypeError, match="apply_chat_template"):
        chat_prompt("Q", object())
    with pytest.raises(ValueError, match="tokenizer"):
        build_prompt("Q", template="chat")


def test_task_prompts_follow_the_template():
    ex = get_task("arithmetic", template="chat", tokenizer=FakeTokenizer()).train(1, seed=0)[0]
    assert ex.prompt.startswith("<|system|>") and ex.question in ex.prompt
    assert ex.messages[-1] == {"role": "user", "content": ex.question}
    ex = get_task("arithmetic").train(1, seed=0)[0]
    assert ex.prompt == r1zero_prompt(ex.question) and ex["answer"] == ex.answer
