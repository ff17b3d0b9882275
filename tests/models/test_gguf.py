"""GGUF: a tiny Llama written the way llama.cpp's converter writes one (q/k rows permuted, weights
quantised Q8_0 / Q4_0 / Q4_1 / Q5_0, a byte-level BPE vocabulary), read by r1core and by transformers
(the oracle); our block dequantisers against the gguf package's; the SmolLM2 built-in (slow: transformers
needs ~20 s to read that file)."""
import numpy as np
import pytest
import torch

import r1core
from r1core.models import resolve_source
from r1core.models.gguf_reader import GGUFFile, dequantize

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType

H, I, HEADS, KV, LAYERS = 64, 96, 4, 2, 2
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _byte_vocab():
    """special tokens, the 256 byte symbols, and merges for a few common pairs."""
    from r1core.models.tokenizer import _bytes_to_unicode
    alphabet = [_bytes_to_unicode()[b] for b in range(256)]
    merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "o n", "Ġ s", "r e", "a t"]
    tokens = SPECIAL + alphabet + ["".join(m.split()) for m in merges]
    return tokens, merges


def _permute(w, n_head):
    """llama.cpp's convert_hf_to_gguf permutation of q/k rows (halves -> adjacent pairs)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_llama_gguf(path, *, seed=0, arch="llama", truncate_to=None):
    g = np.random.default_rng(seed)
    tokens, merges = _byte_vocab()
    V = len(tokens)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(LAYERS)
    w.add_context_length(128)
    w.add_embedding_length(H)
    w.add_feed_forward_length(I)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(H // HEADS)
    w.add_vocab_size(V)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([3] * len(SPECIAL) + [1] * (V - len(SPECIAL)))
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template(TEMPLATE)

    def mat(rows, cols):
        return (g.standard_normal((rows, cols)) * 0.2).astype(np.float32)

    def add(name, arr, qtype=None):
        if qtype is None:
            w.add_tensor(name, arr)
        elif qtype == Q.F16:
            w.add_tensor(name, arr.astype(np.float16))
        else:   # raw quantised bytes; the writer derives the value shape from the byte shape
            w.add_tensor(name, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)

    D = H // HEADS
    add("token_embd.weight", mat(V, H), Q.Q8_0)
    add("output_norm.weight", (1 + 0.1 * g.standard_normal(H)).astype(np.float32))
    add("output.weight", mat(V, H), Q.Q4_1)
    for i in range(LAYERS):
        add(f"blk.{i}.attn_norm.weight", (1 + 0.1 * g.standard_normal(H)).astype(np.float32))
        add(f"blk.{i}.ffn_norm.weight", (1 + 0.1 * g.standard_normal(H)).astype(np.float32))
        add(f"blk.{i}.attn_q.weight", _permute(mat(HEADS * D, H), HEADS), Q.Q4_0)
        add(f"blk.{i}.attn_k.weight", _permute(mat(KV * D, H), KV), Q.Q8_0)
        add(f"blk.{i}.attn_v.weight", mat(KV * D, H), Q.Q4_1)
        add(f"blk.{i}.attn_output.weight", mat(H, HEADS * D), Q.Q5_0)   # through gguf.quants
        add(f"blk.{i}.ffn_gate.weight", mat(I, H), Q.Q4_1)
        add(f"blk.{i}.ffn_up.weight", mat(I, H), Q.F16)
        add(f"blk.{i}.ffn_down.weight", mat(H, I), Q.BF16)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    if truncate_to is not None:
        data = path.read_bytes()
        path.write_bytes(data[:truncate_to(len(data))])
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    return write_tiny_llama_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.F16, Q.BF16, Q.Q5_0])
def test_dequantize_matches_gguf_package(qtype):
    x = np.random.default_rng(1).standard_normal((3, 96)).astype(np.float32) * 3
    raw = gguf.quants.quantize(x, qtype)
    ref = gguf.quants.dequantize(raw, qtype)
    ours = dequantize(raw.view(np.uint8).reshape(-1), int(qtype), (3, 96))
    assert torch.equal(ours, torch.from_numpy(np.ascontiguousarray(ref, dtype=np.float32)))


def test_tiny_gguf_logits_match_transformers(tiny_gguf, tmp_path):
    import transformers
    ours = r1core.load_model(tiny_gguf)
    ref = transformers.AutoModelForCausalLM.from_pretrained(tiny_gguf.parent, gguf_file=tiny_gguf.name,
                                                            dtype=torch.float32).eval()
    ids = torch.randint(0, ours.config.vocab_size, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), ref(ids).logits, atol=1e-4, rtol=0)
    assert ours.config.num_kv_heads == KV and not ours.config.tie_word_embeddings
    # a GGUF model saved as a Hugging Face folder (config built from the GGUF metadata) loads in transformers
    ours.save_pretrained(tmp_path)
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, ours(ids), atol=1e-5, rtol=0)


def test_tiny_gguf_tokenizer_matches_transformers(tiny_gguf):
    import transformers
    ours = r1core.load_tokenizer(tiny_gguf)
    ref = transformers.AutoTokenizer.from_pretrained(tiny_gguf.parent, gguf_file=tiny_gguf.name)
    for text in ["the cat sat on the mat", "  two  spaces\tand tabs\n", "digits 12345", "ünïcödé 中文 🤗",
                 "<|im_start|>user\nhello<|im_end|>", ""]:
        assert ours.encode(text) == ref.encode(text), text
        assert ours.decode(ours.encode(text)) == text
    msgs = [{"role": "user", "content": "the answer?"}]
    assert ours.apply_chat_template(msgs) == ref.apply_chat_template(msgs, add_generation_prompt=True,
                                                                     tokenize=True, return_dict=False)
    assert ours.apply_chat_template(msgs, tokenize=False).endswith("<|im_start|>assistant\n")
    assert (ours.eos_token_id, ours.pad_token_id, ours.bos_token_id) == (2, 2, 1)


def test_tokenizer_save_pretrained_round_trip(tiny_gguf, tmp_path):
    """A GGUF tokenizer saved as tokenizer.json + tokenizer_config.json reads back the same in r1core and
    in transformers (the trainer saves it beside each checkpoint)."""
    import transformers
    tok = r1core.load_tokenizer(tiny_gguf)
    tok.save_pretrained(tmp_path)
    ours, ref = r1core.load_tokenizer(tmp_path), transformers.AutoTokenizer.from_pretrained(tmp_path)
    msgs = [{"role": "user", "content": "the 42 answers"}]
    for text in ["the cat 123", "<|im_start|>a<|im_end|>"]:
        assert tok.encode(text) == ours.encode(text) == ref.encode(text)
    assert tok.apply_chat_template(msgs) == ours.apply_chat_template(msgs) == ref.apply_chat_template(
        msgs, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert (ours.eos_token_id, ours.pad_token_id) == (ref.eos_token_id, ref.pad_token_id) == (2, 2)


def test_reader_parses_metadata(tiny_gguf):
    f = GGUFFile(tiny_gguf)
    assert f.meta["general.architecture"] == "llama"
    assert f.meta["llama.block_count"] == LAYERS
    assert f.tensors["blk.0.ffn_gate.weight"].shape == (I, H)


# ------------------------------------------------------------------------------------------------
# rejected files
# ------------------------------------------------------------------------------------------------
def test_truncated_gguf_is_rejected(tmp_path):
    path = write_tiny_llama_gguf(tmp_path / "cut.gguf", truncate_to=lambda n: n - 100)
    with pytest.raises(ValueError, match="truncated"):
        r1core.load_model(path)
    head = write_tiny_llama_gguf(tmp_path / "head.gguf", truncate_to=lambda n: 2000)
    with pytest.raises(ValueError, match="truncated|corrupted"):
        r1core.load_model(head)


def test_corrupted_gguf_is_rejected(tmp_path, tiny_gguf):
    bad_magic = tmp_path / "magic.gguf"
    bad_magic.write_bytes(b"GGML" + tiny_gguf.read_bytes()[4:])
    with pytest.raises(ValueError, match="not a GGUF"):
        r1core.load_model(bad_magic)
    data = bytearray(tiny_gguf.read_bytes())
    data[16:24] = (2**40).to_bytes(8, "little")        # absurd metadata count
    bad_count = tmp_path / "count.gguf"
    bad_count.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupted|truncated"):
        r1core.load_model(bad_count)


def test_gguf_unknown_architecture_is_rejected(tmp_path):
    path = write_tiny_llama_gguf(tmp_path / "mamba.gguf", arch="mamba")
    with pytest.raises(ValueError, match="unknown architecture 'mamba'"):
        r1core.load_model(path)


# ------------------------------------------------------------------------------------------------
# the built-in SmolLM2-135M-Instruct
# ------------------------------------------------------------------------------------------------
def _smollm2_or_skip():
    try:
        return resolve_source("smollm2-135m-instruct")
    except ValueError as e:
        pytest.skip(str(e))


def test_smollm2_builtin_answers():
    """The real pretrained model answers a factual question (a broken loader would not)."""
    _smollm2_or_skip()
    model, tok = r1core.load_model("smollm2-135m-instruct"), r1core.load_tokenizer("smollm2-135m-instruct")
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}])
    out = r1core.generate(model, [prompt], max_new_tokens=12, temperature=0, eos_token_id=tok.eos_token_id)
    assert "Paris" in tok.decode(out.completions()[0])


@pytest.mark.slow
def test_smollm2_matches_transformers_on_the_same_gguf():
    import transformers
    path = _smollm2_or_skip()
    ours, tok = r1core.load_model("smollm2-135m-instruct"), r1core.load_tokenizer("smollm2-135m-instruct")
    ref = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                            dtype=torch.float32).eval()
    ref_tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    for text in ["Hello world!", "What is 12345 + 678?\n\n  x", "naïve 中文 🤗 don't", "<|im_start|>user\nhi<|im_end|>"]:
        assert tok.encode(text) == ref_tok.encode(text), text
    msgs = [{"role": "user", "content": "Name three primary colours."}]
    prompt = tok.apply_chat_template(msgs)
    assert prompt == ref_tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=False)
    with torch.no_grad():
        torch.testing.assert_close(ours(torch.tensor([prompt])), ref(torch.tensor([prompt])).logits, atol=1e-4,
                                   rtol=0)
    got = r1core.generate(ours, [prompt], max_new_tokens=24, temperature=0, eos_token_id=2).completions()[0]
    want = ref.generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False, eos_token_id=2,
                        pad_token_id=2)[0, len(prompt):].tolist()
    assert got == want[:len(got)] and (len(got) == len(want) or got[-1] == 2)
