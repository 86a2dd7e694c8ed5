"""`StatsHistory`: a bounded ring of per-handler snapshots, the dashboard's last minutes.

Every `interval` seconds (10 by default) a background task copies each handler's counters
(requests by result, fills and their seconds) into the ring, which keeps the last
`capacity` snapshots (90: a quarter of an hour). `as_json()` turns them into per-interval
series: requests, hit ratio and mean fill latency per handler, plus a last interval that
ends now, so the chart has data from the first request on.

On Redis (`tally` given: `cachekit.worker_stats.summed_handlers`) each snapshot holds the
figures added up over every worker reporting there, as `/stats` has them; when Redis does
not answer, that snapshot holds this worker's and says so (`scope`), and an interval
between snapshots of different scopes has no figures rather than wrong ones. Sums across
workers can go down (a worker leaves): a per-interval difference is never below zero.

Why a task rather than sampling when someone looks: the page must show the minutes
*before* it was opened. One wake-up every ten seconds that copies a few numbers per
handler costs nothing measurable; the task lives and dies with the application
(`cleanup_ctx`).

Memory is bounded whatever the traffic: at most `capacity` snapshots of at most
`MAX_HANDLERS` handlers (the busiest), each handler `len(FIELDS)` doubles in one array.
Handler names are the cache's own strings (handlers are code, not traffic).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
import time
from array import array
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from cachekit import background

#: The results a request of a cached handler ends with (`cachekit_requests_total`).
RESULTS: Final = ("hit", "stale", "revalidated", "miss", "collapsed", "bypass")
#: Answered from a stored entry without calling the handler: the hit ratio's numerator.
SERVED_FROM_CACHE: Final = frozenset({"hit", "stale"})
#: Per handler and snapshot: the results' counts, then fills and their seconds.
FIELDS: Final = (*RESULTS, "fills", "fill_seconds")
SAMPLE_SECONDS: Final = 10.0
SAMPLES: Final = 90
#: Seconds shutdown waits, by default, for a sample in progress to end (`background.stop`).
STOP_SECONDS: Final = 2.0
#: Handlers kept per snapshot (the most requested); an app with more shows these.
MAX_HANDLERS: Final = 64
#: CPython's deque holds its items in linked blocks of 64 slots (8 bytes each, plus links).
_DEQUE_BLOCK_SLOTS: Final = 64
_DEQUE_BLOCK_BYTES: Final = 64 * 8 + 16


class HandlerFigures(Protocol):
    """What a history reads: `cachekit.cache.Cache` has both methods."""

    def handler_results(self) -> list[tuple[str, dict[tuple[str, str], int]]]:
        """Each handler's requests by (result, reason) so far."""
        ...

    def handler_fill_times(self) -> list[tuple[str, int, float]]:
        """Each handler's fills so far and the seconds they took."""
        ...


@dataclass(frozen=True, slots=True)
class Tally:
    """Handler figures read once: added up over `workers` workers (`scope` "cluster") or
    this process's (`scope` "process")."""

    results: list[tuple[str, dict[tuple[str, str], int]]]
    fill_times: list[tuple[str, int, float]]
    scope: str = "process"
    workers: int = 1

    def handler_results(self) -> list[tuple[str, dict[tuple[str, str], int]]]:
        """Each handler's requests by (result, reason)."""
        return self.results

    def handler_fill_times(self) -> list[tuple[str, int, float]]:
        """Each handler's fills and the seconds they took."""
        return self.fill_times


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Counters since startup at wall-clock time `at`: `figures[i * len(FIELDS) + j]` is
    field `j` of handler `names[i]`; `scope` says whose ("cluster": every worker's)."""

    at: float
    names: tuple[str, ...]
    figures: array[float]
    scope: str = "process"

    def of(self, name: str) -> Sequence[float] | None:
        """The figures of one handler, or None when it was not in this snapshot."""
        try:
            index = self.names.index(name)
        except ValueError:
            return None
        width = len(FIELDS)
        return self.figures[index * width : (index + 1) * width]


def take_snapshot(source: HandlerFigures, at: float, scope: str = "process") -> Snapshot:
    """The counters of `source` now, of its `MAX_HANDLERS` most requested handlers."""
    rows: dict[str, list[float]] = {}
    for name, results in source.handler_results():
        row = rows[name] = [0.0] * len(FIELDS)
        for (result, _reason), count in results.items():
            if result in RESULTS:
                row[RESULTS.index(result)] += count
    for name, fills, seconds in source.handler_fill_times():
        row = rows.setdefault(name, [0.0] * len(FIELDS))
        row[-2], row[-1] = float(fills), seconds
    busiest = sorted(rows, key=lambda name: -sum(rows[name][: len(RESULTS)]))[:MAX_HANDLERS]
    names = tuple(sorted(busiest))
    return Snapshot(at, names, array("d", [x for name in names for x in rows[name]]), scope)


def snapshot_bytes(handlers: int) -> int:
    """An upper estimate of the memory one snapshot of `handlers` handlers keeps (the
    names are the cache's strings, not copies): the dataclass, the names' tuple, the
    array, its time."""
    empty = Snapshot(0.0, (), array("d"))
    doubles = handlers * len(FIELDS) * array("d").itemsize
    return (
        sys.getsizeof(empty)
        + sys.getsizeof(())
        + 8 * handlers
        + sys.getsizeof(array("d"))
        + doubles
        + sys.getsizeof(0.0)
    )


class StatsHistory:
    """The last `capacity` snapshots of a cache's handler counters, one per `interval`:
    `source`'s, or with `tally` what it reads (every worker's on Redis)."""

    def __init__(
        self,
        source: HandlerFigures,
        *,
        tally: Callable[[], Awaitable[Tally]] | None = None,
        interval: float = SAMPLE_SECONDS,
        capacity: int = SAMPLES,
        clock: Callable[[], float] = time.time,
        stop_within: float = STOP_SECONDS,
    ) -> None:
        self.source = source
        #: Seconds shutdown waits for a sample in progress (a read of Redis) to end.
        self.stop_within = stop_within
        self.tally = tally
        self.interval = interval
        self.capacity = capacity
        self.clock = clock
        self._ring: deque[Snapshot] = deque(maxlen=capacity)
        #: How many workers the newest read added up (1: this one).
        self.workers = 1

    @property
    def max_bytes(self) -> int:
        """What the ring may hold at most: `capacity` snapshots of `MAX_HANDLERS`
        handlers, and the deque's blocks of `_DEQUE_BLOCK_SLOTS` slots."""
        blocks = self.capacity // _DEQUE_BLOCK_SLOTS + 2
        return self.capacity * snapshot_bytes(MAX_HANDLERS) + blocks * _DEQUE_BLOCK_BYTES

    def __len__(self) -> int:
        return len(self._ring)

    def sample(self, now: Snapshot | None = None) -> Snapshot:
        """Keep `now` (by default `source`'s counters now); the oldest goes when the ring
        is full."""
        snapshot = now if now is not None else take_snapshot(self.source, self.clock())
        self._ring.append(snapshot)
        return snapshot

    async def snapshot(self) -> Snapshot:
        """The counters now: what `tally` reads when given, else `source`'s."""
        if self.tally is None:
            return take_snapshot(self.source, self.clock())
        tally = await self.tally()
        self.workers = tally.workers
        return take_snapshot(tally, self.clock(), tally.scope)

    def as_json(self, now: Snapshot | None = None) -> dict[str, Any]:
        """The kept snapshots and `now` (by default `source`'s counters now) as per-interval
        series (see `series`), and whose figures they are (`scope`, `workers`). The last
        interval ends now; when the newest kept snapshot is less than half an interval old
        it is left out, so that last interval is never a noisy sliver."""
        if now is None:
            now = take_snapshot(self.source, self.clock())
        kept = list(self._ring)
        if len(kept) >= 2 and now.at - kept[-1].at < self.interval / 2:
            kept.pop()
        snapshots = [*kept, now]
        return {
            "interval_seconds": self.interval,
            "capacity": self.capacity,
            "scope": now.scope,
            "workers": self.workers if now.scope == "cluster" else 1,
            **series(snapshots),
        }

    async def current(self) -> dict[str, Any]:
        """`as_json` with the counters read now (every worker's, with `tally`)."""
        return self.as_json(await self.snapshot())

    async def run(self) -> None:
        """Sample every `interval` seconds until cancelled (the first one at once)."""
        while True:
            self.sample(await self.snapshot())
            await asyncio.sleep(self.interval)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Sample in a background task while the block runs (an app's `cleanup_ctx`)."""
        async with background.running(
            self.run(), name="cachekit-stats-history", stop_within=self.stop_within
        ):
            yield


def series(snapshots: Sequence[Snapshot]) -> dict[str, Any]:
    """Per-interval figures between consecutive snapshots: `times` (each interval's end,
    Unix seconds) and, per handler, `requests`, `hit_ratio` (hits and stale hits over
    requests; null without requests) and `fill_ms` (mean handler time of the interval's
    fills; null without fills), then `totals` since startup by result and `fill_ms`.
    A handler missing from a snapshot counts as zero there. A difference below zero (a
    worker left the sums) counts as zero; an interval between snapshots of different
    scopes (Redis did not answer for one) has no requests and null ratio and latency."""
    if not snapshots:
        return {"times": [], "handlers": {}}
    pairs = list(itertools.pairwise(snapshots))
    handlers: dict[str, Any] = {}
    last = snapshots[-1]
    width = len(RESULTS)
    for name in last.names:
        requests: list[int] = []
        ratios: list[float | None] = []
        fill_ms: list[float | None] = []
        for before, after in pairs:
            if before.scope != after.scope:  # whose figures changed: no difference to tell
                requests.append(0)
                ratios.append(None)
                fill_ms.append(None)
                continue
            now = after.of(name) or [0.0] * len(FIELDS)
            then = before.of(name) or [0.0] * len(FIELDS)
            delta = [max(0.0, a - b) for a, b in zip(now, then, strict=True)]
            count = int(sum(delta[:width]))
            served = sum(delta[RESULTS.index(r)] for r in SERVED_FROM_CACHE)
            requests.append(count)
            ratios.append(round(served / count, 4) if count else None)
            fill_ms.append(round(1000 * delta[-1] / delta[-2], 3) if delta[-2] else None)
        figures = last.of(name) or [0.0] * len(FIELDS)
        totals: dict[str, Any] = {r: int(figures[i]) for i, r in enumerate(RESULTS)}
        totals["requests"] = int(sum(figures[:width]))
        totals["fills"] = int(figures[-2])
        totals["fill_ms"] = round(1000 * figures[-1] / figures[-2], 3) if figures[-2] else None
        handlers[name] = {
            "requests": requests,
            "hit_ratio": ratios,
            "fill_ms": fill_ms,
            "totals": totals,
        }
    return {"times": [round(after.at, 3) for _, after in pairs], "handlers": handlers}
