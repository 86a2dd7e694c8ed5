"""`BoundedMemo`: a per-process memo bounded in bytes, and the registry of every memo's budget.

Every memo cachekit keeps in a process is one of these, so the memory they may hold adds up
to `total_max_bytes()` whatever the traffic (README, "Memory budget of per-process memos").

Eviction is clear-when-full: a value that would take the memo past `max_bytes` empties it
first. Memos sit on the hit path, where reading must cost no more than a dict lookup: `get`
is the dict's own `get`, with no recency to record (an LRU's bookkeeping is a Python call
per read, ~0.2 µs, a few per cent of a hit). What a clear costs is one rebuild per value
still in use, and it frees everything at once, so the bound holds exactly.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable
from typing import Any, Final, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: A value costing more than this share of its memo's budget is not kept, so that a few
#: large values never empty a memo that many small ones use.
LARGEST_SHARE: Final = 1 / 16
#: What the memo's own bookkeeping costs per kept value, added to the caller's estimate: a
#: slot in each of two dicts (with their spare room) and the int holding the cost.
#: Calibrated with tracemalloc (tests/test_memo.py).
ENTRY_OVERHEAD: Final = 160


class BoundedMemo(Generic[K, V]):
    """Values by key, holding at most `max_bytes` of estimated resident memory.

    `put(key, value, cost)` takes the caller's estimate of the bytes key and value keep
    alive; values are never None. Not thread-safe: one event loop per process uses it.
    """

    __slots__ = ("__weakref__", "_costs", "_max_bytes", "_used_bytes", "_values", "get", "name")

    #: The value kept for `key`, or None.
    get: Callable[[K], V | None]

    def __init__(self, name: str, max_bytes: int) -> None:
        self.name = name
        self._max_bytes = max_bytes
        self._used_bytes = 0
        self._values: dict[K, V] = {}
        self._costs: dict[K, int] = {}
        self.get = self._values.get
        _REGISTRY.append(weakref.ref(self))

    @property
    def max_bytes(self) -> int:
        """The budget: estimated bytes this memo may hold."""
        return self._max_bytes

    @property
    def used_bytes(self) -> int:
        """Estimated bytes held now (the callers' costs plus `ENTRY_OVERHEAD` each)."""
        return self._used_bytes

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        held = f"{len(self)} values, {self._used_bytes} of {self._max_bytes} bytes"
        return f"<BoundedMemo {self.name!r}: {held}>"

    def put(self, key: K, value: V, cost: int) -> None:
        """Keep `value` for `key` (replacing any), unless it costs over `LARGEST_SHARE` of
        the budget; empties the memo first when it would not fit."""
        cost += ENTRY_OVERHEAD
        old = self._costs.pop(key, None)
        if old is not None:
            del self._values[key]
            self._used_bytes -= old
        if cost > self._max_bytes * LARGEST_SHARE:
            return
        if self._used_bytes + cost > self._max_bytes:
            self.clear()
        self._values[key] = value
        self._costs[key] = cost
        self._used_bytes += cost

    def clear(self) -> None:
        """Forget every value."""
        self._values.clear()
        self._costs.clear()
        self._used_bytes = 0


_REGISTRY: Final[list[weakref.ref[BoundedMemo[Any, Any]]]] = []


def registered() -> list[BoundedMemo[Any, Any]]:
    """Every memo alive in this process, in the order they were made."""
    alive = [memo for ref in _REGISTRY if (memo := ref()) is not None]
    if len(alive) < len(_REGISTRY):
        _REGISTRY[:] = [weakref.ref(memo) for memo in alive]
    return alive


def total_max_bytes() -> int:
    """The sum of the budgets of every memo alive in this process."""
    return sum(memo.max_bytes for memo in registered())
