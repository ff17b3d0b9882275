"""Tokenizer: a `tokenizers.Tokenizer` plus the chat template, from a Hugging Face folder or a GGUF.

    tok.encode(text) -> list[int]          tok.decode(ids) -> str
    tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True) -> list[int] | str
    tok.eos_token_id, tok.pad_token_id, tok.bos_token_id, tok.vocab_size
    tok.to_transformers() -> transformers.PreTrainedTokenizerFast   (for TRL's processing_class)

From a folder: `tokenizer.json` (+ `tokenizer_config.json` for the special tokens and the chat
template, or `chat_template.jinja`).  From a GGUF (`tokenizer.ggml.model == "gpt2"`, byte-level BPE):
the vocabulary and merges become a `tokenizers` BPE model, the pre-tokenizer split follows
`tokenizer.ggml.pre` (as llama.cpp does), tokens typed CONTROL become special tokens and
USER_DEFINED ones added tokens; the chat template is `tokenizer.chat_template`.
Chat templates are rendered with jinja2 in a sandbox, the way transformers renders them
(trim_blocks, lstrip_blocks, `raise_exception`, `tojson`).
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer as _HFTokenizer, decoders, models, pre_tokenizers, processors

# regexes of llama.cpp's pre-tokenizer types (the split before byte-level BPE)
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
           r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
          r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_PRE_SPLITS = {  # tokenizer.ggml.pre -> list of regexes applied in turn
    "default": [_GPT2], "gpt2": [_GPT2], "gpt-2": [_GPT2],
    "smollm": [r"\p{N}", _GPT2], "starcoder": [r"\p{N}", _GPT2], "refact": [r"\p{N}", _GPT2],
    "llama3": [_LLAMA3], "llama-bpe": [_LLAMA3], "llama-v3": [_LLAMA3], "smaug-bpe": [_LLAMA3],
    "qwen2": [_QWEN2], "deepseek-r1-qwen": [_QWEN2],
}
_CONTROL, _USER_DEFINED = 3, 4


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (the alphabet byte-level BPE tokens are written in)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class Tokenizer:
    def __init__(self, tok: _HFTokenizer, *, chat_template: str | None = None, bos_token: str | None = None,
                 eos_token: str | None = None, pad_token: str | None = None):
        self._tok = tok
        self.chat_template = chat_template
        self.bos_token, self.eos_token = bos_token, eos_token
        self.pad_token = pad_token if pad_token is not None else eos_token
        self._template = None

    # ------------------------------------------------------------------------------ ids
    def _id(self, token: str | None) -> int | None:
        return None if token is None else self._tok.token_to_id(token)

    @property
    def eos_token_id(self) -> int | None:
        return self._id(self.eos_token)

    @property
    def bos_token_id(self) -> int | None:
        return self._id(self.bos_token)

    @property
    def pad_token_id(self) -> int | None:
        return self._id(self.pad_token)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    # ------------------------------------------------------------------------------ text
    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids, *, skip_special_tokens: bool = False) -> str:
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def batch_decode(self, rows, *, skip_special_tokens: bool = False) -> list[str]:
        return [self.decode(r, skip_special_tokens=skip_special_tokens) for r in rows]

    def apply_chat_template(self, messages: list[dict[str, Any]], *, add_generation_prompt: bool = True,
                            tokenize: bool = True, **kwargs) -> list[int] | str:
        """Render `messages` ([{"role": ..., "content": ...}, ...]) with the model's chat template;
        token ids (no extra BOS: the template writes the special tokens) or the text."""
        if self.chat_template is None:
            raise ValueError("this tokenizer has no chat template")
        if not isinstance(messages, (list, tuple)) or not all(isinstance(m, dict) for m in messages):
            raise TypeError("messages must be a list of {'role': ..., 'content': ...} dicts")
        if self._template is None:
            self._template = _compile_template(self.chat_template)
        text = self._template.render(messages=list(messages), add_generation_prompt=add_generation_prompt,
                                     bos_token=self.bos_token or "", eos_token=self.eos_token or "", **kwargs)
        return self.encode(text, add_special_tokens=False) if tokenize else text

    def save_pretrained(self, folder: str | Path) -> None:
        """tokenizer.json + tokenizer_config.json (special tokens, chat template): read back by
        `from_hf_folder` and by transformers' AutoTokenizer."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._tok.save(str(folder / "tokenizer.json"))
        cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": self.bos_token, "eos_token": self.eos_token,
               "pad_token": self.pad_token, "clean_up_tokenization_spaces": False}
        if self.chat_template is not None:
            cfg["chat_template"] = self.chat_template
        (folder / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False))

    def to_transformers(self):
        """This tokenizer as a transformers `PreTrainedTokenizerFast`: the same vocabulary, merges,
        pre-tokenizer, special tokens and chat template (libraries such as TRL accept only
        transformers tokenizers, e.g. GRPOTrainer's `processing_class`).  The result owns a copy of
        the underlying `tokenizers.Tokenizer`: transformers switches padding/truncation on its own
        object, which must not change this one."""
        try:
            from transformers import PreTrainedTokenizerFast  # noqa: PLC0415
        except ImportError:
            raise ImportError("Tokenizer.to_transformers() needs transformers: pip install transformers") from None
        specials = {k: v for k, v in (("bos_token", self.bos_token), ("eos_token", self.eos_token),
                                      ("pad_token", self.pad_token)) if v is not None}
        return PreTrainedTokenizerFast(tokenizer_object=_HFTokenizer.from_str(self._tok.to_str()),
                                       chat_template=self.chat_template, clean_up_tokenization_spaces=False,
                                       **specials)

    # ------------------------------------------------------------------------------ loading
    @classmethod
    def from_hf_folder(cls, folder: str | Path) -> Tokenizer:
        folder = Path(folder)
        file = folder / "tokenizer.json"
        if not file.exists():
            raise ValueError(f"{folder}: no tokenizer.json (a run folder? give one of its checkpoints/step-<N>; "
                             f"a checkpoint saved without its tokenizer? set model.tokenizer=<the model it came from>)")
        try:
            tok = _HFTokenizer.from_file(str(file))
        except Exception as e:  # noqa: BLE001  (tokenizers raises its own Exception type)
            raise ValueError(f"{file}: cannot be read ({e})") from None
        cfg: dict[str, Any] = _read_json(folder / "tokenizer_config.json")
        template = cfg.get("chat_template")
        if isinstance(template, list):  # named templates: take "default"
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        if (folder / "chat_template.jinja").exists():
            template = (folder / "chat_template.jinja").read_text()
        gen = _read_json(folder / "generation_config.json")

        def tok_str(key: str) -> str | None:
            v = cfg.get(key)
            return v.get("content") if isinstance(v, dict) else v

        eos = tok_str("eos_token")
        if eos is None and isinstance(gen.get("eos_token_id"), int):
            eos = tok.id_to_token(gen["eos_token_id"])
        return cls(tok, chat_template=template, bos_token=tok_str("bos_token"), eos_token=eos,
                   pad_token=tok_str("pad_token"))

    @classmethod
    def from_gguf(cls, path: str | Path) -> Tokenizer:
        from r1core.models.gguf_reader import GGUFFile  # noqa: PLC0415
        meta = GGUFFile(path).meta
        kind = meta.get("tokenizer.ggml.model")
        if kind != "gpt2":
            raise ValueError(f"{path}: GGUF tokenizer type {kind!r} is not supported (only byte-level BPE, 'gpt2')")
        tokens: list[str] = meta["tokenizer.ggml.tokens"]
        types: list[int] = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
        merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges") or ()]
        alphabet = _bytes_to_unicode()
        letters = set(alphabet.values())
        # tokens outside the byte alphabet (rare) are re-spelled in it, as transformers does
        vocab = {(t if set(t) <= letters else "".join(alphabet[b] for b in t.encode("utf-8"))): i
                 for i, t in enumerate(tokens)}
        tok = _HFTokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
        pre = meta.get("tokenizer.ggml.pre", "default")
        splits = _PRE_SPLITS.get(pre, [_GPT2])
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in splits]
            + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        tok.decoder = decoders.ByteLevel()
        special = [AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, types)
                   if k == _CONTROL and set(t) <= letters]
        tok.add_special_tokens(special)
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t, k in zip(tokens, types)
                        if k == _USER_DEFINED])

        def token(key: str) -> str | None:
            i = meta.get(f"tokenizer.ggml.{key}")
            return tokens[i] if isinstance(i, int) and 0 <= i < len(tokens) else None

        bos = token("bos_token_id")
        if meta.get("tokenizer.ggml.add_bos_token") and bos is not None:
            tok.post_processor = processors.TemplateProcessing(
                single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, vocab[bos])])
        return cls(tok, chat_template=meta.get("tokenizer.chat_template"), bos_token=bos,
                   eos_token=token("eos_token_id"), pad_token=token("padding_token_id"))


def _read_json(path: Path) -> dict[str, Any]:
    """An optional JSON side file of a tokenizer folder ({} when absent); a corrupted one names itself."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _compile_template(source: str):
    try:
        import jinja2  # noqa: PLC0415
        from jinja2.sandbox import ImmutableSandboxedEnvironment  # noqa: PLC0415
    except ImportError:
        raise ValueError("chat templates need jinja2: `pip install jinja2`") from None

    def raise_exception(message):
        raise ValueError(f"chat template: {message}")

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: _dt.datetime.now().strftime(fmt)
    try:
        return env.from_string(source)
    except jinja2.TemplateError as e:
        raise ValueError(f"chat template does not compile: {e}") from None
