"""`HyperLogLog`: an in-process estimate of how many distinct strings were added, in a fixed
number of bytes (2**precision one-byte registers).

The hash is the first 8 bytes of BLAKE2b: stable across processes and Python versions
(unlike `hash()`), so sketches of different workers could be merged. The estimate is
Ertl's improved estimator ("New cardinality estimation algorithms for HyperLogLog
sketches", 2017), the one Redis's PFCOUNT uses: no empirical bias tables, and no switch to
linear counting with its bias at the hand-over. Its relative standard error is about
1.04 / sqrt(2**precision): 1.6 % at precision 12 (4 KiB), 6.5 % at precision 8 (256 bytes).
"""

from __future__ import annotations

import math
from hashlib import blake2b
from typing import Final

MIN_PRECISION: Final = 4
MAX_PRECISION: Final = 16
HASH_BITS: Final = 64
#: What a sketch costs beyond its registers (the object and the bytearray's header).
OVERHEAD_BYTES: Final = 120
_ALPHA_INF: Final = 1 / (2 * math.log(2))


def hash64(value: str) -> int:
    """The stable 64-bit hash of `value` (lone surrogates kept distinct)."""
    digest = blake2b(value.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class HyperLogLog:
    """A distinct-count sketch: `add` strings, `count` the distinct ones (an estimate)."""

    __slots__ = ("_mask", "_registers", "precision")

    def __init__(self, precision: int = 12) -> None:
        if not MIN_PRECISION <= precision <= MAX_PRECISION:
            raise ValueError(f"precision must be {MIN_PRECISION}..{MAX_PRECISION}")
        self.precision = precision
        self._mask = (1 << precision) - 1
        self._registers = bytearray(1 << precision)

    @staticmethod
    def bytes_for(precision: int) -> int:
        """What one sketch of `precision` costs, in bytes."""
        return (1 << precision) + OVERHEAD_BYTES

    @property
    def nbytes(self) -> int:
        """What this sketch costs, in bytes (fixed at construction)."""
        return self.bytes_for(self.precision)

    def add(self, value: str) -> bool:
        """Count `value`; True when a register changed (so it was surely not seen before)."""
        return self.add_hash(hash64(value))

    def add_hash(self, hashed: int) -> bool:
        """Count a value by its 64-bit hash (see `hash64`)."""
        index = hashed & self._mask
        # The rank: trailing zeros of the other bits, plus one; a sentinel bit caps it.
        rest = (hashed >> self.precision) | (1 << (HASH_BITS - self.precision))
        rank = (rest & -rest).bit_length()
        if rank > self._registers[index]:
            self._registers[index] = rank
            return True
        return False

    def merge(self, other: HyperLogLog) -> None:
        """Make this sketch count the union of both (same precision only)."""
        if other.precision != self.precision:
            raise ValueError("cannot merge sketches of different precision")
        self._registers = bytearray(map(max, self._registers, other._registers))

    def copy(self) -> HyperLogLog:
        """An independent sketch with the same registers."""
        twin = HyperLogLog(self.precision)
        twin._registers[:] = self._registers
        return twin

    def count(self) -> int:
        """The estimated number of distinct values added."""
        registers, m = self._registers, float(len(self._registers))
        q = HASH_BITS - self.precision
        histogram = [registers.count(rank) for rank in range(q + 2)]
        z = m * _tau((m - histogram[q + 1]) / m)
        for rank in range(q, 0, -1):
            z = 0.5 * (z + histogram[rank])
        z += m * _sigma(histogram[0] / m)
        return round(_ALPHA_INF * m * m / z) if math.isfinite(z) else 0


def _sigma(x: float) -> float:
    # Ertl's sigma(x) = x + sum_k x^(2^k) 2^(k-1): the share of empty registers' term.
    if x == 1.0:
        return math.inf
    y, z = 1.0, x
    while True:
        x *= x
        previous, z = z, z + x * y
        y += y
        if z == previous:
            return z


def _tau(x: float) -> float:
    # Ertl's tau(x): the correction for registers at the maximum rank.
    if x in (0.0, 1.0):
        return 0.0
    y, z = 1.0, 1.0 - x
    while True:
        x = math.sqrt(x)
        y *= 0.5
        previous, z = z, z - (1.0 - x) ** 2 * y
        if z == previous:
            return z / 3
