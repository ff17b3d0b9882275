"""Long chains of thought: one GRPO update at a fixed number of completion tokens per step.

    python -m benches.bench_long_cot                       # the grid, each run in its own process
    python -m benches.bench_long_cot --T 512 2048 --tokens 4096 --layers 8 --out benches/results/cpu/long_cot.json
    python -m benches.bench_long_cot --worker r1core --T 2048   # one run, prints one JSON line

At `--tokens` completion tokens per step (default 16k), completion length T means tokens/T completions
of one shared prompt (`--prompt` tokens).  One update = log-probs of the sampled tokens + forward +
backward + clip + AdamW, on given completions (random token ids; the rollout would dominate on CPU),
micro-batch = the whole step (one forward and one backward), float32.  Stacks, each in a fresh
process (peak RSS is per process):

  r1core       GRPOTrainer._update on the batch GRPOTrainer._make_batch builds (layout chosen by cost:
               shared-prefix packing with mask-free segment attention; fused linear GRPO loss)
  r1core-ckpt  the same with model.gradient_checkpointing=true (every block)
  trl          the way a TRL user does it: the transformers model (attn_implementation="sdpa") with
               gradient_checkpointing_enable(), logits materialised for the completion positions
               (logits_to_keep), trl.trainer.utils.selective_log_softmax, TRL 1.16's loss_type="dapo"
               formula (two-sided clip, token sum over num_items_in_batch), clip_grad_norm_, AdamW
  trl-fused    as trl, but through TRL 1.16's own fused LM head (trl.trainer.add_fused_lm_head, what
               GRPOTrainer installs by default): no [T, V] logits on the TRL side either
  r1core-rollout  r1core.generate of the completions (EOS off) + the r1core update

Measured: wall time of the update (after one untimed warm-up update unless --no-warmup), time per
completion token, the process's peak RSS during the update (a 2 ms sampler on /proc/self/statm) and
its increase over the RSS just before it (activations + gradients + AdamW state).
`--layers k` keeps the first k blocks (both stacks alike) so that a 2-core CPU finishes the grid.

    python -m benches.bench_long_cot --plan        # the memory of configs/gpu_long_cot.yaml, computed

`--plan` computes the GPU memory of a long-CoT step for the R1-Distill-Qwen-1.5B shape: parameter,
gradient and AdamW bytes from the shape; KV cache from KVCache.bytes_per_token; the update's
activations from the bytes autograd saves per token, measured on one block of the real shape (vocab
cut: the loss is the chunked fused op) under bf16 autocast with and without checkpointing.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import torch

MODEL = "smollm2-135m-instruct"
STACKS = ("r1core", "r1core-ckpt", "trl", "trl-fused")


class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 2 ms)."""

    def __init__(self):
        self.page = os.sysconf("SC_PAGE_SIZE")

    def rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def __enter__(self):
        self.before = self.peak = self.rss()
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop:
            self.peak = max(self.peak, self.rss())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop = True
        self._t.join()
        self.peak = max(self.peak, self.rss())


def _load_model(layers: int):
    import r1core
    model = r1core.load_model(MODEL)
    if layers:
        model.layers = model.layers[:layers]
        model.config.num_layers = layers
    return model


def _batch(vocab: int, prompt: int, T: int, tokens: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    G = max(1, tokens // T)
    p = torch.randint(1, vocab, (prompt,), generator=g)
    comp = torch.randint(1, vocab, (G, T), generator=g)
    ids = torch.cat([p.expand(G, prompt), comp], dim=1)
    adv = torch.randn(G, generator=g)
    return ids, adv, G


def _r1core_trainer(model, G: int, ckpt: bool, threads: int):
    from r1core.models import load_tokenizer
    from r1core.train.build import Deps
    from r1core.train.config import load_config
    from r1core.train.grpo import GRPOTrainer
    out = tempfile.mkdtemp(prefix="long_cot_")
    cfg = load_config(None, [f"out={out}", f"model={MODEL}", "rollout.prompts=1", f"rollout.group_size={max(G, 2)}",
                             f"optim.micro_batch={max(G, 2)}", "optim.lr=0.000001", "run.eval_n=0", "run.progress=false",
                             "run.tensorboard=false", "run.plot=false", "save_every=0", f"run.threads={threads}",
                             f"model.gradient_checkpointing={str(ckpt).lower()}", "model.device=cpu"])
    deps = Deps(load_model=lambda src, **kw: model, load_tokenizer=load_tokenizer)
    return GRPOTrainer(cfg, deps=deps)


def run_r1core(args, ckpt: bool, rollout: bool) -> dict:
    import r1core
    model = _load_model(args.layers)
    ids, adv, G = _batch(model.config.vocab_size, args.prompt, args.T, args.tokens)
    trainer = _r1core_trainer(model, G, ckpt, args.threads)
    extra = {}
    if rollout:
        t0 = time.perf_counter()
        with PeakRSS() as m, torch.no_grad():
            model.eval()
            roll = r1core.generate(model, [ids[0, :args.prompt].tolist()], num_samples=G, max_new_tokens=args.T,
                                   temperature=1.0, eos_token_id=[], seed=0)
            model.train()
        ids = roll.tokens
        extra = {"rollout_s": time.perf_counter() - t0, "rollout_peak_rss_mb": m.peak / 2**20}
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[:, args.prompt:] = True
    s = SimpleNamespace(tokens_NT=ids, mask_NT=mask, prompt_lens=[args.prompt] * G, expert_ids=None)
    keep = torch.ones(G, dtype=torch.bool)

    def update():
        return trainer._update(trainer._make_batch(s, adv, keep))
    return _measure(args, update, extra | {"layout": None}, lambda: trainer.layout)


def run_trl(args, fused: bool) -> dict:
    import transformers
    from trl.trainer.utils import selective_log_softmax
    model = _load_model(args.layers)
    folder = tempfile.mkdtemp(prefix="long_cot_hf_")
    model.save_pretrained(folder)
    vocab = model.config.vocab_size
    del model
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="sdpa")
    hf.gradient_checkpointing_enable()
    hf.config.use_cache = False
    hf.train()
    if fused:
        from trl.trainer import add_fused_lm_head
        add_fused_lm_head(hf, temperature=1.0, outputs=("log_probs",))
    opt = torch.optim.AdamW(hf.parameters(), lr=1e-6)
    ids, adv, G = _batch(vocab, args.prompt, args.T, args.tokens)
    attn = torch.ones_like(ids)
    T = args.T
    comp = ids[:, -T:]
    mask = torch.ones(G, T)
    eps_low = eps_high = 0.2

    def update():
        if fused:
            labels = ids.masked_fill(torch.arange(ids.shape[1])[None] < args.prompt, -100)
            logps = hf(input_ids=ids, attention_mask=attn, labels=labels, fused_lm_head=True).log_probs[:, -T:]
        else:   # TRL's materialised path: logits of the completion positions (+1, the last one dropped)
            logits = hf(input_ids=ids, attention_mask=attn, logits_to_keep=T + 1).logits[:, :-1]
            logps = selective_log_softmax(logits / 1.0, comp)
        old = logps.detach()                                       # num_iterations = 1: on-policy
        coef_1 = torch.exp(logps - old)
        coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
        per_token = -torch.min(coef_1 * adv[:, None], coef_2 * adv[:, None])
        loss = (per_token * mask).sum() / mask.sum().clamp(min=1.0)   # dapo: num_items_in_batch = the tokens
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return {"loss": float(loss)}
    return _measure(args, update, {})


def _measure(args, update, extra: dict, layout=None) -> dict:
    if not args.no_warmup:
        update()
    times, peaks, before = [], [], None
    for _ in range(args.reps):
        t0 = time.perf_counter()
        with PeakRSS() as m:
            update()
        times.append(time.perf_counter() - t0)
        peaks.append(m.peak)
        before = m.before if before is None else before
    best = min(times)
    out = dict(extra, update_s=best, update_s_all=times, s_per_token=best / args.tokens,
               us_per_token=1e6 * best / args.tokens, peak_rss_mb=max(peaks) / 2**20,
               update_rss_mb=(max(peaks) - before) / 2**20)
    if layout is not None:
        out["layout"] = layout()
    return out


def worker(args) -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    stack = args.worker
    if stack in ("r1core", "r1core-ckpt", "r1core-rollout"):
        res = run_r1core(args, ckpt=stack == "r1core-ckpt", rollout=stack == "r1core-rollout")
    elif stack in ("trl", "trl-fused"):
        res = run_trl(args, fused=stack == "trl-fused")
    else:
        raise ValueError(f"unknown stack {stack!r}")
    return {"stack": stack, "T": args.T, "tokens": args.tokens, "completions": max(1, args.tokens // args.T),
            "prompt": args.prompt, "layers": args.layers or 30, "threads": args.threads, **res}


def cases(device, quick: bool) -> list:
    """No runner cases: every row needs its own process (peak RSS), so this bench is a script."""
    return []


R1_DISTILL_1_5B = {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "vocab_size": 151936,
                   "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
                   "num_attention_heads": 12, "num_key_value_heads": 2, "max_position_embeddings": 131072,
                   "rope_theta": 10000.0, "tie_word_embeddings": False, "rms_norm_eps": 1e-6}


def saved_bytes_per_token(hf_cfg: dict, *, T: int = 512, autocast=torch.bfloat16) -> dict[str, float]:
    """Bytes autograd keeps per token for one block of `hf_cfg`'s shape (forward of T tokens under
    autocast): `block` without checkpointing, `checkpointed` with it (the block's input only)."""
    from r1core.models import CausalLM, ModelConfig
    cfg = ModelConfig.from_hf({**hf_cfg, "num_hidden_layers": 1, "vocab_size": 256})
    model = CausalLM(cfg).train()
    ids = torch.randint(0, 256, (1, T))
    out = {}
    for name, on in (("block", False), ("checkpointed", True)):
        model.gradient_checkpointing_enable() if on else model.gradient_checkpointing_disable()
        seen, total = set(), [0]

        def pack(t):
            key = (t.untyped_storage().data_ptr(), t.dtype)
            if key not in seen and not isinstance(t, torch.nn.Parameter) and t.numel() >= T:
                seen.add(key)
                total[0] += t.untyped_storage().nbytes()
            return t
        x0 = model.embed_tokens(ids).detach().requires_grad_()
        cos, sin = model.rotary(torch.arange(T)[None], x0.dtype)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=autocast):
            if on:
                from torch.utils.checkpoint import checkpoint
                y = checkpoint(model.layers[0], x0, cos, sin, mask=None, causal=True, use_reentrant=False)
            else:
                y = model.layers[0](x0, cos, sin, mask=None, causal=True)
        del y
        out[name] = total[0] / T
    return out


def plan(T: int = 32768, prompt: int = 512, G: int = 16, micro_rows: int = 1, gen_batch: int = 1) -> dict:
    """GPU memory of configs/gpu_long_cot.yaml's step (GiB), from the shape and measured per-token bytes."""
    from r1core.models import KVCache, ModelConfig
    cfg = ModelConfig.from_hf(R1_DISTILL_1_5B)
    H, L, V, I = cfg.hidden_size, cfg.num_layers, cfg.vocab_size, cfg.intermediate_size
    attn = H * (cfg.num_heads + 2 * cfg.num_kv_heads) * cfg.head_dim + (cfg.num_heads + 2 * cfg.num_kv_heads) \
        * cfg.head_dim + cfg.num_heads * cfg.head_dim * H
    params = 2 * V * H + L * (attn + 3 * H * I + 2 * H) + H
    per = saved_bytes_per_token(R1_DISTILL_1_5B)
    gib = 2 ** 30
    tokens = micro_rows * T + prompt                                         # one packed micro-batch
    kv = KVCache.bytes_per_token(cfg, torch.float32) * gen_batch * G * (prompt + T)
    chunk = 4096                                                             # fused loss: one chunk of logits + grad
    states = 16 * params                                                     # fp32 weights, grads, AdamW m and v
    act_ckpt = tokens * (L * per["checkpointed"] + 2 * per["block"])         # inputs kept + one block live (+ its grads)
    act_plain = tokens * L * per["block"]
    head = chunk * V * 4 * 2 + tokens * H * 4 * 2
    return {"params": params, "bytes_per_token": per,
            "kv_bytes_per_token_fp32": KVCache.bytes_per_token(cfg, torch.float32),
            "states_gib": states / gib, "rollout_kv_gib": kv / gib,
            "update_activations_ckpt_gib": act_ckpt / gib, "update_activations_plain_gib": act_plain / gib,
            "loss_head_gib": head / gib,
            "rollout_peak_gib": (states + kv) / gib, "update_peak_ckpt_gib": (states + act_ckpt + head) / gib,
            "update_peak_plain_gib": (states + act_plain + head) / gib,
            "T": T, "prompt": prompt, "G": G, "micro_rows": micro_rows, "gen_batch": gen_batch}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--T", type=int, nargs="+", default=[512, 2048, 8192, 16384], help="completion lengths")
    ap.add_argument("--tokens", type=int, default=16384, help="completion tokens per step")
    ap.add_argument("--prompt", type=int, default=150, help="prompt tokens (shared by the completions)")
    ap.add_argument("--layers", type=int, default=0, help="keep the first k blocks (0: all 30)")
    ap.add_argument("--stacks", nargs="+", default=list(STACKS), choices=[*STACKS, "r1core-rollout"])
    ap.add_argument("--rollout-T", type=int, default=2048, help="T of the r1core-rollout row (0: none)")
    ap.add_argument("--reps", type=int, default=1, help="timed updates per run (the best is kept)")
    ap.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up update")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per run")
    ap.add_argument("--out", default="benches/results/cpu/long_cot.json")
    ap.add_argument("--plan", action="store_true", help="print the GPU memory plan of configs/gpu_long_cot.yaml")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.plan:
        for T in (8192, 16384, 32768):
            print(json.dumps(plan(T=T)))
        return
    if args.worker:
        args.T = args.T[0]
        print(json.dumps(worker(args)))
        return
    runs = [(s, T) for T in args.T for s in args.stacks if s != "r1core-rollout"]
    if args.rollout_T:
        runs.append(("r1core-rollout", args.rollout_T))
    rows = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stack, T in runs:
        cmd = [sys.executable, "-m", "benches.bench_long_cot", "--worker", stack, "--T", str(T),
               "--tokens", str(args.tokens), "--prompt", str(args.prompt), "--layers", str(args.layers),
               "--reps", str(args.reps), "--threads", str(args.threads)] + (["--no-warmup"] if args.no_warmup else [])
        load = os.getloadavg()[0]
        try:
            # glibc: every allocation over 1 MiB is its own mapping, so freed memory leaves the RSS
            env = {"MALLOC_MMAP_THRESHOLD_": str(1 << 20), **os.environ}
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
            row = json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else {
                "stack": stack, "T": T, "error": p.stderr.strip().splitlines()[-1:]}
        except subprocess.TimeoutExpired:
            row = {"stack": stack, "T": T, "error": f"timeout after {args.timeout} s"}
        row["load_before"], row["load_after"] = load, os.getloadavg()[0]
        rows.append(row)
        print(json.dumps(row), flush=True)
        out.write_text(json.dumps({"bench": "long_cot", "torch": torch.__version__, "rows": rows}, indent=1))
    _table(rows)


def _table(rows: list[dict]) -> None:
    print(f"{'stack':<15}{'T':>7}{'n':>5}{'update s':>10}{'us/token':>10}{'peak MB':>9}{'upd MB':>8}  layout")
    for r in rows:
        if "error" in r:
            print(f"{r['stack']:<15}{r['T']:>7}  error: {r['error']}")
            continue
        print(f"{r['stack']:<15}{r['T']:>7}{r['completions']:>5}{r['update_s']:>10.2f}{r['us_per_token']:>10.0f}"
              f"{r['peak_rss_mb']:>9.0f}{r['update_rss_mb']:>8.0f}  {r.get('layout') or ''}")


if __name__ == "__main__":
    main()
