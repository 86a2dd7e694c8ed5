"""The embedded store: a per-process LRU bounded by bytes that honours TTLs."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from cachekit import overrides
from cachekit.backends.base import Answer
from cachekit.entry import CachedResponse
from cachekit.purging import soft_purged

# CPython cost of one stored entry beyond its raw bytes: the entry object, its tuples and
# strings, the dict slots, the key, and the allocator's slack around them. Calibrated with
# bench/memory_footprint.py so that resident memory stays within memory_max_bytes (the
# figures are in bench/README.md).
ENTRY_OVERHEAD: Final = 760
HEADER_OVERHEAD: Final = 130
TAG_OVERHEAD: Final = 110


def entry_cost(key: str, entry: CachedResponse) -> int:
    """Approximate resident bytes of one entry in this store."""
    headers = sum(len(name) + len(value) + HEADER_OVERHEAD for name, value in entry.headers)
    tags = sum(len(tag) + TAG_OVERHEAD for tag in entry.tags)
    body = len(entry.body) + sum(len(data) for _, data in entry.encoded)
    return ENTRY_OVERHEAD + len(key) + body + len(entry.etag) + headers + tags


class MemoryStore:
    """LRU by bytes: inserting past `max_bytes` evicts the least recently used entries."""

    remote = False

    def __init__(
        self,
        max_bytes: int,
        clock: Callable[[], float] | None = None,
        max_variants: int = 32,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_variants = max_variants
        self._variants: dict[str, set[str]] = {}
        self._clock = clock if clock is not None else overrides.wall
        self._entries: OrderedDict[str, tuple[CachedResponse, int]] = OrderedDict()
        self._tags: dict[str, set[str]] = {}
        self._locks: dict[str, tuple[str, float]] = {}
        # The ticket lookups return, counted up by every purge and clear: a fill whose
        # lookup saw an older one raced a purge and is not stored (no clocks involved).
        self._ticket = 1
        self.used_bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get_now(self, key: str) -> CachedResponse | None:
        """Synchronous lookup: the entry, or None when absent or past its stale windows."""
        return self.peek(key, self._clock())[0]

    def peek(self, key: str, now: float) -> Answer:
        """See `Store.peek`: this store always answers without I/O. (Its purges and clears
        remove entries at once, so every entry it holds is valid under the ticket.)"""
        item = self._entries.get(key)
        if item is None:
            return None, self._ticket
        entry = item[0]
        if now >= entry.drop_at:
            self._remove(key)
            return None, self._ticket
        self._entries.move_to_end(key)
        return entry, self._ticket

    async def get(self, key: str) -> tuple[CachedResponse | None, int]:
        """See `Store.get`."""
        return self.peek(key, self._clock())

    async def set(self, key: str, entry: CachedResponse, conditional: bool = False) -> bool:
        """See `Store.set`; an entry larger than the whole budget is not kept."""
        if conditional and entry.generation != self._ticket:
            return False
        cost = entry_cost(key, entry)
        base, mark, _ = key.partition("#")
        if key in self._entries:
            self._remove(key)
        elif mark and not self._has_room_for_variant(base):
            return False
        if cost > self.max_bytes:
            return False
        while self.used_bytes + cost > self.max_bytes and self._entries:
            self._remove(next(iter(self._entries)))
        self._entries[key] = (entry, cost)
        self.used_bytes += cost
        for tag in entry.tags:
            self._tags.setdefault(tag, set()).add(key)
        if mark:
            self._variants.setdefault(base, set()).add(key)
        return True

    def _has_room_for_variant(self, base: str) -> bool:
        variants = self._variants.get(base, set())
        if len(variants) >= self.max_variants:
            for key in list(variants):
                item = self._entries.get(key)
                if item is not None and self._clock() >= item[0].drop_at:
                    self._remove(key)
        return len(self._variants.get(base, ())) < self.max_variants

    async def delete_variants(self, bases: Sequence[str], soft: bool = False) -> int:
        """See `Store.delete_variants`."""
        self._ticket += 1
        keys = [key for base in bases for key in (base, *self._variants.get(base, ()))]
        if soft:
            return self._soften(keys)
        return await self.delete(keys)

    async def delete(self, keys: Sequence[str]) -> int:
        """See `Store.delete`."""
        return sum(self._remove(key) for key in keys)

    async def invalidate_tags(self, tags: Iterable[str], soft: bool = False) -> int:
        """See `Store.invalidate_tags`."""
        names = list(tags)
        self._ticket += 1
        keys = set().union(*(self._tags.get(tag, set()) for tag in names))
        if soft:
            return self._soften(keys)
        return await self.delete(list(keys))

    def _soften(self, keys: Iterable[str]) -> int:
        """Soft-purge these entries now (`purging.soft_purged`); how many existed."""
        at = self._clock()
        found = 0
        for key in keys:
            item = self._entries.get(key)
            if item is None:
                continue
            found += 1
            view = soft_purged(item[0], at)
            if view is None:
                self._remove(key)
            else:
                self._entries[key] = (view, item[1])  # same cost: only deadlines changed
        return found

    async def clear(self) -> None:
        """See `Store.clear`."""
        self._ticket += 1
        self._entries = OrderedDict()
        self._tags = {}
        self._variants = {}
        self.used_bytes = 0

    async def acquire_lock(self, key: str, token: str, ttl: float) -> bool:
        """See `Store.acquire_lock`; in one process this only guards against re-entry."""
        now = self._clock()
        holder = self._locks.get(key)
        if holder is not None and holder[1] > now:
            return False
        self._locks[key] = (token, now + ttl)
        return True

    async def lock_held(self, key: str) -> bool:
        """See `Store.lock_held`."""
        holder = self._locks.get(key)
        return holder is not None and holder[1] > self._clock()

    async def release_lock(self, key: str, token: str) -> None:
        """See `Store.release_lock`."""
        holder = self._locks.get(key)
        if holder is not None and holder[0] == token:
            del self._locks[key]

    async def add_counters(self, counts: Mapping[str, int]) -> None:
        """Nothing to share: this store is seen by this process alone."""

    async def startup_warnings(self) -> list[str]:
        """See `Store.startup_warnings`: nothing to warn about."""
        return []

    def stats(self) -> dict[str, Any]:
        """See `Store.stats`."""
        return {"store": "memory", "entries": len(self._entries), "memory_bytes": self.used_bytes}

    async def close(self) -> None:
        """Nothing to release but memory."""
        await self.clear()

    def _remove(self, key: str) -> bool:
        item = self._entries.pop(key, None)
        if item is None:
            return False
        entry, cost = item
        self.used_bytes -= cost
        base, mark, _ = key.partition("#")
        if mark:
            variants = self._variants.get(base)
            if variants is not None:
                variants.discard(key)
                if not variants:
                    del self._variants[base]
        for tag in entry.tags:
            members = self._tags.get(tag)
            if members is not None:
                members.discard(key)
                if not members:
                    del self._tags[tag]
        return True
