"""OpenTelemetry spans (`cachekit.tracing`), recorded with the SDK's in-memory exporter:
`cachekit.lookup`, `cachekit.fill`, `cachekit.revalidate`, their attributes, and nothing
at all when no tracer provider is set."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from aiohttp import web

from cachekit import cached, not_modified, tracing
from cachekit.testing import CacheClock
from tests.apps import make_app, make_store
from tests.redis_servers import free_port

sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
export = pytest.importorskip("opentelemetry.sdk.trace.export")
in_memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Any:
    exporter = in_memory.InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "provider", lambda: provider)
    return exporter


def routes_for(calls: list[str]) -> web.RouteTableDef:
    routes = web.RouteTableDef()

    @routes.get("/users/{secret}")
    @cached(ttl=10)
    async def profile(request: web.Request) -> web.Response:
        calls.append(request.match_info["secret"])
        return not_modified(request, etag="v") or web.Response(
            text="profile", headers={"ETag": '"v"'}
        )

    return routes


def finished(spans: Any) -> list[tuple[str, dict[str, Any]]]:
    return [(span.name, dict(span.attributes)) for span in spans.get_finished_spans()]


async def test_a_miss_then_a_hit_on_redis(
    spans: Any, aiohttp_client: Any, real_redis_url: str
) -> None:
    calls: list[str] = []
    app, _ = make_app(routes_for(calls), store=make_store("redis", real_redis_url))
    client = await aiohttp_client(app)
    await client.get("/users/alice@example.com")
    miss = finished(spans)
    # The story's lookup, then the fill's own (made once it holds the lock) inside it.
    assert [name for name, _ in miss] == ["cachekit.lookup", "cachekit.lookup", "cachekit.fill"]
    recorded = spans.get_finished_spans()
    assert recorded[1].parent is not None
    assert recorded[1].parent.span_id == recorded[2].context.span_id
    lookup, fill = miss[0][1], miss[2][1]
    assert lookup["cachekit.handler"] == "profile" and lookup["cachekit.found"] is False
    assert lookup["cachekit.store_error"] is False
    assert fill["cachekit.status"] == "fwd=miss; stored" and fill["cachekit.x_cache"] == "MISS"
    assert re.fullmatch("[0-9a-f]{16}", fill["cachekit.key_hash"])
    # The key holds user data: it is never an attribute value.
    assert not any("alice" in str(value) for _, attrs in miss for value in attrs.values())
    spans.clear()
    await client.get("/users/alice@example.com")
    (hit,) = finished(spans)
    assert hit[0] == "cachekit.lookup" and hit[1]["cachekit.found"] is True


async def test_a_revalidation_is_a_span_inside_the_fill(
    spans: Any, aiohttp_client: Any, cache_clock: CacheClock
) -> None:
    client = await aiohttp_client(make_app(routes_for([]))[0])
    await client.get("/users/bob")
    spans.clear()
    cache_clock.advance(11)
    await client.get("/users/bob")
    recorded = {span.name: span for span in spans.get_finished_spans()}
    assert set(recorded) == {"cachekit.fill", "cachekit.revalidate"}
    revalidate, fill = recorded["cachekit.revalidate"], recorded["cachekit.fill"]
    assert revalidate.attributes["cachekit.fwd_status"] == 304
    assert revalidate.parent is not None and revalidate.parent.span_id == fill.context.span_id
    assert fill.attributes["cachekit.x_cache"] == "REVALIDATED"


async def test_hits_without_io_have_no_span(spans: Any, aiohttp_client: Any) -> None:
    client = await aiohttp_client(make_app(routes_for([]))[0])
    await client.get("/users/carol")
    spans.clear()
    for _ in range(3):
        await client.get("/users/carol")
    assert finished(spans) == []


async def test_a_store_error_is_on_the_lookup_span(spans: Any, aiohttp_client: Any) -> None:
    store = make_store("redis", f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    client = await aiohttp_client(make_app(routes_for([]), store=store)[0])
    assert (await client.get("/users/dave")).status == 200
    lookups = [attrs for name, attrs in finished(spans) if name == "cachekit.lookup"]
    assert lookups and lookups[0]["cachekit.store_error"] is True


async def test_a_lock_wait_is_an_event_on_the_waiting_fill(
    spans: Any, aiohttp_client: Any, real_redis_url: str
) -> None:
    gate = asyncio.Event()
    routes = web.RouteTableDef()

    @routes.get("/slow")
    @cached(ttl=10)
    async def slow(request: web.Request) -> web.Response:
        await gate.wait()
        return web.Response(text="slow")

    one, two = [
        await aiohttp_client(make_app(routes, store=make_store("redis", real_redis_url))[0])
        for _ in range(2)
    ]
    host = {"Host": "shop.example"}
    first = asyncio.ensure_future(one.get("/slow", headers=host))
    await asyncio.sleep(0.1)
    second = asyncio.ensure_future(two.get("/slow", headers=host))
    await asyncio.sleep(0.1)
    gate.set()
    await asyncio.gather(first, second)
    events = [
        event.name
        for span in spans.get_finished_spans()
        if span.name == "cachekit.fill"
        for event in span.events
    ]
    assert events == ["cachekit.lock_wait"]


async def test_nothing_without_a_tracer_provider(aiohttp_client: Any) -> None:
    assert tracing.tracer() is None  # the API's default proxy: nothing traces
    client = await aiohttp_client(make_app(routes_for([]))[0])
    assert (await client.get("/users/erin")).status == 200


def test_key_hashes_are_stable_and_short() -> None:
    assert tracing.key_hash("k") == tracing.key_hash("k") != tracing.key_hash("K")
    assert len(tracing.key_hash("x" * 10_000)) == 16


def test_the_provider_is_asked_at_most_once_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[int] = []

    def counting() -> Any:
        asked.append(1)
        return sdk_trace.TracerProvider()

    monkeypatch.setattr(tracing, "provider", counting)
    first = tracing.tracer()
    assert first is not None
    assert all(tracing.tracer() is first for _ in range(100))
    assert len(asked) == 1  # every lookup would otherwise ask the API
    monkeypatch.setattr(tracing, "_answer", [counting, first, 0.0])  # a second later
    assert tracing.tracer() is not None and len(asked) == 2
    monkeypatch.setattr(tracing, "provider", None)
    assert tracing.tracer() is None
