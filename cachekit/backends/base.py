"""The contract every store keeps, and the error it raises when it cannot keep it."""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from typing import Protocol, runtime_checkable

from cachekit.entry import CachedResponse

#: Wall-clock time (`time.time()`) of the latest lookup in this task that may lead to a fill
#: (a miss, or a stale entry). Fills and refreshes run in tasks started right after that
#: lookup (tasks inherit the context) and the handler runs after it, so this bounds from
#: below when the handler began reading its data: `Cache.save` passes it as `started_at`.
#: Set by the stores' lookups (`RedisStore.get`, `MemoryStore.get_now`).
LOOKUP_TIME: ContextVar[float] = ContextVar("cachekit_lookup_time")


class StoreError(Exception):
    """A store operation failed (connection lost, timeout, damaged data). Never fatal."""


class Store(Protocol):
    """Where entries live. Keys are logical cache keys; the store adds its own prefixes.

    Failure contract: a store raises `StoreError` (or lets a timeout propagate) and the
    caller serves the request as if nothing was cached; a store never returns damaged data.
    `generation` is the namespace generation seen by `get`; an entry stored with an older
    generation (the namespace was cleared meanwhile) is never returned.
    """

    #: True when operations do I/O and must be bounded by a timeout and a breaker.
    remote: bool

    def get(self, key: str) -> Awaitable[tuple[CachedResponse | None, int]]:
        """The entry under `key` (None when absent) and the current generation."""
        ...

    async def set(self, key: str, entry: CachedResponse, started_at: float | None = None) -> bool:
        """Store `entry` for `entry.keep_for()` seconds and index it under its tags.

        A key `base#variant` is a Vary variant of `base`; False means it was not stored
        because `base` already has the maximum number of live variants. `started_at` is the
        wall-clock time (`time.time()`) the fill began, before the handler ran: when given,
        False also means one of the entry's tags was purged since, so the response may
        predate the purge. Raises ValueError for an entry that cannot be encoded.
        """
        ...

    async def delete(self, keys: Sequence[str]) -> int:
        """Remove these entries; returns how many existed."""
        ...

    async def delete_variants(self, bases: Sequence[str]) -> int:
        """Remove these base keys' entries together with all their Vary variants."""
        ...

    async def invalidate_tags(self, tags: Iterable[str]) -> int:
        """Remove every entry stored under any of these tags; returns how many.

        Also voids fills of these tags still in flight: `set` with an earlier `started_at`
        stores nothing, so no entry of a purged tag is served afterwards.
        """
        ...

    async def clear(self) -> None:
        """Drop every entry of this namespace (and nothing outside it)."""
        ...

    async def acquire_lock(self, key: str, token: str, ttl: float) -> bool:
        """Take the fill lock of `key` for at most `ttl` seconds; False if someone holds it."""
        ...

    async def lock_held(self, key: str) -> bool:
        """Whether anyone holds the fill lock of `key` right now."""
        ...

    async def release_lock(self, key: str, token: str) -> None:
        """Release the fill lock of `key` if `token` still owns it."""
        ...

    async def close(self) -> None:
        """Release connections; the store is unusable afterwards."""
        ...


@runtime_checkable
class CounterSink(Protocol):
    """A shared store that keeps namespace-wide counters for operators (`python -m cachekit`)."""

    async def add_counters(self, counts: Mapping[str, int]) -> None:
        """Add these per-process counter increments to the shared totals."""
        ...
