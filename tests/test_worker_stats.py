"""Admin `/stats` across workers (cachekit/worker_stats.py, backends/worker_board.py): each
worker publishes its figures to Redis, `/stats` adds up every worker that reported lately,
a worker that stops drops out, a failing Redis never reaches requests, and what other
processes wrote is read as untrusted data. Two caches on one Redis stand for two workers
here; tests/test_gunicorn.py runs two real worker processes."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from aiohttp import web
from redis.crc import key_slot

from cachekit import Cache, cached, worker_stats
from cachekit.admin import setup_admin
from cachekit.backends.base import Store, StoreError, WorkerReport
from cachekit.backends.cluster import ClusterStore
from cachekit.backends.layout import KeyLayout
from cachekit.backends.redis import RedisStore
from cachekit.stats_history import StatsHistory
from cachekit.testing import assert_cache
from cachekit.worker_stats import (
    REPORTER,
    WorkerReporter,
    parse_report,
    summed,
    summed_fills,
    summed_handlers,
)
from tests.apps import NAMESPACE, make_app, settings

TOKEN = "k" * 40
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def routes() -> web.RouteTableDef:
    table = web.RouteTableDef()

    @table.get("/page")
    @cached(ttl=60)
    async def page(request: web.Request) -> web.Response:
        return web.Response(text="page")

    @table.get("/item/{id}")
    @cached(ttl=60)
    async def item(request: web.Request) -> web.Response:
        return web.Response(text=request.match_info["id"])

    return table


@pytest.fixture(params=["fakeredis", "redis"])
def shared(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Makes stores on one Redis (each store: one worker's connection to it)."""
    if request.param == "fakeredis":
        server = fakeredis.FakeServer()
        yield lambda: RedisStore(fakeredis.FakeAsyncRedis(server=server), NAMESPACE, 1.0)
    else:
        url = request.getfixturevalue("real_redis_url")
        yield lambda: RedisStore.from_url(url, NAMESPACE, 1.0)


async def worker(aiohttp_client: Any, store: Store) -> Any:
    app, _ = make_app(routes(), store=store, admin_token=TOKEN)
    setup_admin(app)
    return await aiohttp_client(app)


def reporter(client: Any) -> WorkerReporter:
    return client.app[REPORTER]


async def stats(client: Any) -> Any:
    answer = await client.get("/_cache/stats", headers=AUTH)
    assert answer.status == 200
    return await answer.json()


async def test_stats_add_up_every_worker(aiohttp_client: Any, shared: Any) -> None:
    one, two = await worker(aiohttp_client, shared()), await worker(aiohttp_client, shared())
    for path in ("/page", "/page", "/item/1"):
        await one.get(path)
    for path in ("/page", "/item/2", "/item/2", "/item/2"):
        await two.get(path)
    assert await reporter(two).publish()
    seen = await stats(one)
    assert seen["scope"] == "cluster"
    # Each test client has a host of its own (a key variant), so each fills its own entry.
    assert seen["handlers"] == {
        "item": {"results": {"hit": 2, "miss": 2}, "requests": 4},
        "page": {"results": {"hit": 1, "miss": 2}, "requests": 3},
    }
    assert seen["total"]["requests"] == 7 and seen["total"]["hits"] == 3
    assert seen["total"]["misses"] == 4 and seen["total"]["stores"] == 4
    ids = {reporter(one).worker.id, reporter(two).worker.id}
    assert {entry["id"] for entry in seen["workers"]} == ids
    by_id = {entry["id"]: entry for entry in seen["workers"]}
    assert by_id[reporter(one).worker.id]["this_process"] is True
    assert by_id[reporter(two).worker.id]["requests"] == 4
    # Today's fields: this process's counters and store facts.
    assert seen["process"]["hits"] == 1 and seen["process"]["store"] == "redis"
    assert seen["unreadable"] == 0 and seen["reporting"]["errors"] == 0


async def test_this_processs_figures_are_live_and_others_as_last_reported(
    aiohttp_client: Any, shared: Any
) -> None:
    one, two = await worker(aiohttp_client, shared()), await worker(aiohttp_client, shared())
    await reporter(two).publish()
    await one.get("/page")
    await two.get("/page")  # not yet reported by `two`
    assert (await stats(one))["handlers"]["page"]["requests"] == 1
    await reporter(two).publish()
    assert (await stats(one))["handlers"]["page"]["requests"] == 2


async def test_a_worker_that_stops_drops_out(aiohttp_client: Any, shared: Any) -> None:
    one = await worker(aiohttp_client, shared())
    two = await worker(aiohttp_client, shared())
    three = await worker(aiohttp_client, shared())
    await two.get("/page")
    await three.get("/page")
    reporter(three).keep = 0.3  # a worker that stalls: its report expires
    for each in (two, three):
        await reporter(each).publish()
    assert len((await stats(one))["workers"]) == 3
    await two.close()  # a clean stop withdraws at once
    await asyncio.sleep(0.4)
    seen = await stats(one)
    assert [entry["id"] for entry in seen["workers"]] == [reporter(one).worker.id]
    assert "page" not in seen["handlers"]


async def test_a_failing_redis_never_reaches_requests(
    aiohttp_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = fakeredis.FakeServer()
    client = await worker(
        aiohttp_client, RedisStore(fakeredis.FakeAsyncRedis(server=server), NAMESPACE, 0.2)
    )
    assert_cache(await client.get("/page"), "MISS")
    server.connected = False
    with caplog.at_level(logging.WARNING, "cachekit"):
        assert not await reporter(client).publish()
        assert not await reporter(client).publish()
    published = [r for r in caplog.records if "could not publish" in r.getMessage()]
    assert len(published) == 1, "rate-limited"
    assert reporter(client).errors == 2
    # Requests go on as the store allows; /stats answers this process's figures.
    assert (await client.get("/page")).status == 200
    seen = await stats(client)
    assert seen["scope"] == "process" and seen["error"].startswith("the cache store did not")
    assert seen["handlers"]["page"]["requests"] == 2 and seen["reporting"]["errors"] == 2
    server.connected = True
    assert await reporter(client).publish()


async def test_reports_that_are_not_cachekits_are_left_out(
    aiohttp_client: Any, shared: Any
) -> None:
    store = shared()
    one = await worker(aiohttp_client, store)
    await one.get("/page")
    forged = {"pid": 1, "host": "x", "started": 0, "counters": {"hits": -5}, "handlers": {}}
    layout = KeyLayout(NAMESPACE)
    for name, data in (("garbage", b"\xff{"), ("negative", json.dumps(forged).encode())):
        await store.client.set(layout.worker_key(name), data)
        await store.client.zadd(layout.workers_key, {name: 1})
    seen = await stats(one)
    assert seen["unreadable"] == 2 and len(seen["workers"]) == 1
    assert seen["handlers"]["page"]["requests"] == 1 and seen["total"]["hits"] == 0


async def test_on_the_embedded_store_only_this_process(aiohttp_client: Any) -> None:
    app, _ = make_app(routes(), admin_token=TOKEN)
    setup_admin(app)
    client = await aiohttp_client(app)
    await client.get("/page")
    await client.get("/page")
    seen = await stats(client)
    assert REPORTER not in client.app
    assert seen["scope"] == "process" and "reporting" not in seen
    assert [entry["this_process"] for entry in seen["workers"]] == [True]
    assert seen["handlers"] == {"page": {"results": {"hit": 1, "miss": 1}, "requests": 2}}
    assert seen["total"]["hits"] == 1 and seen["total"]["requests"] == 2


async def test_no_reports_when_counters_are_not_published(aiohttp_client: Any) -> None:
    store = RedisStore(fakeredis.FakeAsyncRedis(), NAMESPACE, 1.0)
    app, _ = make_app(routes(), store=store, stats_interval=0)
    await aiohttp_client(app)
    assert REPORTER not in app


async def test_the_reporter_publishes_every_interval_and_withdraws(aiohttp_client: Any) -> None:
    store = RedisStore(fakeredis.FakeAsyncRedis(), NAMESPACE, 1.0)
    client = await worker(aiohttp_client, store)
    assert len(await store.worker_reports(10)) == 1, "published when the app started"
    before = reporter(client).published
    await asyncio.sleep(1.3)
    assert reporter(client).published > before
    await client.close()
    assert await store.worker_reports(10) == []


async def test_on_a_cluster_a_report_and_its_index_share_a_slot(cluster_url: str) -> None:
    layout = KeyLayout(NAMESPACE)
    assert key_slot(layout.workers_key.encode()) == key_slot(layout.worker_key("a:1").encode())
    store = ClusterStore.from_url(cluster_url, NAMESPACE, 2.0)
    try:
        await store.publish_worker("a:1", b"{}", 5, 10)
        await store.publish_worker("b:2", b"[]", 5, 10)
        reports = await store.worker_reports(10)
        assert {(r.worker, r.data) for r in reports} == {("a:1", b"{}"), ("b:2", b"[]")}
        await store.withdraw_worker("a:1")
        assert [r.worker for r in await store.worker_reports(10)] == ["b:2"]
    finally:
        await store.close()


async def test_the_index_keeps_the_latest_workers_only() -> None:
    store = RedisStore(fakeredis.FakeAsyncRedis(), NAMESPACE, 1.0)
    for n in range(5):
        await store.publish_worker(f"w{n}", b"{}", 5, 3)
        await asyncio.sleep(0.002)  # distinct scores
    assert [r.worker for r in await store.worker_reports(10)] == ["w4", "w3", "w2"]


VALID = {"pid": 7, "host": "h", "started": 1.5, "counters": {"hits": 1}, "handlers": {}}


@pytest.mark.parametrize(
    ("data", "readable"),
    [
        (VALID, True),
        ({**VALID, "handlers": {"page": {"hit": 3, "bypass:unless": 1}}}, True),
        ({**VALID, "handlers": {"page": {"hit": -1}}}, False),
        ({**VALID, "handlers": {"page": {"hit": True}}}, False),
        ({**VALID, "handlers": {"page": {"hit": 1.5}}}, False),
        ({**VALID, "handlers": {"page": []}}, False),
        ({**VALID, "counters": {"hits": "1"}}, False),
        ({**VALID, "pid": "7"}, False),
        ({k: v for k, v in VALID.items() if k != "host"}, False),
        ([VALID], False),
        ("not json", False),
        ({**VALID, "host": "x" * (1 << 20)}, False),  # too large
        ({**VALID, "fills": {"page": [2, 0.25]}}, True),
        ({**VALID, "fills": {"page": [2, 0]}}, True),
        ({**VALID, "fills": {"page": [-1, 0.25]}}, False),
        ({**VALID, "fills": {"page": [2, -0.5]}}, False),
        ({**VALID, "fills": {"page": [2, "0.5"]}}, False),
        ({**VALID, "fills": {"page": [2, 0.5, 1]}}, False),
        ({**VALID, "fills": {"page": {"count": 2}}}, False),
        ({**VALID, "fills": [["page", 2, 0.5]]}, False),
    ],
)
def test_which_reports_are_read(data: Any, readable: bool) -> None:
    raw = b"{not json" if data == "not json" else json.dumps(data).encode()
    assert (parse_report(raw) is not None) is readable


def test_figures_are_summed_per_handler_and_result() -> None:
    one = {"counters": {"hits": 1, "misses": 2}, "handlers": {"a": {"hit": 1, "miss": 2}}}
    two = {"counters": {"hits": 3}, "handlers": {"a": {"hit": 3}, "b": {"bypass:unless": 1}}}
    handlers, total = summed([one, two])
    assert handlers == {
        "a": {"results": {"hit": 4, "miss": 2}, "requests": 6},
        "b": {"results": {"bypass:unless": 1}, "requests": 1},
    }
    assert total == {"hits": 4, "misses": 2, "requests": 7}


def test_a_report_without_fills_still_reads() -> None:
    """Reports of versions before fills were reported: no fills, summed as none."""
    parsed = parse_report(json.dumps(VALID).encode())
    assert parsed is not None and parsed["fills"] == {}
    one = {**VALID, "fills": {"a": [2, 0.5]}}
    two = {**VALID, "fills": {"a": [1, 0.25], "b": [3, 0.75]}}
    assert summed_fills([one, two, parsed]) == [("a", 3, 0.75), ("b", 3, 0.75)]


async def history(client: Any) -> Any:
    answer = await client.get("/_cache/history", headers=AUTH)
    assert answer.status == 200
    return await answer.json()


async def test_the_dashboard_history_adds_up_every_worker(
    aiohttp_client: Any, shared: Any
) -> None:
    one, two = await worker(aiohttp_client, shared()), await worker(aiohttp_client, shared())
    for path in ("/page", "/page", "/item/1"):
        await one.get(path)
    for path in ("/page", "/item/2", "/item/2", "/item/2"):
        await two.get(path)
    assert await reporter(two).publish()
    data = await history(one)
    assert (data["scope"], data["workers"]) == ("cluster", 2)
    page, item = data["handlers"]["page"], data["handlers"]["item"]
    assert (page["totals"]["requests"], page["totals"]["miss"], page["totals"]["hit"]) == (3, 2, 1)
    assert (item["totals"]["requests"], item["totals"]["fills"]) == (4, 2)
    assert item["totals"]["fill_ms"] is not None
    # The sampler took its first snapshot at startup: the traffic since is in the series.
    assert sum(page["requests"]) == 3 and sum(item["requests"]) == 4
    page_html = await (await one.get("/_cache/", headers=AUTH)).text()
    assert "all 2 workers" in page_html and 'id="requests">7<' in page_html


async def test_the_history_of_a_worker_whose_redis_fails_is_its_own(
    aiohttp_client: Any,
) -> None:
    server = fakeredis.FakeServer()
    one = await worker(
        aiohttp_client, RedisStore(fakeredis.FakeAsyncRedis(server=server), NAMESPACE, 0.2)
    )
    two = await worker(
        aiohttp_client, RedisStore(fakeredis.FakeAsyncRedis(server=server), NAMESPACE, 0.2)
    )
    await one.get("/page")
    for _ in range(3):
        await two.get("/page")
    assert await reporter(two).publish()
    assert (await history(one))["handlers"]["page"]["totals"]["requests"] == 4
    server.connected = False
    data = await history(one)
    assert (data["scope"], data["workers"]) == ("process", 1)
    assert data["handlers"]["page"]["totals"]["requests"] == 1
    tally = await summed_handlers(reporter(one).cache, reporter(one))
    assert tally.scope == "process" and tally.workers == 1
    assert tally.handler_results() == [("page", {("hit", ""): 0, ("miss", ""): 1})]
    page_html = await (await one.get("/_cache/", headers=AUTH)).text()
    assert "Figures of this worker" in page_html


async def test_a_sampled_history_spans_workers_and_never_goes_below_zero(
    aiohttp_client: Any, shared: Any
) -> None:
    """Samples across workers; when a worker leaves, the sums fall: that interval is 0."""
    one, two = await worker(aiohttp_client, shared()), await worker(aiohttp_client, shared())
    cache = reporter(one).cache
    sampled = StatsHistory(
        cache, tally=lambda: summed_handlers(cache, reporter(one)), interval=0.001
    )
    sampled.sample(await sampled.snapshot())
    for _ in range(5):
        await two.get("/page")
    await one.get("/page")
    await reporter(two).publish()
    sampled.sample(await sampled.snapshot())
    await two.close()  # withdraws its report: the sum falls from 6 to 1
    await one.get("/page")
    data = await sampled.current()
    assert data["scope"] == "cluster" and data["workers"] == 1
    assert data["handlers"]["page"]["requests"] == [6, 0]
    assert data["handlers"]["page"]["totals"]["requests"] == 2


async def test_a_shared_store_without_worker_reports_answers_this_process(
    aiohttp_client: Any,
) -> None:
    """`SharedWorkers` is optional: a third-party store without it still serves `/stats`."""
    from tests.test_store_protocol import DictStore  # noqa: PLC0415

    client = await worker(aiohttp_client, DictStore())
    await client.get("/page")
    seen = await stats(client)
    assert REPORTER not in client.app and seen["scope"] == "process"
    assert seen["handlers"]["page"]["requests"] == 1


class SwallowingBoard:
    """A store whose client turns a cancellation mid-command into an error of its own
    (redis-py may), and whose publications never finish otherwise."""

    def __init__(self) -> None:
        self.withdrawn: list[str] = []
        self.swallowed = 0

    async def publish_worker(self, worker: str, report: bytes, keep: float, most: int) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            if self.swallowed:
                raise
            self.swallowed += 1
            raise StoreError("connection closed") from None

    async def withdraw_worker(self, worker: str) -> None:
        self.withdrawn.append(worker)

    async def worker_reports(self, most: int) -> list[WorkerReport]:
        return []


async def test_stopping_never_waits_on_a_client_that_swallows_the_cancellation() -> None:
    board = SwallowingBoard()
    reporter = WorkerReporter(Cache(settings()), board)
    running = reporter.running(web.Application())
    await running.__anext__()
    await asyncio.sleep(0.01)  # the first publication is in flight
    started = asyncio.get_running_loop().time()
    with pytest.raises(StopAsyncIteration):
        await running.__anext__()
    assert asyncio.get_running_loop().time() - started < 0.5
    assert board.withdrawn == [reporter.worker.id] and board.swallowed == 1
    assert reporter.errors == 0


async def test_the_worker_is_the_process_that_serves(
    aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An app built before a fork (gunicorn --preload) reports as each serving process."""
    store = RedisStore(fakeredis.FakeAsyncRedis(), NAMESPACE, 1.0)
    app, _ = make_app(routes(), store=store)
    built_by = app[REPORTER].worker
    monkeypatch.setattr(worker_stats.os, "getpid", lambda: built_by.pid + 1)  # "forked"
    await aiohttp_client(app)
    serving = app[REPORTER].worker
    assert serving.pid == built_by.pid + 1 and serving.id != built_by.id
    assert [report.worker for report in await store.worker_reports(10)] == [serving.id]
