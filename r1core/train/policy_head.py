"""The module a data-parallel wrapper wraps: the policy's forward followed by its lm_head op.

Legend: B rows, T positions, H hidden, V vocabulary.  See r1core/train/distributed.py for why the
head op runs inside the wrapped forward (FSDP2 / DDP hooks must see every use of the lm_head weight).
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn


class PolicyHead(nn.Module):
    """forward(input_ids, head_fn) -> head_fn(hidden [B, T, H], lm_head weight [V, H], bias [V] or None).

    The fused linear loss (or log-prob) op is `head_fn`: it runs inside this forward, so under FSDP2
    the lm_head weight is used while the root unit holds it gathered, like any layer's weight."""

    def __init__(self, model: nn.Module, *, autocast: torch.dtype | None = None):
        super().__init__()
        self.model = model
        self.autocast = autocast

    def forward(self, input_ids: torch.Tensor, head_fn, *, select=None, **kwargs):
        """`select` = (rows, columns) index tensors of equal shape: the head sees hidden[rows, columns]
        (shared-prefix packing maps packed positions back to per-row completion positions)."""
        head = self.model.lm_head
        weight, bias = head.weight, getattr(head, "bias", None)
        # no autocast of our own: leave any surrounding autocast context in charge
        amp = contextlib.nullcontext() if self.autocast is None else torch.autocast(input_ids.device.type,
                                                                                   dtype=self.autocast)
        with amp:
            hidden = self.model.hidden_states(input_ids, **kwargs)
        if select is not None:
            hidden = hidden[select]
        if self.autocast is None:
            return head_fn(hidden, weight, bias)
        # the fused op wants one dtype: the lm_head runs in the autocast dtype too (its gradient
        # flows back through the cast to the full-precision weight)
        hidden = hidden.to(self.autocast)
        return head_fn(hidden, weight.to(self.autocast), None if bias is None else bias.to(self.autocast))
