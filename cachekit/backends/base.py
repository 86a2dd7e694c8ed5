"""The contract every store keeps, and the error it raises when it cannot keep it."""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, runtime_checkable

from cachekit.entry import CachedResponse

#: Ticket value meaning "the lookup failed; do not store what the handler produces".
UNKNOWN_GENERATION: Final = -1

#: A store's answer for one key: the entry (None when absent) and the ticket it was read
#: under (the fill stores its entry with `generation` = that ticket).
Answer = tuple[CachedResponse | None, int]


class StoreError(Exception):
    """A store operation failed (connection lost, timeout, damaged data). Never fatal."""


class WriteRefused(StoreError):
    """The store answered but refused a write (Redis out of memory under `noeviction`, a
    read-only replica): it is up, and lookups still work."""


class Store(Protocol):
    """Where entries live. Keys are logical cache keys; the store adds its own prefixes.

    Failure contract: a store raises `StoreError` (or lets a timeout propagate) and the
    caller serves the request as if nothing was cached; a store never returns damaged data.

    Tickets: every answer carries the store's ticket, a value that changes with every purge
    and clear (never with a fill). A fill stores its entry with `generation` = the ticket
    of its lookup and `conditional=True`: the store refuses it when a purge may have
    happened since, so a response that may predate a purge is never stored.
    """

    #: True when operations do I/O and must be bounded by a timeout and a breaker.
    remote: bool

    def peek(self, key: str, now: float) -> Answer | None:
        """The answer for `key` when this store has it without I/O (the embedded store
        always; a near cache when it holds a fresh copy), else None: ask `get`. Synchronous,
        so such hits need no coroutine."""
        ...

    def get(self, key: str) -> Awaitable[Answer]:
        """The entry under `key` (None when absent) and the current generation."""
        ...

    async def set(self, key: str, entry: CachedResponse, conditional: bool = False) -> bool:
        """Store `entry` for `entry.keep_for()` seconds and index it under its tags.

        A key `base#variant` is a Vary variant of `base`; False means it was not stored
        because `base` already has the maximum number of live variants, or (`conditional`)
        because the ticket `entry.generation` is no longer current: a purge or clear since
        the lookup that returned it. Raises ValueError for an entry that cannot be encoded.
        """
        ...

    async def delete(self, keys: Sequence[str]) -> int:
        """Remove these entries; returns how many existed."""
        ...

    async def delete_variants(self, bases: Sequence[str], soft: bool = False) -> int:
        """Remove these base keys' entries together with all their Vary variants; returns
        how many existed. Also voids fills still in flight (a new ticket).

        `soft` (the cache passes it only when True, so a store without soft purges still
        works for hard ones): mark the entries stale instead, as `purging.soft_purged`
        says, so they are served within their stale window while one fill refreshes them.
        """
        ...

    async def invalidate_tags(self, tags: Iterable[str], soft: bool = False) -> int:
        """Remove every entry stored under any of these tags; returns how many.

        Also voids fills still in flight (a new ticket): no entry of a purged tag is
        served afterwards, whatever the store evicts. `soft`: as for `delete_variants`.
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

    async def add_counters(self, counts: Mapping[str, int]) -> None:
        """Add per-process counter increments to the namespace-wide totals operators read
        (`python -m cachekit stats`); a store only this process sees ignores them."""
        ...

    async def startup_warnings(self) -> list[str]:
        """Problems of the store's configuration worth one warning at startup (e.g. a Redis
        eviction policy that can drop what purges rely on); never raises."""
        ...

    def stats(self) -> dict[str, Any]:
        """Facts about the store for `Cache.stats()`: `store` (its kind) and whatever it
        can tell cheaply (entries, bytes, lookup batching, near-cache figures)."""
        ...

    async def close(self) -> None:
        """Release connections; the store is unusable afterwards."""
        ...


@dataclass(frozen=True, slots=True)
class WorkerReport:
    """One app process's latest figures as a shared store holds them."""

    worker: str
    #: When it last reported, in seconds since the epoch (the store's clock).
    last_seen: float
    #: What it published (cachekit.worker_stats reads it; never trusted blindly).
    data: bytes


@runtime_checkable
class SharedWorkers(Protocol):
    """What a store shared by several processes may also do (optional: the Redis stores
    do): keep each process's figures while it keeps reporting them, so that the admin
    API's `/stats` adds up every worker. A store without it gives this process's only."""

    async def publish_worker(self, worker: str, report: bytes, keep: float, most: int) -> None:
        """Store `worker`'s report for `keep` seconds (renewed by the next), keeping at
        most `most` workers (the longest silent are forgotten first)."""
        ...

    async def withdraw_worker(self, worker: str) -> None:
        """Forget `worker` and its report (it stops)."""
        ...

    async def worker_reports(self, most: int) -> list[WorkerReport]:
        """The reports of the workers that reported lately, at most `most`, latest first."""
        ...
