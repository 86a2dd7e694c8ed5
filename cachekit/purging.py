"""Purges as events: what an `on_purge` hook receives once the store has applied a purge.

An app that sits behind a CDN forwards these to the CDN's own purge API (tags to Fastly's
surrogate keys, Cloudflare's cache tags...), so that one `invalidate_tags` empties both
caches. The hook runs after the store has applied the purge, never before: a CDN that
refetches at once must not get the old entry back from us.

A hook is the app's code calling someone else's service: it may fail or hang. Neither may
turn a purge that happened into an error, nor hold the request that caused it, so each call
is bounded by `PURGE_HOOK_TIMEOUT`, and failures are logged (rate-limited) and counted.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Final, Literal

from cachekit.entry import CachedResponse
from cachekit.guard import RateLimitedLog

log = logging.getLogger("cachekit")

PurgeKind = Literal["tag", "key", "namespace", "unsafe_method"]
#: Seconds one hook call may take before it is abandoned (and counted as failed).
PURGE_HOOK_TIMEOUT: Final = 10.0


@dataclass(frozen=True, slots=True)
class Purge:
    """One applied purge.

    `kind`: `"tag"` (`invalidate_tags`), `"key"` (`invalidate`: `keys` are the base keys,
    each with all its Vary variants), `"namespace"` (`clear`), or `"unsafe_method"` (a
    successful POST, PUT, DELETE... purged the tags of its paths, RFC 9111 §4.4; `tags` are
    those path tags). `soft`: entries were marked stale, not removed.
    """

    kind: PurgeKind
    tags: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    soft: bool = False


#: `setup_cache(app, on_purge=...)`: a function or coroutine function taking a `Purge`.
PurgeHook = Callable[[Purge], Awaitable[None] | None]


class PurgeNotifier:
    """Calls the hook for each purge; counts and logs what goes wrong, never raises."""

    __slots__ = ("_failure_log", "errors", "hook", "timeout")

    def __init__(self, hook: PurgeHook | None, timeout: float = PURGE_HOOK_TIMEOUT) -> None:
        self.hook = hook
        self.timeout = timeout
        #: Hook calls that raised or timed out.
        self.errors = 0
        self._failure_log = RateLimitedLog()

    async def notify(self, purge: Purge) -> None:
        """Hand `purge` to the hook (if any), within the timeout."""
        hook = self.hook
        if hook is None:
            return
        try:
            async with asyncio.timeout(self.timeout):
                result = hook(purge)
                if inspect.isawaitable(result):
                    await result
        except Exception as exc:  # the app's code: whatever it raises, the purge stands
            self.errors += 1
            self._failure_log.warning("on_purge hook failed for %s: %r", purge, exc)


def soft_purged(entry: CachedResponse, at: float) -> CachedResponse | None:
    """What a soft purge at `at` (wall-clock seconds) leaves of `entry`: the entry with its
    freshness ended then, so its stale-while-revalidate window (`grace`) and
    stale-if-error window run from the purge; None (a miss, as after a hard purge) when it
    has no stale window to be served in."""
    if entry.grace <= 0 and entry.stale_if_error <= 0:
        return None
    if entry.fresh_until <= at:
        return entry  # already stale then: the purge changes nothing
    return replace(entry, ttl=max(0.0, at - entry.stored_at))


def as_purges_left(entry: CachedResponse, since: float) -> CachedResponse | None:
    """`entry` as the purges of its tags left it: itself when its versions are current
    (`since` is +inf), None after a hard purge (-inf), else `soft_purged(entry, since)`."""
    if since == math.inf:
        return entry
    if since == -math.inf:
        return None
    return soft_purged(entry, since)
