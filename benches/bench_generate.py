"""Rollout throughput: r1core.generate against transformers.generate, same model, same settings.

Runner cases (`python -m benches --ops generate [--quick]`): prefill and decode tokens/s for
SmolLM2-135M-Instruct (fp32; quick: a tiny random Llama) at batch 1 and 64.  tokens/s =
extra["tokens"] / median time; `baseline` is transformers.
  prefill  B prompts of P tokens -> the next-token logits (r1core: KV cache filled, lm_head on the
           last position only; transformers: model(ids, use_cache=True, logits_to_keep=1))
  decode   B prompts of 8 tokens, NEW sampled tokens each (temperature 1, no top-k/top-p, EOS off),
           so the time is dominated by NEW decode steps

The issue's target (`python -m benches.bench_generate --target`): CPU fp32, 32 chat prompts × 8
samples, 128 new tokens, temperature 1, EOS on; both engines once each, side by side, tokens/s =
completion tokens actually produced (up to and including EOS) / wall time.  Also run with EOS off
(every row 128 tokens), where early exit cannot help: what is left is prefill sharing, the
preallocated cache and the sampler.

First principles (SmolLM2-135M: 134.5M parameters, 28.3M of them the tied lm_head, 30 layers,
3 KV heads × 64): a decode step of N rows costs 2·134.5M·N FLOPs (N = 256: 69 GFLOP) and reads the
540 MB of fp32 weights once + the KV cache (30·2·192·4 B = 46 KB per row per cached token).  On
CPU at N = 256 it is GEMM-bound, so equal GEMMs cost the same in both engines; the differences are
(1) prefill once per prompt instead of once per sample (8× fewer prefill FLOPs), (2) rows that hit
EOS leave the batch (transformers keeps computing them until the last row ends), (3) no cache
concatenation per step (transformers' DynamicCache copies the whole cache every step: O(T²)), and
(4) the sampler (transformers: softmax + multinomial over N·V; here one exp pass + block sums).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from r1core.bench import Case

QUESTIONS = [
    "What is the capital of France?", "Write a haiku about the sea.", "How many legs does a spider have?",
    "Explain gravity in one sentence.", "What is 17 times 23?", "Name three primary colours.",
    "Why is the sky blue?", "Give me a synonym for happy.", "What is the boiling point of water?",
    "Who wrote Romeo and Juliet?", "Translate 'good morning' into Spanish.", "What is a prime number?",
    "Suggest a name for a pet turtle.", "How do plants make food?", "What is the square root of 144?",
    "Describe a cat in five words.", "What does CPU stand for?", "Is a tomato a fruit or a vegetable?",
    "What is the largest planet?", "Write a short greeting for a birthday card.", "How many days are in a leap year?",
    "What is photosynthesis?", "Give an example of a mammal that flies.", "What is the freezing point of water?",
    "List two uses of copper.", "What language is spoken in Brazil?", "How many continents are there?",
    "What is the opposite of cold?", "Explain what a verb is.", "What is 2 to the power of 10?",
    "Why do we need sleep?", "What is the chemical symbol for gold?",
]
SMOLLM2 = "smollm2-135m-instruct"


# -------------------------------------------------------------------------------------------------
# the two engines
# -------------------------------------------------------------------------------------------------
def load_pair(quick: bool, device: torch.device):
    """(r1core model, transformers model, prompts as token lists (chat-formatted for SmolLM2))."""
    import transformers

    import r1core
    if quick:
        import tempfile
        cfg = transformers.LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2)
        torch.manual_seed(0)
        hf = transformers.LlamaForCausalLM(cfg).eval()
        folder = tempfile.mkdtemp(prefix="r1core-bench-")
        hf.save_pretrained(folder)
        ours = r1core.load_model(folder, device=device)
        prompts = [[(7 * i + j) % 500 + 3 for j in range(12 + i % 5)] for i in range(len(QUESTIONS))]
        return ours, hf.to(device), prompts, None
    from r1core.models import resolve_source
    path = resolve_source(SMOLLM2)
    ours = r1core.load_model(SMOLLM2, device=device)
    tok = r1core.load_tokenizer(SMOLLM2)
    hf = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                           dtype=torch.float32).eval().to(device)
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}]) for q in QUESTIONS]
    return ours, hf, prompts, tok


def left_pad(prompts, pad: int, device):
    P = max(map(len, prompts))
    ids = torch.full((len(prompts), P), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, P - len(p):], mask[i, P - len(p):] = torch.tensor(p), 1
    return ids.to(device), mask.to(device)


def run_ours(model, prompts, *, G, new, eos, seed=0):
    import r1core
    r = r1core.generate(model, prompts, num_samples=G, max_new_tokens=new, temperature=1.0, top_p=1.0, top_k=0,
                        eos_token_id=eos, seed=seed)
    return int(r.completion_lens.sum())


def run_hf(model, prompts, *, G, new, eos, pad, seed=0):
    ids, mask = left_pad(prompts, pad, model.device)
    torch.manual_seed(seed)
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                             max_new_tokens=new, min_new_tokens=0 if eos else new, num_return_sequences=G,
                             eos_token_id=eos if eos else None, pad_token_id=pad)
    produced = 0
    for row in out[:, ids.shape[1]:].tolist():
        produced += row.index(eos) + 1 if eos is not None and eos in row else len(row)
    return produced


# -------------------------------------------------------------------------------------------------
# runner cases
# -------------------------------------------------------------------------------------------------
def cases(device: torch.device, quick: bool) -> list[Case]:
    from r1core.models.kv_cache import KVCache
    ours, hf, prompts, _ = load_pair(quick, device)
    cfg = ours.config
    n_params = sum(p.numel() for p in ours.parameters())
    P, new = (16, 8) if quick else (128, 32)
    # at the quick shapes (a tiny random Llama, 8 new tokens) a call is microseconds of math and
    # milliseconds of per-call work, so the ratio says nothing about rollout throughput
    why = ("quick: a tiny random model and 8 new tokens measure per-call overhead, not throughput; the README's "
           "SmolLM2 figure is `python -m benches.bench_generate --target` (32 prompts x 8 samples x 128 tokens)"
           if quick else "")
    out: list[Case] = []
    for B in (1, 64):
        ids = torch.randint(3, cfg.vocab_size, (B, P), generator=torch.Generator().manual_seed(B)).to(device)
        pos = torch.arange(P, device=device)[None].expand(B, P)

        def prefill_ours(ids=ids, pos=pos, B=B):
            with torch.inference_mode():
                cache = KVCache.allocate(cfg, B, P + 1, dtype=ours.dtype, device=device)
                return ours.lm_head(ours._hidden(ids, pos, None, None, cache)[:, -1])

        def prefill_hf(ids=ids):
            with torch.inference_mode():
                return hf(ids, use_cache=True, logits_to_keep=1).logits

        shape = f"B={B} P={P}"
        flops = 2 * n_params * B * P
        out.append(Case("generate prefill", shape, "fp32", "transformers", prefill_hf, flops=flops, baseline=True,
                        extra={"tokens": B * P}, note=why))
        out.append(Case("generate prefill", shape, "fp32", "r1core", prefill_ours, flops=flops,
                        extra={"tokens": B * P}, note=why))

        short = [p[:8] for p in (prompts * (B // len(prompts) + 1))[:B]]
        shape = f"B={B} P=8 new={new}"
        flops = 2 * n_params * B * new
        out.append(Case("generate decode", shape, "fp32", "transformers",
                        lambda short=short: run_hf(hf, short, G=1, new=new, eos=None, pad=0), flops=flops,
                        baseline=True, extra={"tokens": B * new}, note=why or "sampling T=1, EOS off"))
        out.append(Case("generate decode", shape, "fp32", "r1core",
                        lambda short=short: run_ours(ours, short, G=1, new=new, eos=[]), flops=flops,
                        extra={"tokens": B * new}, note=why or "sampling T=1, EOS off"))
    return out


# -------------------------------------------------------------------------------------------------
# the target, side by side
# -------------------------------------------------------------------------------------------------
def target(*, batch: int, samples: int, new: int, quick: bool, out: Path | None) -> dict:
    device = torch.device("cpu")
    ours, hf, prompts, tok = load_pair(quick, device)
    prompts = (prompts * (batch // len(prompts) + 1))[:batch]
    eos = tok.eos_token_id if tok is not None else 2
    pad = tok.pad_token_id if tok is not None else 0
    run_ours(ours, prompts[:2], G=2, new=4, eos=eos)            # warm-up (allocator, lazy init)
    run_hf(hf, prompts[:2], G=2, new=4, eos=eos, pad=pad)
    rows = []
    for label, eos_on in (("EOS on", True), ("EOS off", False)):
        for engine in ("transformers", "r1core"):
            t0, c0 = time.perf_counter(), time.process_time()
            if engine == "r1core":
                n = run_ours(ours, prompts, G=samples, new=new, eos=eos if eos_on else [])
            else:
                n = run_hf(hf, prompts, G=samples, new=new, eos=eos if eos_on else None, pad=pad)
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            rows.append({"engine": engine, "setting": label, "tokens": n, "seconds": dt, "cpu_seconds": cpu,
                         "tokens_per_s": n / dt, "tokens_per_cpu_s": n / cpu})
            # on a shared machine the wall time depends on the neighbours; CPU time (process_time) much less
            print(f"{label:8s} {engine:13s} {n:7d} tokens  {dt:8.1f} s wall {n / dt:8.1f} tokens/s  "
                  f"{cpu:8.1f} s cpu {n / cpu:8.1f} tokens/cpu-s", flush=True)
    for label in ("EOS on", "EOS off"):
        a, b = [r for r in rows if r["setting"] == label]
        print(f"{label}: r1core / transformers = {b['tokens_per_s'] / a['tokens_per_s']:.2f}x wall, "
              f"{b['tokens_per_cpu_s'] / a['tokens_per_cpu_s']:.2f}x cpu time", flush=True)
    result = {"model": "tiny" if quick else SMOLLM2, "batch": batch, "samples": samples, "new_tokens": new,
              "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "rows": rows,
              "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        print(f"# wrote {out}")
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="r1core.generate vs transformers.generate (the issue's CPU target)")
    p.add_argument("--target", action="store_true", help="32 prompts x 8 samples x 128 tokens, side by side")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--new", type=int, default=128)
    p.add_argument("--quick", action="store_true", help="a tiny random model instead of SmolLM2")
    p.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for both engines")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.target:
        p.error("use --target (the runner cases run through `python -m benches --ops generate`)")
    target(batch=args.batch, samples=args.samples, new=args.new, quick=args.quick, out=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
