"""A preallocated key/value cache for batched generation.

Every row of a batch writes the same slot at each step: prompts of different lengths are left-padded,
and `valid [B, S]` records which slots hold real tokens (attention ignores the others).  So a decode
step is the same shape for every row and every step: one slot written, `S` slots readable.

Per layer (S = capacity in tokens):
  GQA  k [B, Hkv, S, D], v [B, Hkv, S, D]
  MLA  k [B, 1, S, r + dr]: the compressed latent (kv_lora_rank r) and the shared roped key (dr);
       v is None (the values are the first r lanes of k).  That is MLA's point: 1 small "head" cached.

Two ways to address the next slot:
  dynamic (default)  `length` (a Python int) slots are written; attention reads k[:, :, :length + T]
  static             `slot` is a 1-element device tensor and attention reads all S slots (unwritten
                     ones are invalid): every decode step has fixed shapes, so it can be captured in a
                     CUDA graph and replayed.
"""
from __future__ import annotations

import torch

from r1core.models.config import ModelConfig


class KVCache:
    def __init__(self, k: list[torch.Tensor], v: list[torch.Tensor | None], valid: torch.Tensor,
                 length: int = 0, *, static: bool = False):
        self.k, self.v, self.valid, self.length, self.static = k, v, valid, length, static
        self.slot = torch.zeros(1, dtype=torch.long, device=valid.device)  # static mode's write position

    @classmethod
    def allocate(cls, config: ModelConfig, batch: int, capacity: int, *, dtype: torch.dtype,
                 device: torch.device | str, static: bool = False) -> KVCache:
        k, v = [], []
        for _ in range(config.num_layers):
            if config.is_mla:
                k.append(torch.zeros(batch, 1, capacity, config.kv_lora_rank + config.qk_rope_head_dim,
                                     dtype=dtype, device=device))
                v.append(None)
            else:
                shape = (batch, config.num_kv_heads, capacity, config.head_dim)
                k.append(torch.zeros(shape, dtype=dtype, device=device))
                v.append(torch.zeros(shape, dtype=dtype, device=device))
        valid = torch.zeros(batch, capacity, dtype=torch.bool, device=device)
        return cls(k, v, valid, static=static)

    @property
    def batch(self) -> int:
        return self.valid.shape[0]

    @property
    def capacity(self) -> int:
        return self.valid.shape[1]

    @staticmethod
    def bytes_per_token(config: ModelConfig, dtype: torch.dtype) -> int:
        """Cache bytes one token occupies over all layers (GQA: 2·Hkv·D, MLA: r + dr lanes per layer)."""
        lanes = config.kv_lora_rank + config.qk_rope_head_dim if config.is_mla else 2 * config.num_kv_heads * config.head_dim
        return config.num_layers * lanes * torch.empty((), dtype=dtype).element_size()

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v if t is not None)

    # ------------------------------------------------------------------------------------------
    # writing (called by the attention layers) and advancing (called by the model, once per forward)
    # ------------------------------------------------------------------------------------------
    def write(self, layer: int, k_BHTD: torch.Tensor, v_BHTD: torch.Tensor | None
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Store the new keys/values at the next slots; return everything attention may read."""
        T = k_BHTD.shape[2]
        K, V = self.k[layer], self.v[layer]
        if self.static:
            idx = self.slot if T == 1 else self.slot + torch.arange(T, device=self.slot.device)
            K.index_copy_(2, idx, k_BHTD)
            if V is not None:
                V.index_copy_(2, idx, v_BHTD)
            return K, V
        end = self.length + T
        if end > self.capacity:
            raise ValueError(f"KV cache overflow: {end} tokens > capacity {self.capacity}")
        K[:, :, self.length:end] = k_BHTD
        if V is not None:
            V[:, :, self.length:end] = v_BHTD
            return K[:, :, :end], V[:, :, :end]
        return K[:, :, :end], None

    def mark(self, valid_BT: torch.Tensor) -> None:
        """Record which of the next T slots hold real tokens (before the layers run)."""
        T = valid_BT.shape[1]
        if self.static:
            idx = self.slot if T == 1 else self.slot + torch.arange(T, device=self.slot.device)
            self.valid.index_copy_(1, idx, valid_BT)
        else:
            self.valid[:, self.length:self.length + T] = valid_BT

    def advance(self, T: int) -> None:
        self.length += T
        if self.static:
            self.slot += T

    def attention_mask(self, T: int) -> torch.Tensor:
        """Boolean mask [B, 1, T, S'] for T new tokens: key slot j is readable by new token i when it
        holds a real token and j <= its own slot (S' = slots readable: length + T, or S if static).
        A token always sees itself, so no row is fully masked (padding rows stay finite)."""
        start = self.slot if self.static else torch.tensor(self.length, device=self.valid.device)
        S = self.capacity if self.static else self.length + T
        own_slot = start + torch.arange(T, device=self.valid.device)              # [T]
        slots = torch.arange(S, device=self.valid.device)                          # [S]
        causal = slots[None, :] <= own_slot[:, None]                               # [T, S]
        mask = self.valid[:, None, :S] & causal[None]                              # [B, T, S]
        mask = mask | (slots[None, :] == own_slot[:, None])[None]
        return mask[:, None]

    # ------------------------------------------------------------------------------------------
    # reshaping the batch: G samples per prompt, dropping finished rows
    # ------------------------------------------------------------------------------------------
    def repeat_rows(self, g: int) -> KVCache:
        """Each row becomes g consecutive rows (the prompt's prefill shared by its g samples).
        Only the written slots are copied."""
        return self._gather(torch.arange(self.batch, device=self.valid.device).repeat_interleave(g))

    def compact(self, alive_B: torch.Tensor) -> torch.Tensor:
        """Drop the rows that are not alive, in place (dynamic cache only) -> `keep`: cache row i now
        holds what was row keep[i].  The n live rows end up in the first n rows of the same buffers:
        each dead row among them is overwritten by a live row from past n (order not kept), so only
        min(dead, live past n) rows × the written slots are copied — no new cache, no page faults
        (an order-keeping gather would copy every live row into a fresh allocation)."""
        if self.static:
            raise ValueError("a static cache keeps its shape: compact() is for the dynamic cache")
        alive_B = alive_B.to(self.valid.device)
        n = int(alive_B.sum())
        keep = torch.arange(n, device=self.valid.device)
        holes = (~alive_B[:n]).nonzero()[:, 0]
        movers = alive_B[n:].nonzero()[:, 0] + n
        if holes.numel():
            used = self.length
            for t in self.k + self.v:
                if t is not None:
                    t[holes, :, :used] = t[movers, :, :used]
            self.valid[holes, :used] = self.valid[movers, :used]
            keep[holes] = movers
        # the first n rows stay; once they are at most half the allocation, give the rest back
        # (a copy of n rows, at most once per halving: amortised less than one row copy per dropped row)
        shrink = 2 * n <= self.valid.untyped_storage().nbytes() // max(1, self.valid[0].nbytes)
        take = (lambda t: t[:n].clone()) if shrink else (lambda t: t[:n])
        self.k = [take(t) for t in self.k]
        self.v = [None if t is None else take(t) for t in self.v]
        self.valid = take(self.valid)
        return keep

    def _gather(self, rows: torch.Tensor) -> KVCache:
        n, used = rows.numel(), self.capacity if self.static else self.length

        def take(t: torch.Tensor | None) -> torch.Tensor | None:
            if t is None:
                return None
            out = t.new_zeros((n, *t.shape[1:]))
            out[:, :, :used] = t[:, :, :used].index_select(0, rows)
            return out

        valid = self.valid.new_zeros((n, self.capacity))
        valid[:, :used] = self.valid[:, :used].index_select(0, rows)
        out = KVCache([take(k) for k in self.k], [take(v) for v in self.v], valid, self.length, static=self.static)
        out.slot.copy_(self.slot)
        return out
