"""Count the host syncs a piece of code makes: every Tensor.item / tolist / __bool__ / __int__ / __float__ /
__index__ and every nonzero (a data-dependent shape) while counting is on.  On a GPU each one drains the
stream; the trainer tests hold its update to a bound (issue 31)."""
from __future__ import annotations

import contextlib

import torch

_NAMES = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero")


class SyncCounter:
    def __init__(self):
        self.count = 0
        self.paused = 0

    @contextlib.contextmanager
    def pause(self):
        self.paused += 1
        try:
            yield
        finally:
            self.paused -= 1

    @contextlib.contextmanager
    def counting(self):
        saved = {n: getattr(torch.Tensor, n) for n in _NAMES}
        saved_nz = torch.nonzero

        def wrap(fn):
            def counted(*a, **k):
                if not self.paused:
                    self.count += 1
                with self.pause():       # a sync that calls another is one sync
                    return fn(*a, **k)
            return counted
        try:
            for n, fn in saved.items():
                setattr(torch.Tensor, n, wrap(fn))
            torch.nonzero = wrap(saved_nz)
            yield self
        finally:
            for n, fn in saved.items():
                setattr(torch.Tensor, n, fn)
            torch.nonzero = saved_nz
