"""Cross-process fill locks: `FillLocks` (one cache's: taking, releasing, asking, and the
locks found stuck) and `FillLock` (the lock of one key, as a fill holds it).

A fill takes the lock of its key in the shared store so that one process runs the handler
and the others wait for its entry. A holder that stops answering leaves its lock until
`lock_ttl`; the process that waited `lock_timeout` for it remembers it as stuck (bounded),
so that later requests for that key are served at once instead of waiting again.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

from cachekit.backends.base import Store
from cachekit.settings import CacheSettings

T = TypeVar("T")
Guard = Callable[[Coroutine[Any, Any, Any], Any, str], Coroutine[Any, Any, Any]]

#: Fill locks remembered as stuck (their holder stopped answering), at most.
STUCK_LOCKS_KEPT: Final = 1024


class FillLocks:
    """One cache's fill locks, every store call through its guard (`StoreGuard.bounded`)."""

    def __init__(self, store: Store, settings: CacheSettings, guard: Guard) -> None:
        self._store = store
        self._settings = settings
        self._guard = guard
        #: Fill locks whose holder stopped answering, until when (loop time) they may remain.
        self._stuck: dict[str, float] = {}

    async def take(self, key: str, token: str) -> bool | None:
        """Take the lock of `key`: True if ours, False if held by someone else, None if the
        store could not say (the caller then fills unlocked). Always ours in-process."""
        if not self._store.remote:
            return True
        acquiring = self._store.acquire_lock(key, token, self._settings.lock_ttl)
        return await self._guard(acquiring, None, "lock")  # type: ignore[no-any-return]

    async def release(self, key: str, token: str) -> None:
        """Release our lock; a failure only means it expires after `lock_ttl`."""
        if self._store.remote:
            await self._guard(self._store.release_lock(key, token), None, "lock")

    async def held(self, key: str) -> bool | None:
        """Whether someone holds the lock of `key`; None if the store cannot say."""
        return await self._guard(self._store.lock_held(key), None, "lock")  # type: ignore[no-any-return]

    def is_stuck(self, key: str) -> bool:
        """Whether the lock of `key` was found stuck and may still be held."""
        return self._stuck.get(key, 0.0) > asyncio.get_running_loop().time()

    def remember_stuck(self, key: str) -> None:
        """The lock of `key` outlived `lock_timeout`: its holder stopped answering, and it
        expires within the rest of `lock_ttl`. Until then requests need not wait for it."""
        settings, stuck = self._settings, self._stuck
        now = asyncio.get_running_loop().time()
        if len(stuck) >= STUCK_LOCKS_KEPT:  # bounded: forget the expired ones
            for expired in [name for name, until in stuck.items() if until <= now]:
                del stuck[expired]
        if len(stuck) < STUCK_LOCKS_KEPT:
            stuck[key] = now + settings.lock_ttl - settings.lock_timeout

    def forget_stuck(self, key: str) -> None:
        """The lock of `key` is free again."""
        self._stuck.pop(key, None)

    def stuck_count(self) -> int:
        """Locks remembered as stuck now (at most `STUCK_LOCKS_KEPT`)."""
        return len(self._stuck)


class FillLock:
    """The fill lock of one key, held at most once and released only if ours. Without a
    remote store (or after a failed lookup) there is none to take."""

    __slots__ = ("held", "key", "locks", "token")

    def __init__(self, locks: FillLocks, key: str) -> None:
        self.locks = locks
        self.key = key
        self.token = secrets.token_hex(16)
        self.held = False

    async def take(self) -> bool | None:
        """True if ours now, False if someone else holds it, None if the store cannot say."""
        taken = await self.locks.take(self.key, self.token)
        self.held = taken is True
        return taken

    async def release(self) -> None:
        """Release it if we hold it; a failure only means it expires after `lock_ttl`."""
        if self.held:
            self.held = False
            await self.locks.release(self.key, self.token)
