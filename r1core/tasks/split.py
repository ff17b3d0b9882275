"""Held-out splits that are disjoint by construction: a problem belongs to the test split iff the
hash of its canonical key falls under `test_fraction`.  No list of seen problems is needed, the
same problem always lands on the same side (whatever the seed or the order it was drawn in), and a
generated train problem can never equal a test problem.
"""
from __future__ import annotations

import hashlib

_BUCKETS = 1 << 32


def bucket(key: str, *, salt: str = "") -> float:
    """A stable pseudo-random number in [0, 1) for `key` (blake2b; Python's hash() is salted)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8,
                             person=salt.encode()[:16]).digest()
    return (int.from_bytes(digest, "little") % _BUCKETS) / _BUCKETS


def is_test(key: str, test_fraction: float, *, salt: str = "") -> bool:
    """True when the problem with this canonical key is held out."""
    return bucket(key, salt=salt) < test_fraction


def check_fraction(test_fraction: float) -> float:
    if not isinstance(test_fraction, (int, float)) or not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction: expected a number in (0, 1), got {test_fraction!r}")
    return float(test_fraction)
