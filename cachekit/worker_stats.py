"""Figures across workers: each app process publishes its cumulative counters and
per-handler results to a shared store every `REPORT_SECONDS`, and the admin API's `/stats`
adds up every worker that reported lately (`stats_view`).

The figures are the tallies the request story already keeps (`Cache.counters`,
`Cache.handler_results`); publishing reads them in a background task (`WorkerReporter`),
so a hit pays nothing for it, and a failing store only costs the task a counted,
rate-limited warning. A worker's report lives `REPORT_KEEP_SECONDS` unless renewed, so a
worker that stops (or stalls) drops out of the sums; one that stops cleanly withdraws at
once. On a store only this process sees (the embedded one), `/stats` says `"scope":
"process"` and gives this process's figures.

What other processes wrote is read as data: a report that does not parse as cachekit's
shape is left out and counted (`unreadable`), never trusted.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from cachekit import background
from cachekit.backends.base import SharedWorkers, WorkerReport
from cachekit.guard import RateLimitedLog
from cachekit.stats_history import Tally
from cachekit.store_guard import raise_if_cancelling

if TYPE_CHECKING:
    from cachekit.cache import Cache

#: How often each worker publishes its figures.
REPORT_SECONDS: Final = 1.0
#: How long a report lives unless renewed: a few missed reports before a worker drops out.
REPORT_KEEP_SECONDS: Final = 5 * REPORT_SECONDS
#: Most workers a namespace keeps reports of (and `/stats` reads).
MOST_WORKERS: Final = 1024
#: Reports larger than this are left out when read (a worker's figures are a few KB).
MAX_REPORT_BYTES: Final = 1 << 20

#: Figures: counters by name, per handler its requests by result (`hit`,
#: `bypass:authorization`, ...), and per handler `[fills, their seconds]` (`fills`; reports
#: of older versions have none).
Figures = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Worker:
    """Who reports: a random suffix tells apart processes that share a host and pid."""

    id: str
    pid: int
    host: str
    started: float

    @classmethod
    def this_process(cls) -> Worker:
        """The worker this process is (a fresh id per call)."""
        host, pid = socket.gethostname()[:255], os.getpid()
        return cls(f"{host}:{pid}:{secrets.token_hex(4)}", pid, host, time.time())


def result_name(result: str, reason: str) -> str:
    """How a (result, reason) tally is named in figures: `hit`, `bypass:authorization`."""
    return f"{result}:{reason}" if reason else result


def figures_of(cache: Cache) -> Figures:
    """This process's counters and per-handler results now."""
    return {
        "counters": asdict(cache.counters),
        "handlers": {
            name: {
                result_name(result, reason): count
                for (result, reason), count in sorted(results.items())
            }
            for name, results in cache.handler_results()
        },
        "fills": {
            name: [fills, round(seconds, 6)] for name, fills, seconds in cache.handler_fill_times()
        },
    }


def parse_report(data: bytes) -> Figures | None:
    """A published report's figures and worker facts, or None unless it has cachekit's
    shape (counters and results non-negative integers)."""
    if len(data) > MAX_REPORT_BYTES:
        return None
    try:
        report = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(report, dict):
        return None
    counters, handlers = report.get("counters"), report.get("handlers")
    if not _counts(counters) or not isinstance(handlers, dict):
        return None
    if not all(isinstance(name, str) and _counts(counts) for name, counts in handlers.items()):
        return None
    pid, host, started = report.get("pid"), report.get("host"), report.get("started")
    if not (_count(pid) and isinstance(host, str) and isinstance(started, int | float)):
        return None
    fills = report.setdefault("fills", {})  # absent from reports of older versions
    if not (isinstance(fills, dict) and all(_fill(name, row) for name, row in fills.items())):
        return None
    return report


def _fill(name: Any, row: Any) -> bool:
    """A report's `[fills, seconds]` of handler `name`: a count and finite seconds >= 0."""
    if not (isinstance(name, str) and isinstance(row, list) and len(row) == 2):
        return False
    count, seconds = row
    return (
        _count(count)
        and isinstance(seconds, int | float)
        and not isinstance(seconds, bool)
        and math.isfinite(seconds)
        and seconds >= 0
    )


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _counts(values: Any) -> bool:
    return isinstance(values, dict) and all(
        isinstance(name, str) and _count(count) for name, count in values.items()
    )


def summed(every: Iterable[Figures]) -> tuple[dict[str, Any], dict[str, int]]:
    """Per handler `{"results": {...}, "requests": N}` and the counters, added up."""
    results: dict[str, dict[str, int]] = {}
    total: dict[str, int] = {}
    for figures in every:
        for name, count in figures["counters"].items():
            total[name] = total.get(name, 0) + count
        for handler, counts in figures["handlers"].items():
            into = results.setdefault(handler, {})
            for result, count in counts.items():
                into[result] = into.get(result, 0) + count
    handlers: dict[str, Any] = {
        name: {"results": dict(sorted(counts.items())), "requests": sum(counts.values())}
        for name, counts in sorted(results.items())
    }
    total["requests"] = sum(sum(counts.values()) for counts in results.values())
    return handlers, total


def summed_fills(every: Iterable[Figures]) -> list[tuple[str, int, float]]:
    """Per handler its fills and their seconds, added up (`Cache.handler_fill_times`'s shape)."""
    fills: dict[str, tuple[int, float]] = {}
    for figures in every:
        for handler, (count, seconds) in figures.get("fills", {}).items():
            before = fills.get(handler, (0, 0.0))
            fills[handler] = (before[0] + count, before[1] + float(seconds))
    return [(name, count, seconds) for name, (count, seconds) in sorted(fills.items())]


class WorkerReporter:
    """Publishes this process's figures to a shared store every `interval` seconds."""

    def __init__(
        self, cache: Cache, board: SharedWorkers, interval: float = REPORT_SECONDS
    ) -> None:
        self.cache = cache
        self.board = board
        self.worker = Worker.this_process()
        self.interval = interval
        self.keep = max(REPORT_KEEP_SECONDS, 5 * interval)
        #: Reports published, and publications that failed (logged at most every 30 s).
        self.published = 0
        self.errors = 0
        self._log = RateLimitedLog()

    def report(self) -> bytes:
        """This worker's report: who it is and its figures now."""
        worker = self.worker
        facts = {"pid": worker.pid, "host": worker.host, "started": worker.started}
        return json.dumps({**facts, **figures_of(self.cache)}, separators=(",", ":")).encode()

    async def publish(self) -> bool:
        """Publish once; False (counted, logged) when the store failed or was skipped."""
        if self.cache.breaker.is_open:  # the store is down: the next report will do
            return False
        try:
            async with asyncio.timeout(self.timeout):
                await self.board.publish_worker(
                    self.worker.id, self.report(), self.keep, MOST_WORKERS
                )
        except Exception as exc:  # whatever it is, a report must never stop the task
            raise_if_cancelling(exc)
            self.errors += 1
            self._log.warning("could not publish this worker's cache figures: %r", exc)
            return False
        self.published += 1
        return True

    async def run(self) -> None:
        """Publish now, then every `interval` seconds, until cancelled."""
        while True:
            await self.publish()
            await asyncio.sleep(self.interval)

    async def running(self, _: web.Application) -> AsyncIterator[None]:
        """An app's `cleanup_ctx`: publish while the app serves, withdraw when it stops."""
        # Who we are is settled here, in the serving process: an app built before a fork
        # (gunicorn's --preload) would otherwise give every worker the parent's identity.
        self.worker = Worker.this_process()
        async with background.running(
            self.run(), name="cachekit-worker-report", stop_within=self.timeout + 1.0
        ):
            yield
        await self.withdraw()

    async def withdraw(self) -> None:
        """Remove this worker's report (it stops); a failure leaves it to expire."""
        try:
            async with asyncio.timeout(self.timeout):
                await self.board.withdraw_worker(self.worker.id)
        except Exception as exc:
            self._log.warning("could not withdraw this worker's cache figures: %r", exc)

    @property
    def timeout(self) -> float:
        """The bound on one publication or read (it holds no request up)."""
        return max(self.cache.settings.redis_timeout, 1.0)


REPORTER: Final = web.AppKey("cachekit_worker_reporter", WorkerReporter)


def reporter_for(cache: Cache) -> WorkerReporter | None:
    """A reporter when the store is shared and can hold reports, and counters are
    published at all (`stats_interval` > 0)."""
    store = cache.store
    if not (store.remote and cache.settings.stats_interval > 0):
        return None
    return WorkerReporter(cache, store) if isinstance(store, SharedWorkers) else None


@dataclass(frozen=True, slots=True)
class BoardRead:
    """The workers' board as this process read it once: its own figures (live), every
    other worker's readable report, how many were unreadable, and why the store did not
    answer (then `others` is empty)."""

    worker: Worker
    own: Figures
    others: list[tuple[WorkerReport, Figures]]
    unreadable: int
    error: str | None


async def read_board(cache: Cache, reporter: WorkerReporter | None) -> BoardRead:
    """This process's figures and, with a reporter, every other worker's last report, read
    within the reporter's timeout (a store that does not answer leaves this process's)."""
    own = figures_of(cache)
    worker = reporter.worker if reporter is not None else _process_worker(os.getpid())
    reports: list[WorkerReport] = []
    error = None
    if reporter is not None:
        try:
            async with asyncio.timeout(reporter.timeout):
                reports = await reporter.board.worker_reports(MOST_WORKERS)
        except Exception as exc:  # this process's figures still answer
            error = f"the cache store did not answer: {type(exc).__name__}"
    others = [
        (report, parsed)
        for report in reports
        if report.worker != worker.id and (parsed := parse_report(report.data)) is not None
    ]
    readable = {report.worker for report, _ in others} | {worker.id}
    unreadable = len({r.worker for r in reports} - readable)
    return BoardRead(worker, own, others, unreadable, error)


async def summed_handlers(cache: Cache, reporter: WorkerReporter | None) -> Tally:
    """The per-handler results and fill times `/stats` adds up, in `Cache.handler_results`'s
    shape: across workers (`"cluster"`) with a reporter whose store answers, this process's
    (`"process"`) otherwise. What the dashboard's history samples."""
    board = await read_board(cache, reporter)
    every = [board.own, *(parsed for _, parsed in board.others)]
    handlers, _ = summed(every)
    results = [
        (name, {_result_of(result): count for result, count in figures["results"].items()})
        for name, figures in handlers.items()
    ]
    scope = "cluster" if reporter is not None and board.error is None else "process"
    return Tally(results, summed_fills(every), scope, 1 + len(board.others))


def _result_of(name: str) -> tuple[str, str]:
    """`bypass:authorization` back to `("bypass", "authorization")` (see `result_name`)."""
    result, _, reason = name.partition(":")
    return result, reason


async def stats_view(cache: Cache, reporter: WorkerReporter | None) -> dict[str, Any]:
    """What `GET {prefix}/stats` answers: every worker's figures added up on a shared store
    (`"scope": "cluster"`), this process's alone otherwise (`"scope": "process"`)."""
    board = await read_board(cache, reporter)
    worker, own, others = board.worker, board.own, board.others
    mine = _worker_entry(worker.id, _facts(worker), own, time.time(), this=True)
    view: dict[str, Any] = {"scope": "process", "pid": os.getpid(), "process": cache.stats()}
    if reporter is not None:
        view["reporting"] = {
            "interval": reporter.interval,
            "published": reporter.published,
            "errors": reporter.errors,
        }
        if board.error is None:
            view["scope"] = "cluster"
        else:
            view["error"] = board.error
    view["unreadable"] = board.unreadable
    handlers, total = summed([own, *(parsed for _, parsed in others)])
    workers = [mine] + [
        _worker_entry(report.worker, parsed, parsed, report.last_seen, this=False)
        for report, parsed in others
    ]
    view.update(
        workers=sorted(workers, key=lambda entry: (entry["host"], entry["pid"], entry["id"])),
        handlers=handlers,
        total=total,
    )
    return view


@functools.lru_cache(maxsize=1)
def _process_worker(pid: int) -> Worker:
    """This process as a worker, one identity per process (`pid`: made anew after a fork)."""
    del pid
    return Worker.this_process()


def _facts(worker: Worker) -> dict[str, Any]:
    return {"pid": worker.pid, "host": worker.host, "started": worker.started}


def _worker_entry(
    worker: str, facts: Mapping[str, Any], figures: Figures, last_seen: float, *, this: bool
) -> dict[str, Any]:
    requests = sum(sum(results.values()) for results in figures["handlers"].values())
    return {
        "id": worker,
        "pid": facts["pid"],
        "host": facts["host"],
        "started": facts["started"],
        "last_seen": round(last_seen, 3),
        "requests": requests,
        "this_process": this,
    }
