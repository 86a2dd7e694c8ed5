"""`BoundedMemo`: bounded in bytes, emptied when full, every memo in one registry."""

from __future__ import annotations

import gc
import tracemalloc

from hypothesis import given
from hypothesis import strategies as st

from cachekit import memo, responses
from cachekit.backends.tag_versions import VERSIONS_MAX_BYTES, TagVersions
from cachekit.memo import ENTRY_OVERHEAD, LARGEST_SHARE, BoundedMemo


def test_get_returns_what_was_put() -> None:
    kept: BoundedMemo[str, int] = BoundedMemo("t", 10_000)
    assert kept.get("a") is None
    kept.put("a", 1, 10)
    assert kept.get("a") == 1 and len(kept) == 1
    assert kept.used_bytes == 10 + ENTRY_OVERHEAD and kept.max_bytes == 10_000


def test_a_new_value_replaces_the_old_and_its_cost() -> None:
    kept: BoundedMemo[str, int] = BoundedMemo("t", 10_000)
    kept.put("a", 1, 100)
    kept.put("a", 2, 30)
    assert kept.get("a") == 2 and len(kept) == 1
    assert kept.used_bytes == 30 + ENTRY_OVERHEAD


def test_a_full_memo_is_emptied_before_the_next_value() -> None:
    cost = 500 - ENTRY_OVERHEAD
    kept: BoundedMemo[int, int] = BoundedMemo("t", 16 * 500)
    for n in range(16):
        kept.put(n, n, cost)
    assert len(kept) == 16 and kept.used_bytes == kept.max_bytes
    kept.put(16, 16, cost)
    assert len(kept) == 1 and kept.get(16) == 16 and kept.get(0) is None
    assert kept.used_bytes == 500


def test_a_value_over_its_share_of_the_budget_is_not_kept() -> None:
    kept: BoundedMemo[str, str] = BoundedMemo("t", 16_000)
    largest = int(16_000 * LARGEST_SHARE) - ENTRY_OVERHEAD
    kept.put("small", "s", 10)
    kept.put("fits", "f", largest)
    kept.put("large", "l", largest + 1)
    assert kept.get("fits") == "f" and kept.get("large") is None and kept.get("small") == "s"
    # Not kept means not kept at all: an older value for the key is gone too.
    kept.put("small", "s2", largest + 1)
    assert kept.get("small") is None and len(kept) == 1


def test_clear_forgets_everything() -> None:
    kept: BoundedMemo[str, int] = BoundedMemo("t", 10_000)
    kept.put("a", 1, 10)
    kept.clear()
    assert kept.get("a") is None and len(kept) == 0 and kept.used_bytes == 0


@given(
    st.lists(st.tuples(st.integers(0, 30), st.integers(0, 1_500)), max_size=200),
    st.integers(0, 20_000),
)
def test_the_budget_holds_whatever_is_put(puts: list[tuple[int, int]], budget: int) -> None:
    kept: BoundedMemo[int, tuple[int, int]] = BoundedMemo("t", budget)
    model: dict[int, tuple[int, int]] = {}
    for step, (key, cost) in enumerate(puts):
        kept.put(key, (step, cost), cost)
        model.pop(key, None)
        charged = cost + ENTRY_OVERHEAD
        if charged <= budget * LARGEST_SHARE:
            if sum(value[1] + ENTRY_OVERHEAD for value in model.values()) + charged > budget:
                model.clear()
            model[key] = (step, cost)
        assert kept.used_bytes <= budget
        assert kept.used_bytes == sum(value[1] + ENTRY_OVERHEAD for value in model.values())
        assert len(kept) == len(model)
        assert all(kept.get(key) == value for key, value in model.items())


def test_every_memo_is_registered_while_it_lives() -> None:
    gc.collect()  # memos of stores earlier tests left behind go first
    before = memo.total_max_bytes()
    kept: BoundedMemo[str, int] = BoundedMemo("a test's", 12_345)
    assert kept in memo.registered()
    assert memo.total_max_bytes() == before + 12_345
    del kept
    gc.collect()
    assert all(each.name != "a test's" for each in memo.registered())
    assert memo.total_max_bytes() == before


def test_cachekit_s_memos_and_their_sum() -> None:
    # README, "Memory budget", lists these bounds and their sum.
    assert responses.BLOCKS_MAX_BYTES  # imported: its memo exists
    budgets = {each.name: each.max_bytes for each in memo.registered()}
    ours = {"header names": 256 << 10, "entry heads": 4 << 20, "header blocks": 4 << 20}
    assert budgets.items() >= ours.items()
    assert sum(ours.values()) == 8.25 * (1 << 20)
    # Per Redis store (one per process in an app): the tag versions it keeps.
    assert TagVersions()._memo.max_bytes == VERSIONS_MAX_BYTES == 1 << 20
    assert memo.total_max_bytes() == sum(each.max_bytes for each in memo.registered())


def test_the_memo_s_own_bookkeeping_is_within_its_overhead() -> None:
    # Keys and values the test keeps alive itself, each charged 1,000 bytes: what is traced
    # is the memo's own memory per entry (two dict slots, the int holding the cost), which
    # `ENTRY_OVERHEAD` must cover at any fill: dicts grow in steps, hence several sizes.
    for count in (1, 10, 100, 1_000, 5_000, 20_000, 100_000):
        keys = [str(n) * 3 for n in range(count)]
        value = object()
        gc.collect()
        tracemalloc.start()
        try:
            kept: BoundedMemo[str, object] = BoundedMemo("t", 1 << 40)
            before = tracemalloc.get_traced_memory()[0]
            for key in keys:
                kept.put(key, value, 1_000)
            traced = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        overhead = kept.used_bytes - count * 1_000
        assert traced <= overhead + 512, (count, traced / count)  # 512: a dict's first table
        assert traced >= overhead * 0.4, (count, traced / count)
