"""Prometheus metrics (`cachekit.metrics`, setting `metrics_path`): requests by handler
and result, fill and store durations, store errors, purges, the breaker and the embedded
store's size, read back through the exposition the app serves. (Several workers in
prometheus-client's multiprocess mode: tests/test_gunicorn.py.)"""

from __future__ import annotations

import asyncio
import importlib
import itertools
from typing import Any

import pytest
from aiohttp import web

from cachekit import SettingsError, cached, get_cache, metrics, not_modified
from cachekit import cache as cache_module
from cachekit.testing import CacheClock
from tests.apps import make_app, make_store
from tests.redis_servers import free_port

parser = pytest.importorskip("prometheus_client.parser")
_names = itertools.count()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in parser.text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(client: Any) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    answer = await client.get("/metrics")
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("text/plain; version=")
    return samples(await answer.text())


def requests(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], handler: str
) -> dict[tuple[str, str], float]:
    return {
        (labels["result"], labels["reason"]): value
        for (name, frozen), value in found.items()
        if name == "cachekit_requests_total"
        for labels in [dict(frozen)]
        if labels["handler"] == handler
    }


def doc_routes(name: str, gate: asyncio.Event | None = None) -> web.RouteTableDef:
    routes = web.RouteTableDef()

    @routes.get("/doc")
    @cached(ttl=10, stale_ttl=5, name=name)
    async def doc(request: web.Request) -> web.Response:
        if gate is not None:
            await gate.wait()
        return not_modified(request, etag="v") or web.Response(text="doc", headers={"ETag": '"v"'})

    return routes


async def test_requests_by_handler_and_result(cache_clock: CacheClock, aiohttp_client: Any) -> None:
    name = f"metrics_doc_{next(_names)}"
    gate = asyncio.Event()
    client = await aiohttp_client(make_app(doc_routes(name, gate), metrics_path="/metrics")[0])
    first = asyncio.ensure_future(client.get("/doc"))
    await asyncio.sleep(0.05)
    joined = asyncio.ensure_future(client.get("/doc"))
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.gather(first, joined)
    for _ in range(3):
        await client.get("/doc")
    await client.get("/doc", headers={"Authorization": "Bearer x"})
    await client.get("/doc", headers={"Cache-Control": "no-store"})  # not honoured: a hit
    cache_clock.advance(11)
    await client.get("/doc")  # stale, refreshed in the background (revalidated)
    for _ in range(100):  # until the refresh has stored the entry again
        if not get_cache(client.app).tasks_running()["refreshes"]:
            break
        await asyncio.sleep(0.01)
    cache_clock.advance(16)
    await client.get("/doc")  # past the stale window: revalidated by the fill
    found = requests(await scrape(client), name)
    assert found == {
        ("miss", ""): 1,
        ("collapsed", ""): 1,
        ("hit", ""): 4,
        ("bypass", "authorization"): 1,
        ("stale", ""): 1,
        ("revalidated", ""): 1,
    }


async def test_durations_purges_and_sizes(aiohttp_client: Any) -> None:
    name = f"metrics_doc_{next(_names)}"
    app, cache = make_app(doc_routes(name), metrics_path="/metrics", store=make_store("fakeredis"))
    client = await aiohttp_client(app)
    before = await scrape(client)
    for _ in range(cache_module.LOOKUP_SAMPLE + 1):  # one lookup in LOOKUP_SAMPLE is timed
        await client.get("/doc")
    await get_cache(app).invalidate_tags("t")
    after = await scrape(client)

    def grew(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert grew("cachekit_fill_duration_seconds_count", handler=name) == 1
    assert grew("cachekit_store_duration_seconds_count", operation="lookup") >= 1
    assert grew("cachekit_store_duration_seconds_count", operation="store") >= 1
    assert grew("cachekit_store_duration_seconds_count", operation="lock") >= 1
    assert grew("cachekit_store_duration_seconds_count", operation="purge") == 1
    assert grew("cachekit_purges_total", kind="tag") == 1
    del cache


async def test_the_embedded_store_size_and_the_breaker(aiohttp_client: Any) -> None:
    name = f"metrics_doc_{next(_names)}"
    client = await aiohttp_client(make_app(doc_routes(name), metrics_path="/metrics")[0])
    await client.get("/doc")
    found = await scrape(client)
    assert found[("cachekit_entries", frozenset({("store", "memory")}))] >= 1
    assert found[("cachekit_memory_bytes", frozenset({("store", "memory")}))] > 0
    down = make_store("redis", f"redis://127.0.0.1:{free_port()}/0", timeout=0.1)
    broken, _ = make_app(
        doc_routes(f"metrics_doc_{next(_names)}"),
        store=down,
        metrics_path="/metrics",
        failure_threshold=1,
    )
    other = await aiohttp_client(broken)
    await other.get("/doc")
    found = await scrape(other)
    assert found[("cachekit_breaker_open", frozenset())] == 1
    assert found[("cachekit_store_errors_total", frozenset({("operation", "lookup")}))] >= 1


def test_without_prometheus_client_setup_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.import_module

    def without(name: str, *args: Any) -> Any:
        if name == "prometheus_client":
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(metrics, "_instance", None)
    monkeypatch.setattr(metrics.importlib, "import_module", without)
    with pytest.raises(SettingsError, match=r"CACHEKIT_METRICS_PATH.*cachekit\[prometheus\]"):
        make_app(web.RouteTableDef(), metrics_path="/metrics")


def test_no_metrics_route_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    app, cache = make_app(web.RouteTableDef())
    assert cache.metrics is None
    assert not [r for r in app.router.resources() if r.canonical == "/metrics"]
