"""Stand-ins for the trainer tests: a tiny causal LM, a character tokenizer, a naive sampling loop
and a tiny task with a rule reward, so a GRPO step takes milliseconds.

The tiny LM exposes exactly what the trainer uses from a CausalLM (docs/spec.md §5): `hidden_states`,
`lm_head`, `forward`, `save_pretrained`, and a `layers` ModuleList (FSDP shards per block).
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from r1core.train.build import Deps

CHARS = "0123456789+=ab"
EOS = len(CHARS)
VOCAB = len(CHARS) + 1


class Block(nn.Module):
    def __init__(self, h: int):
        super().__init__()
        self.up = nn.Linear(h, 2 * h)
        self.down = nn.Linear(2 * h, h)

    def forward(self, x_BTH):
        T = x_BTH.shape[1]
        mean = x_BTH.cumsum(1) / torch.arange(1, T + 1, dtype=x_BTH.dtype, device=x_BTH.device)[:, None]
        return x_BTH + self.down(torch.tanh(self.up(mean + x_BTH)))


class TinyLM(nn.Module):
    def __init__(self, hidden: int = 16, layers: int = 2, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.embed = nn.Embedding(VOCAB, hidden)
        self.layers = nn.ModuleList(Block(hidden) for _ in range(layers))
        self.lm_head = nn.Linear(hidden, VOCAB, bias=False)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        self.hidden = hidden

    def hidden_states(self, input_ids, **_):
        x = self.embed(input_ids)
        for layer in self.layers:
            x = layer(x)
        return x

    def forward(self, input_ids, **_):
        return self.lm_head(self.hidden_states(input_ids))

    def save_pretrained(self, folder):
        from safetensors.torch import save_file
        Path(folder).mkdir(parents=True, exist_ok=True)
        # named_parameters, as r1core's CausalLM does: under FSDP2's unshard() they are the full tensors
        save_file({k: v.detach().contiguous().cpu() for k, v in self.named_parameters()},
                  str(Path(folder) / "model.safetensors"))
        (Path(folder) / "config.json").write_text(json.dumps({"tiny": True, "hidden": self.hidden,
                                                              "layers": len(self.layers)}))


def load_tiny(source, *, dtype=torch.float32, device="cpu"):
    if source == "tiny":
        return TinyLM().to(dtype=dtype, device=device)
    from safetensors.torch import load_file
    cfg = json.loads((Path(source) / "config.json").read_text())
    m = TinyLM(cfg["hidden"], cfg["layers"])
    m.load_state_dict(load_file(str(Path(source) / "model.safetensors")))
    return m.to(dtype=dtype, device=device)


class CharTokenizer:
    eos_token_id = EOS

    def encode(self, text):
        return [CHARS.index(c) for c in text if c in CHARS]

    def decode(self, ids):
        return "".join(CHARS[i] for i in ids if 0 <= i < len(CHARS))


@dataclass
class Rollout:
    tokens: torch.Tensor
    prompt_lens: torch.Tensor
    completion_mask: torch.Tensor
    logp: torch.Tensor
    logp_policy: torch.Tensor | None = None


@torch.no_grad()
def naive_generate(model, prompts, *, num_samples=1, max_new_tokens, temperature=1.0, top_p=1.0, top_k=0,
                   eos_token_id=None, seed=None):
    """No KV cache: re-run the whole prefix each token (slow, obviously right)."""
    g = torch.Generator().manual_seed(seed or 0)
    rows, masks, lps, plens = [], [], [], []
    for p in prompts:
        x = torch.tensor([p] * num_samples)
        done = torch.zeros(num_samples, dtype=torch.bool)
        m = torch.zeros(num_samples, 0, dtype=torch.bool)
        lp = torch.zeros(num_samples, 0)
        for _ in range(max_new_tokens):
            logits = model(x)[:, -1].float()
            if temperature == 0:
                nxt = logits.argmax(-1)
            else:
                probs = torch.softmax(logits / temperature, -1)
                nxt = torch.multinomial(probs, 1, generator=g).squeeze(1)
            l = torch.log_softmax(logits / (temperature or 1.0), -1).gather(1, nxt[:, None]).squeeze(1)
            nxt = torch.where(done, torch.full_like(nxt, EOS), nxt)
            m = torch.cat([m, (~done)[:, None]], 1)
            lp = torch.cat([lp, torch.where(done, 0.0, l)[:, None]], 1)
            x = torch.cat([x, nxt[:, None]], 1)
            done |= nxt == (eos_token_id if eos_token_id is not None else -1)
            if done.all():
                break
        rows.append(x)
        masks.append(torch.cat([torch.zeros(num_samples, len(p), dtype=torch.bool), m], 1))
        lps.append(torch.cat([torch.zeros(num_samples, len(p)), lp], 1))
        plens += [len(p)] * num_samples
    T = max(r.shape[1] for r in rows)
    pad = lambda t, v: torch.nn.functional.pad(t, (0, T - t.shape[1]), value=v)  # noqa: E731
    logp = torch.cat([pad(l, 0.0) for l in lps])        # no truncation here: the policy's log-probs
    return Rollout(torch.cat([pad(r, EOS) for r in rows]), torch.tensor(plens),
                   torch.cat([pad(m, False) for m in masks]), logp, logp.clone())


@dataclass(frozen=True)
class Ex:
    prompt: str
    answer: str
    question: str = ""
    extra: dict = None

    def columns(self):
        return {"answer": self.answer}


@dataclass
class RewardBatch:
    per_reward: list
    total: list
    names: tuple


class TinyTask:
    """'a+b=' -> (a+b) mod 10 as the first character; reward 1 if right, 0.2 if it is a digit."""
    name = "tiny"
    reward_weights = {"accuracy": 1.0}
    correctness = "accuracy"

    def _make(self, rng):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        return Ex(prompt=f"{a}+{b}=", answer=str((a + b) % 10))

    def train(self, n, seed=0):
        rng = random.Random(f"train-{seed}")
        return [self._make(rng) for _ in range(n)]

    def test(self, n=None):
        rng = random.Random("test")
        return [self._make(rng) for _ in range(n or 8)]

    def reward(self, completions, examples, *, group_size=1):
        out = []
        for i, c in enumerate(completions):
            ans = examples[i // group_size].answer
            out.append([1.0 if c[:1] == ans else (0.2 if c[:1].isdigit() else 0.0)])
        return RewardBatch(per_reward=out, total=[r[0] for r in out], names=("accuracy",))


def tiny_deps() -> Deps:
    return Deps(load_model=load_tiny, load_tokenizer=lambda src: CharTokenizer(), generate=naive_generate,
                get_task=lambda name, **kw: TinyTask())


def tiny_config(out, *overrides):
    from r1core.train.config import load_config
    base = [f"out={out}", "model=tiny", "task=tiny", "task.template=plain", "rollout.prompts=4",
            "rollout.group_size=4", "rollout.max_new_tokens=3", "optim.lr=0.05", "optim.micro_batch=4",
            "run.eval_n=0", "run.progress=false", "run.tensorboard=false", "run.plot=false", "steps=3",
            "save_every=0",
            "run.threads=1"]
    return load_config(None, [*base, *overrides])


def make_tiny_llama(folder, seed: int = 0) -> str:
    """A random 2-layer r1core Llama (tied embeddings) over the character vocabulary, saved as a HF folder."""
    from r1core.models import CausalLM, ModelConfig
    cfg = ModelConfig.from_hf({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": VOCAB + 1,
                               "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                               "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": True,
                               "eos_token_id": EOS, "max_position_embeddings": 64})
    torch.manual_seed(seed)
    model = CausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3)
    model.save_pretrained(folder)
    return str(folder)


def llama_deps(folder) -> Deps:
    """The real stack (r1core.load_model, r1core.generate) on the tiny Llama, with the tiny task."""
    import r1core
    return Deps(load_model=lambda src, **kw: r1core.load_model(folder if src == "tiny" else src, **kw),
                load_tokenizer=lambda src: CharTokenizer(), generate=r1core.generate,
                get_task=lambda name, **kw: TinyTask())
