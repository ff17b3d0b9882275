"""Batched sampling with a preallocated KV cache: `generate(model, prompts, ...) -> Rollout`.

The plan for B prompts × G samples (N = B·G rows):
  1. prefill once per prompt: the B prompts, left-padded to the longest (P tokens), run through the
     model into a cache of capacity P + max_new_tokens, in chunks of `prefill_chunk` tokens (the
     attention mask of a chunk is [B, chunk, keys so far], never [P, P]); the lm_head runs on the
     last position only (a [B, V] logits tensor, never [B, P, V]);
  2. the cache rows are repeated G times (the prompt's keys/values are shared, never recomputed:
     prefill costs B·P tokens, not B·G·P);
  3. decode: each step feeds the N last tokens (one slot, the same for all rows), samples N tokens
     (r1core.rollout.sampling), and stops a row at EOS or at a stop string;
  4. early exit: finished rows leave the batch at once.  KVCache.compact moves live rows from the
     end of the cache into the dead rows' places, in the same buffers, so dropping d rows copies at
     most d rows' keys/values (a row's cache is ~¼ of one decode step of that row on CPU) and saves
     d × remaining row-steps.  (Copying every live row into a fresh cache, as order-keeping
     compaction does, cost more than it saved on CPU: page faults on every new allocation.)
     The loop ends when every row has finished.  Once half the rows have left, the cache is
     reallocated to the live rows (the memory of finished rows is released, not just unused).
  static=True instead keeps every shape fixed (no compaction; attention reads the whole cache
  under the validity mask; the write slot is a device tensor): that decode step is what a CUDA
  graph captures — done automatically on CUDA for dense models (`cuda_graph=None` → on).

Rollout fields (N rows, T = longest prompt + completion; row i·G + g is sample g of prompt i):
  tokens [N, T]           prompt then completion, right-padded with pad_token_id
  prompt_lens [N], completion_lens [N]
  completion_mask [N, T]  True on completion tokens (the EOS that ended a row included)
  logp [N, T] float32     logp[n, t] = log-prob of tokens[n, t] under the sampling distribution
                          (temperature, top-k, top-p applied; greedy: the model's log_softmax); 0 elsewhere
  logp_policy [N, T] float32  the same tokens under the untruncated policy, log_softmax(logits / temperature)
                          (greedy: log_softmax(logits), = logp); 0 elsewhere.  From the decode's own logits
                          (no extra forward); equal to logp when top_k / top_p truncate nothing.  What a
                          trainer recomputes: the behaviour policy of an importance weight (docs/train.md)
  finished [N]            stopped by EOS / stop string (False: ran into max_new_tokens)
  expert_ids              MoE models: one [N, T, k] int64 tensor per MoE layer, the experts each token
                          was routed to when it was fed to the model (routing replay).  The last
                          completion token is never fed, and padding never routed: those positions
                          hold 0..k-1, which no loss-bearing logit depends on.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from r1core.models.kv_cache import KVCache
from r1core.rollout.sampling import check_sampling_args, policy_logp, sample, truncates


@dataclass
class Rollout:
    tokens: torch.Tensor
    prompt_lens: torch.Tensor
    completion_lens: torch.Tensor
    completion_mask: torch.Tensor
    logp: torch.Tensor
    finished: torch.Tensor
    expert_ids: list[torch.Tensor] | None
    num_samples: int
    logp_policy: torch.Tensor | None = None     # [N, T] float32 (module doc); None only from stand-in samplers

    def completions(self) -> list[list[int]]:
        """The completion token ids of each row."""
        return [self.tokens[n, p:p + c].tolist()
                for n, (p, c) in enumerate(zip(self.prompt_lens.tolist(), self.completion_lens.tolist()))]

    @property
    def prompt_index(self) -> torch.Tensor:
        """[N]: which prompt each row samples (i for rows i·G .. i·G + G − 1)."""
        return torch.arange(self.tokens.shape[0] // self.num_samples).repeat_interleave(self.num_samples)


def _check(model, prompts, num_samples, max_new_tokens, temperature, top_p, top_k, eos_token_id, stop_strings,
           tokenizer) -> tuple[list[list[int]], list[int]]:
    V = model.config.vocab_size
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise ValueError("prompts must be a non-empty list of token-id lists")
    rows = []
    for i, p in enumerate(prompts):
        p = p.tolist() if isinstance(p, torch.Tensor) else p
        if not isinstance(p, (list, tuple)) or not p or not all(isinstance(t, int) for t in p):
            raise ValueError(f"prompts[{i}] must be a non-empty list of int token ids")
        if min(p) < 0 or max(p) >= V:
            raise ValueError(f"prompts[{i}] holds token ids outside [0, vocab_size={V})")
        rows.append(list(p))
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    check_sampling_args(temperature, top_p, top_k)
    if eos_token_id is None:
        eos_token_id = model.config.eos_token_id
    eos = [] if eos_token_id is None else [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    if not all(isinstance(e, int) and 0 <= e < V for e in eos):
        raise ValueError(f"eos_token_id must be token ids in [0, {V}), got {eos_token_id!r}")
    if stop_strings is not None:
        if isinstance(stop_strings, str) or not all(isinstance(s, str) and s for s in stop_strings):
            raise ValueError("stop_strings must be a list of non-empty strings")
        if tokenizer is None:
            raise ValueError("stop_strings needs tokenizer= (to decode the completions)")
    return rows, eos


def generate(model, prompts, *, num_samples: int = 1, max_new_tokens: int, temperature: float = 1.0,
             top_p: float = 1.0, top_k: int = 0, eos_token_id: int | list[int] | None = None,
             seed: int | None = None, stop_strings: list[str] | None = None, tokenizer=None,
             pad_token_id: int | None = None, static: bool | None = None,
             cuda_graph: bool | None = None, prefill_chunk: int = 2048, progress=None) -> Rollout:
    """Sample `num_samples` completions for each prompt (token-id lists).  See the module doc.

    eos_token_id=None uses the model config's; [] never stops early.  seed makes it reproducible
    (None: torch's global generator).  stop_strings (with tokenizer=) end a row once its decoded
    completion contains one.  static=None → static on CUDA, dynamic (with compaction) on CPU.
    prefill_chunk bounds the prompt tokens of one prefill forward (long prompts run in chunks).
    progress, a callable (done, total), hears of every decode step (a progress bar; no device sync).

    Memory: the KV cache holds B·G rows × (P + max_new_tokens) slots × KVCache.bytes_per_token
    (a 1.5B Qwen2 shape in bf16: 28 KiB a token, so G = 16 × 32k tokens is 14 GiB per prompt);
    bound it with fewer prompts per call (the trainer's rollout.gen_batch) or max_new_tokens.
    The sampler holds O(B·G·V) (one logits row per live sequence).
    """
    if isinstance(prefill_chunk, bool) or not isinstance(prefill_chunk, int) or prefill_chunk < 1:
        raise ValueError(f"prefill_chunk must be an int >= 1, got {prefill_chunk!r}")
    prompts, eos = _check(model, prompts, num_samples, max_new_tokens, temperature, top_p, top_k, eos_token_id,
                          stop_strings, tokenizer)
    device = model.device
    static = device.type == "cuda" if static is None else bool(static)
    # graph capture needs a decode step without host syncs: MoE routing and dynamic-NTK rope have some
    graphs = (static and device.type == "cuda" and not model.config.is_moe and model.config.rope.type != "dynamic"
              if cuda_graph is None else bool(cuda_graph))
    if graphs and not (static and device.type == "cuda"):
        raise ValueError("cuda_graph=True needs a CUDA model and static=True")
    cfg = model.config
    pad = pad_token_id if pad_token_id is not None else cfg.pad_token_id if cfg.pad_token_id is not None \
        else eos[0] if eos else 0
    gen = None
    if seed is not None:
        gen = torch.Generator(device=device).manual_seed(int(seed))
    with torch.inference_mode():
        return _generate(model, prompts, G=num_samples, max_new=max_new_tokens, temperature=temperature,
                         top_p=top_p, top_k=top_k, eos=eos, gen=gen, stop_strings=stop_strings,
                         tokenizer=tokenizer, pad=pad, static=static, graphs=graphs, chunk=prefill_chunk,
                         progress=progress)


def _generate(model, prompts, *, G, max_new, temperature, top_p, top_k, eos, gen, stop_strings, tokenizer, pad,
              static, graphs, chunk, progress=None) -> Rollout:
    device, cfg = model.device, model.config
    B, N = len(prompts), len(prompts) * G
    lens = torch.tensor([len(p) for p in prompts], dtype=torch.long)
    P = int(lens.max())
    moe = model.moe_layers
    k = cfg.top_k

    # 1. prefill the B prompts, left-padded
    ids = torch.full((B, P), pad, dtype=torch.long)
    valid = torch.zeros(B, P, dtype=torch.bool)
    for i, p in enumerate(prompts):
        ids[i, P - len(p):] = torch.tensor(p)
        valid[i, P - len(p):] = True
    ids, valid = ids.to(device), valid.to(device)
    positions = (valid.long().cumsum(-1) - 1).clamp(min=0)
    cache = KVCache.allocate(cfg, B, P + max_new, dtype=model.dtype, device=device, static=static)
    prompt_experts = [[] for _ in moe]
    for a in range(0, P, chunk):
        b = min(P, a + chunk)
        h = model._hidden(ids[:, a:b], positions[:, a:b], valid[:, a:b], None, cache)
        for out, m in zip(prompt_experts, moe):
            out.append(m.last_ids.view(B, b - a, k))
    logits = model.lm_head(h[:, -1])                                           # [B, V]: the last position only
    prompt_experts = [torch.cat(e, dim=1) for e in prompt_experts]

    # 2. share the prefill among the G samples of each prompt
    if G > 1:
        cache = cache.repeat_rows(G)
        logits = logits.repeat_interleave(G, dim=0)
    row_lens = lens.repeat_interleave(G).to(device)                              # prompt length per row
    pos = row_lens.clone()                                                      # position of the next token

    # 3. decode
    out_tok = torch.full((N, max_new), pad, dtype=torch.long, device=device)
    out_logp = torch.zeros(N, max_new, dtype=torch.float32, device=device)
    # the untruncated policy's log-prob: its own buffer only when top-k / top-p can differ from it
    truncated = truncates(temperature, top_p, top_k, logits.shape[-1])
    out_logp_pol = torch.zeros_like(out_logp) if truncated else out_logp
    out_experts = [torch.zeros(N, max_new, k, dtype=torch.long, device=device) for _ in moe]
    n_gen = torch.zeros(N, dtype=torch.long, device=device)
    finished = torch.zeros(N, dtype=torch.bool, device=device)
    rows = torch.arange(N, device=device)           # output row of each cache row
    alive = torch.ones(N, dtype=torch.bool, device=device)
    eos_t = torch.tensor(eos, dtype=torch.long, device=device)
    step_fn = _GraphedDecode(model, cache) if graphs else None
    for step in range(max_new):
        tok, lp = sample(logits, temperature=temperature, top_p=top_p, top_k=top_k, generator=gen)
        live = rows[alive]
        out_tok[live, step] = tok[alive]
        out_logp[live, step] = lp[alive]
        if truncated:
            out_logp_pol[live, step] = policy_logp(logits, tok, temperature=temperature)[alive]
        n_gen[live] = step + 1
        stop = alive & torch.isin(tok, eos_t) if eos else torch.zeros_like(alive)
        if stop_strings:
            stop |= _hits_stop_string(out_tok, rows, alive, step, stop_strings, tokenizer, device)
        finished[rows[stop]] = True
        alive = alive & ~stop
        remaining = max_new - step - 1
        if progress is not None:
            progress(step + 1, max_new)
        if remaining == 0 or not bool(alive.any()):
            break
        if not static and not bool(alive.all()):                      # finished rows leave the batch
            keep = cache.compact(alive)
            rows, tok, pos = rows[keep], tok[keep], pos[keep]
            alive = torch.ones(keep.numel(), dtype=torch.bool, device=device)
        if step_fn is not None:
            logits = step_fn(tok, pos)
        else:
            h = model._hidden(tok[:, None], pos[:, None], None, None, cache)
            logits = model.lm_head(h[:, 0])
        for out, m in zip(out_experts, moe):
            out[rows[alive], step] = m.last_ids.view(-1, k)[alive]
        pos = pos + 1

    # 4. assemble right-padded rows: prompt + completion (gathers, no per-row loop)
    T = int((row_lens + n_gen).max())
    t = torch.arange(T, device=device)[None]                                    # [1, T]
    p, c = row_lens[:, None], n_gen[:, None]                                    # [N, 1]
    in_prompt, in_completion = t < p, (t >= p) & (t < p + c)
    prompt_idx = (P - p + t).clamp(0, P - 1)                                    # column in the left-padded prompt
    comp_idx = (t - p).clamp(0, max_new - 1)                                    # decode step of a completion token
    prompt_rows = torch.arange(B, device=device).repeat_interleave(G)
    prompt_tok = ids[prompt_rows].gather(1, prompt_idx)
    tokens = torch.where(in_prompt, prompt_tok,
                         torch.where(in_completion, out_tok.gather(1, comp_idx), torch.full_like(prompt_tok, pad)))
    logp = torch.where(in_completion, out_logp.gather(1, comp_idx), torch.zeros((), device=device))
    logp_pol = torch.where(in_completion, out_logp_pol.gather(1, comp_idx), torch.zeros((), device=device)) \
        if truncated else logp.clone()
    experts = []
    fed = (t >= p) & (t < p + c - 1)            # completion token j was fed (and routed) at decode step j
    placeholder = torch.arange(k, device=device).expand(N, T, k)
    for pe, oe in zip(prompt_experts, out_experts):
        from_prompt = pe[prompt_rows].gather(1, prompt_idx[..., None].expand(N, T, k))
        from_decode = oe.gather(1, comp_idx[..., None].expand(N, T, k))
        experts.append(torch.where(in_prompt[..., None], from_prompt,
                                   torch.where(fed[..., None], from_decode, placeholder)))
    return Rollout(tokens=tokens, prompt_lens=row_lens, completion_lens=n_gen, completion_mask=in_completion,
                   logp=logp, finished=finished, expert_ids=experts if moe else None, num_samples=G,
                   logp_policy=logp_pol)


def _hits_stop_string(out_tok, rows, alive, step, stop_strings, tokenizer, device) -> torch.Tensor:
    """Rows whose completion now contains a stop string (checked on a tail window: a stop string
    can only be new if it ends in the latest token)."""
    hit = torch.zeros_like(alive)
    longest = max(len(s) for s in stop_strings)
    window = min(step + 1, longest + 8)       # a token decodes to >= 1 character (byte-level: almost always)
    for j in alive.nonzero()[:, 0].tolist():
        text = tokenizer.decode(out_tok[rows[j], step + 1 - window:step + 1].tolist())
        if any(s in text for s in stop_strings):
            hit[j] = True
    return hit


class _GraphedDecode:
    """The static decode step (tokens [N], positions [N] -> logits [N, V]) captured in a CUDA graph:
    one launch per step instead of hundreds of kernels.  Requires a static cache."""

    def __init__(self, model, cache: KVCache):
        self.model, self.cache = model, cache
        n = cache.batch
        self.tok = torch.zeros(n, 1, dtype=torch.long, device=model.device)
        self.pos = torch.zeros(n, 1, dtype=torch.long, device=model.device)
        self.graph = None

    def _run(self):
        h = self.model._hidden(self.tok, self.pos, None, None, self.cache)
        return self.model.lm_head(h[:, 0])

    def __call__(self, tok: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        self.tok.copy_(tok[:, None])
        self.pos.copy_(pos[:, None])
        if self.graph is None:
            # warm up on a side stream (allocator, lazy init), then capture; each run advances the
            # cache by one slot, so rewind the slot after the warm-up and capture runs.
            slot, length = self.cache.slot.clone(), self.cache.length
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                self._run()
            torch.cuda.current_stream().wait_stream(stream)
            self.cache.slot.copy_(slot)
            self.cache.length = length
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.out = self._run()
            self.cache.slot.copy_(slot)
            self.cache.length = length
        self.graph.replay()
        self.cache.length += 1
        return self.out
