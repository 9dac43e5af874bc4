"""Seeded random streams and weighted tables, built once and drawn from fast.

Every random draw goes through ``random.Random`` instances seeded from
``(seed, stream, chunk)`` strings, so that output depends only on the
configuration (never on worker count, wall clock or hash randomisation).
``random.Random`` seeded with a ``str`` hashes it with SHA-512, which is
stable across runs; sequences are stable within a Python minor version.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate
from typing import Generic, TypeVar

T = TypeVar("T")


def stream(seed: int, name: str, chunk: int = 0) -> random.Random:
    """An independent random stream for one purpose and one chunk of residents."""
    return random.Random(f"hutong-synth:{seed}:{name}:{chunk}")


class Weighted(Generic[T]):
    """A table of items with relative weights; ``pick`` is one bisect."""

    __slots__ = ("items", "cum", "total")

    def __init__(self, pairs: Sequence[tuple[T, float]]) -> None:
        if not pairs:
            raise ValueError("empty weighted table")
        self.items: tuple[T, ...] = tuple(p[0] for p in pairs)
        self.cum: list[float] = list(accumulate(float(p[1]) for p in pairs))
        self.total: float = self.cum[-1]
        if self.total <= 0:
            raise ValueError("weights must sum to more than zero")

    def pick(self, rng: random.Random) -> T:
        return self.items[bisect_right(self.cum, rng.random() * self.total)]

    def __len__(self) -> int:
        return len(self.items)
