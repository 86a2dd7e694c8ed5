"""A cache's counters: what each process counts, and which of them it shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

#: Counters published to a shared store for `python -m cachekit stats`.
PUBLISHED_COUNTERS: Final = ("hits", "stale_hits", "misses", "stores", "bypasses", "errors")
Counter = Literal[
    "hits",
    "stale_hits",
    "misses",
    "stores",
    "bypasses",
    "errors",
    "skipped",
    "coalesced",
    "lock_waits",
    "lock_timeouts",
    "refreshes",
    "refresh_errors",
    "revalidations",
    "stale_if_error",
    "write_refusals",
]


@dataclass(slots=True)
class CacheStats:
    """Counters since startup, for this process."""

    hits: int = 0
    stale_hits: int = 0
    misses: int = 0
    stores: int = 0
    bypasses: int = 0
    errors: int = 0
    skipped: int = 0
    coalesced: int = 0
    lock_waits: int = 0
    lock_timeouts: int = 0
    refreshes: int = 0
    refresh_errors: int = 0
    #: Fills and refreshes that asked the handler with a stale entry's validators.
    revalidations: int = 0
    stale_if_error: int = 0
    write_refusals: int = 0
