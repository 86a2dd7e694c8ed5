"""`cachekit.stats_history`: snapshots of handler counters, per-interval series, the ring's
bounds (in count and in bytes), and the sampler's life with the application."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from typing import Any

from aiohttp import web

from cachekit import cached
from cachekit.admin import setup_admin
from cachekit.dashboard import HISTORY
from cachekit.stats_history import (
    MAX_HANDLERS,
    StatsHistory,
    Tally,
    snapshot_bytes,
    take_snapshot,
)
from tests.apps import make_app

TOKEN = "t" * 40


class FakeFigures:
    """Counters set by the test: results by (result, reason), fills and their seconds."""

    def __init__(self) -> None:
        self.results: dict[str, dict[tuple[str, str], int]] = {}
        self.fills: dict[str, tuple[int, float]] = {}

    def add(self, name: str, result: str, count: int = 1, reason: str = "") -> None:
        row = self.results.setdefault(name, {})
        row[result, reason] = row.get((result, reason), 0) + count

    def fill(self, name: str, seconds: float) -> None:
        count, total = self.fills.get(name, (0, 0.0))
        self.fills[name] = (count + 1, total + seconds)

    def handler_results(self) -> list[tuple[str, dict[tuple[str, str], int]]]:
        return list(self.results.items())

    def handler_fill_times(self) -> list[tuple[str, int, float]]:
        return [(name, count, total) for name, (count, total) in self.fills.items()]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_series_are_per_interval_differences() -> None:
    figures, clock = FakeFigures(), Clock()
    history = StatsHistory(figures, interval=10, capacity=5, clock=clock)
    history.sample()  # all zero
    figures.add("page", "hit", 6)
    figures.add("page", "stale", 2)
    figures.add("page", "miss", 1)
    figures.add("page", "bypass", 1, reason="authorization")
    figures.fill("page", 0.030)
    clock.now += 10
    history.sample()
    figures.add("page", "miss", 4)
    for _ in range(4):
        figures.fill("page", 0.010)
    clock.now += 10
    data = history.as_json()  # the last interval ends now, 10 s after the last sample
    assert data["interval_seconds"] == 10 and data["capacity"] == 5
    assert data["times"] == [1010.0, 1020.0]
    page = data["handlers"]["page"]
    assert page["requests"] == [10, 4]
    assert page["hit_ratio"] == [0.8, 0.0]
    assert page["fill_ms"] == [30.0, 10.0]
    assert page["totals"] == {
        "hit": 6,
        "stale": 2,
        "revalidated": 0,
        "miss": 5,
        "collapsed": 0,
        "bypass": 1,
        "requests": 14,
        "fills": 5,
        "fill_ms": 14.0,
    }


def test_an_interval_without_requests_has_no_ratio() -> None:
    figures, clock = FakeFigures(), Clock()
    figures.add("idle", "miss")
    history = StatsHistory(figures, interval=10, clock=clock)
    history.sample()
    clock.now += 10
    idle = history.as_json()["handlers"]["idle"]
    assert idle["requests"] == [0] and idle["hit_ratio"] == [None] and idle["fill_ms"] == [None]


def tally(hits: int, misses: int, scope: str = "cluster", workers: int = 2) -> Tally:
    results = [("page", {("hit", ""): hits, ("miss", ""): misses})]
    return Tally(results, [("page", misses, 0.01 * misses)], scope, workers)


async def test_sums_across_workers_that_fall_count_as_zero() -> None:
    """A worker leaves: the summed totals go down; that interval has no requests."""
    clock = Clock()
    read = [tally(0, 0), tally(8, 2), tally(3, 1, workers=1), tally(5, 1, workers=1)]

    async def next_read() -> Tally:
        return read.pop(0)

    history = StatsHistory(FakeFigures(), tally=next_read, interval=10, clock=clock)
    for _ in range(3):
        history.sample(await history.snapshot())
        clock.now += 10
    data = await history.current()
    assert (data["scope"], data["workers"]) == ("cluster", 1)
    page = data["handlers"]["page"]
    assert page["requests"] == [10, 0, 2]
    assert page["hit_ratio"] == [0.8, None, 1.0]
    assert page["fill_ms"] == [10.0, None, None]
    assert page["totals"]["requests"] == 6 and page["totals"]["fills"] == 1


async def test_an_interval_across_scopes_has_no_figures() -> None:
    """Redis did not answer for one snapshot (this worker's figures): no difference is
    told between it and its neighbours, whose figures are every worker's."""
    clock = Clock()
    read = [tally(10, 10), tally(1, 1, scope="process", workers=1), tally(30, 10)]

    async def next_read() -> Tally:
        return read.pop(0)

    history = StatsHistory(FakeFigures(), tally=next_read, interval=10, clock=clock)
    for _ in range(2):
        history.sample(await history.snapshot())
        clock.now += 10
    data = await history.current()
    assert data["handlers"]["page"]["requests"] == [0, 0]
    assert data["handlers"]["page"]["hit_ratio"] == [None, None]
    assert data["scope"] == "cluster"


def test_a_handler_new_since_the_last_sample_counts_from_zero() -> None:
    figures, clock = FakeFigures(), Clock()
    history = StatsHistory(figures, interval=10, clock=clock)
    history.sample()
    figures.add("late", "hit", 3)
    clock.now += 10
    assert history.as_json()["handlers"]["late"]["requests"] == [3]


def test_history_exists_from_the_first_request() -> None:
    """Opened a second after startup, the page already has one interval to draw."""
    figures, clock = FakeFigures(), Clock()
    history = StatsHistory(figures, interval=10, clock=clock)
    history.sample()
    figures.add("page", "hit", 2)
    clock.now += 1
    data = history.as_json()
    assert data["times"] == [1001.0]
    assert data["handlers"]["page"]["hit_ratio"] == [1.0]


def test_the_last_interval_is_never_a_sliver() -> None:
    figures, clock = FakeFigures(), Clock()
    history = StatsHistory(figures, interval=10, clock=clock)
    for _ in range(3):
        history.sample()
        clock.now += 10
    clock.now -= 9  # one second after the third sample
    figures.add("page", "hit")
    assert history.as_json()["times"] == [1010.0, 1021.0]  # the third sample left out
    clock.now += 4  # five seconds after it: kept
    assert history.as_json()["times"] == [1010.0, 1020.0, 1025.0]


def test_the_ring_keeps_capacity_snapshots() -> None:
    figures, clock = FakeFigures(), Clock()
    history = StatsHistory(figures, interval=10, capacity=4, clock=clock)
    for step in range(10):
        figures.add("page", "hit", step)
        history.sample()
        clock.now += 10
    assert len(history) == 4
    data = history.as_json()
    assert len(data["times"]) == 4  # three between kept snapshots, and the one ending now
    assert data["handlers"]["page"]["requests"] == [7, 8, 9, 0]


def test_a_snapshot_keeps_the_busiest_handlers() -> None:
    figures = FakeFigures()
    for index in range(MAX_HANDLERS + 20):
        figures.add(f"h{index:03}", "miss", index)
    snapshot = take_snapshot(figures, 0.0)
    assert len(snapshot.names) == MAX_HANDLERS
    assert "h000" not in snapshot.names and f"h{MAX_HANDLERS + 19:03}" in snapshot.names
    assert snapshot.names == tuple(sorted(snapshot.names))


def test_the_ring_stays_within_its_byte_bound() -> None:
    """A full ring of the most handlers a snapshot keeps, measured with tracemalloc."""
    figures, clock = FakeFigures(), Clock()
    for index in range(MAX_HANDLERS * 2):
        figures.add(f"handler_with_a_long_name_{index:04}", "hit", 1_000_000 + index)
        figures.fill(f"handler_with_a_long_name_{index:04}", 0.5)
    history = StatsHistory(figures, interval=10, capacity=90, clock=clock)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(200):
            history.sample()
            clock.now += 10
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(history) == 90
    assert held <= history.max_bytes, (held, history.max_bytes)
    assert 90 * snapshot_bytes(MAX_HANDLERS) < history.max_bytes
    assert history.max_bytes < 512 << 10  # the README's memory budget says so


async def test_the_sampler_runs_with_the_application(aiohttp_client: Any) -> None:
    routes = web.RouteTableDef()

    @routes.get("/page")
    @cached(ttl=60)
    async def page(request: web.Request) -> web.Response:
        await asyncio.sleep(0.01)
        return web.Response(text="page")

    app, cache = make_app(routes, admin_token=TOKEN)
    admin = setup_admin(app)
    history = admin[HISTORY]
    history.interval = 0.05
    client = await aiohttp_client(app)
    assert len(history) >= 1  # the first sample is taken at startup
    for _ in range(3):
        await client.get("/page")
    await asyncio.sleep(0.2)
    assert len(history) >= 3
    data = history.as_json()
    totals = data["handlers"]["page"]["totals"]
    assert (totals["miss"], totals["hit"], totals["fills"]) == (1, 2, 1)
    assert totals["fill_ms"] >= 10
    assert [(name, fills) for name, fills, _ in cache.handler_fill_times()] == [("page", 1)]
    await client.close()
    running = [t for t in asyncio.all_tasks() if t.get_name() == "cachekit-stats-history"]
    assert running == []
    count = len(history)
    await asyncio.sleep(0.12)
    assert len(history) == count  # stopped with the application
