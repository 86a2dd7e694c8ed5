"""`HyperLogLog` (cachekit/key_sketch.py): accurate within its standard error at 1k, 10k
and 100k distinct values, blind to duplicates, and merging is exactly a union."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cachekit.key_sketch import HyperLogLog, hash64

#: 1.04 / sqrt(4096): the relative standard error at precision 12.
STANDARD_ERROR = 0.01625


def filled(values: list[str] | range, prefix: str = "", precision: int = 12) -> HyperLogLog:
    sketch = HyperLogLog(precision)
    for value in values:
        sketch.add(f"{prefix}{value}")
    return sketch


@pytest.mark.parametrize("distinct", [1_000, 10_000, 100_000])
def test_estimates_are_within_a_few_percent(distinct: int) -> None:
    # Independent runs (different values): every one within 3 standard errors, and their
    # mean within 2.5 standard errors of a mean: a biased estimator (raw HyperLogLog
    # around 2.5 m = 10k, before linear counting takes over) fails this.
    runs = 5 if distinct < 100_000 else 2
    errors = [
        filled(range(distinct), f"run{run}:/item/").count() / distinct - 1 for run in range(runs)
    ]
    assert all(abs(error) < 3 * STANDARD_ERROR for error in errors), errors
    assert abs(statistics.mean(errors)) < 2.5 * STANDARD_ERROR / math.sqrt(runs), errors


def test_small_counts_are_nearly_exact() -> None:
    assert HyperLogLog().count() == 0
    assert filled(["a"]).count() == 1
    for distinct in (10, 100, 500):
        assert abs(filled(range(distinct), "small:").count() - distinct) <= max(2, distinct // 50)


def test_duplicates_do_not_count() -> None:
    once = filled(range(5_000), "k")
    thrice = filled([*range(5_000)] * 3, "k")
    assert thrice.count() == once.count()
    assert not once.add("k17")  # nothing changes for a value already seen


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=300), st.lists(st.text(max_size=40), max_size=300))
def test_merge_is_the_sketch_of_the_union(left: list[str], right: list[str]) -> None:
    merged = filled(left)
    merged.merge(filled(right))
    union = filled(sorted(set(left) | set(right)))
    assert merged.count() == union.count()
    assert merged._registers == union._registers
    # Counting a set again, or in another order, changes nothing.
    assert filled([*right, *left, *left]).count() == union.count()


@settings(max_examples=60, deadline=None)
@given(st.sets(st.text(max_size=30), max_size=400))
def test_counts_of_small_sets_are_close(values: set[str]) -> None:
    estimate = filled(sorted(values)).count()
    assert abs(estimate - len(values)) <= max(2, len(values) * 0.03)


def test_the_hash_is_stable_and_keeps_undecodable_text() -> None:
    # Across processes and Python versions (unlike hash()): a pinned value.
    assert hash64("product:7") == int.from_bytes(
        __import__("hashlib").blake2b(b"product:7", digest_size=8).digest(), "little"
    )
    assert hash64("\udcff") != hash64("\udcfe")


def test_copy_is_independent_and_precisions_do_not_mix() -> None:
    sketch = filled(range(100), "c")
    twin = sketch.copy()
    twin.add("another")
    assert twin.count() == sketch.count() + 1
    with pytest.raises(ValueError, match="precision"):
        sketch.merge(HyperLogLog(8))
    with pytest.raises(ValueError, match="precision"):
        HyperLogLog(3)


def test_size_is_fixed() -> None:
    sketch = HyperLogLog(12)
    before = sketch.nbytes
    for value in range(50_000):
        sketch.add(str(value))
    assert sketch.nbytes == before == HyperLogLog.bytes_for(12) == 4096 + 120
    assert len(sketch._registers) == 4096
