"""The hot path's shortcuts: they must answer exactly what the plain code path answers.

(The response and memo shortcuts are tested beside their modules: test_aiohttp_internals*.py,
test_responses.py, test_entry_memos.py, test_memo.py.)
"""

from __future__ import annotations

import asyncio
import tracemalloc
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request

from cachekit import cached, keys
from tests.apps import make_app, make_store

Client = TestClient[web.Request, web.Application]


# ---------------------------------------------------------------- keys keep nothing


def test_keys_keep_nothing_of_client_input() -> None:
    """Key building memoises nothing: a flood of unique long targets and hosts leaves no
    memory behind (it once held up to 4,096 inputs of 512 characters per memo)."""
    long_tail = "a" * 8000

    def one_key(n: int, tail: str) -> None:
        request = make_mocked_request(
            "GET", f"/{tail}{n}?q={tail}", headers={"Host": f"{tail}{n}.example"}
        )
        keys.request_key(keys.default_key("h", request.rel_url), request, ("host",), 250)

    tracemalloc.start()
    try:
        for n in range(600):
            one_key(n, long_tail if n % 2 else "")
        # What is still alive of what keys.py allocated (yarl's own bounded caches of
        # parsed URLs are yarl's, and aiohttp fills them whether or not we cache).
        kept = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, keys.__file__)])
    finally:
        tracemalloc.stop()
    assert sum(stat.size for stat in kept.statistics("filename")) < 4 << 10


# ---------------------------------------------------------------- the unsafe-method receiver


def _receivers(app: web.Application) -> int:
    return len(app.on_response_prepare)


async def test_a_read_only_app_pays_no_response_signal(aiohttp_client) -> None:
    routes = web.RouteTableDef()

    @routes.get("/r")
    @cached(ttl=60)
    async def read(request: web.Request) -> web.Response:
        return web.Response(text="r")

    app, _ = make_app(routes)
    assert _receivers(app) == 1
    await aiohttp_client(app)
    assert _receivers(app) == 0


@pytest.mark.parametrize("kind", ["post-route", "any-method", "middleware", "sub-app"])
async def test_an_app_that_can_answer_unsafe_methods_keeps_the_receiver(
    aiohttp_client, kind: str
) -> None:
    routes = web.RouteTableDef()

    @routes.get("/r")
    @cached(ttl=60)
    async def read(request: web.Request) -> web.Response:
        return web.Response(text="r")

    async def write(request: web.Request) -> web.Response:
        return web.Response(text="w")

    app, _ = make_app(routes)
    if kind == "post-route":
        app.router.add_post("/w", write)
    elif kind == "any-method":
        app.router.add_route("*", "/w", write)
    elif kind == "middleware":

        @web.middleware
        async def passthrough(request: web.Request, handler: Any) -> web.StreamResponse:
            return await handler(request)

        app.middlewares.append(passthrough)
    else:
        sub = web.Application()
        sub.router.add_get("/s", write)
        app.add_subapp("/sub", sub)
    await aiohttp_client(app)
    assert _receivers(app) == 1


async def test_invalidation_still_works_after_the_startup_check(aiohttp_client) -> None:
    routes = web.RouteTableDef()
    calls = {"n": 0}

    @routes.get("/item")
    @cached(ttl=60)
    async def item(request: web.Request) -> web.Response:
        calls["n"] += 1
        return web.Response(text=str(calls["n"]))

    @routes.post("/item")
    async def update(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app, _ = make_app(routes)
    client: Client = await aiohttp_client(app)
    assert await (await client.get("/item")).text() == "1"
    assert await (await client.get("/item")).text() == "1"
    assert (await client.post("/item")).status == 200
    assert await (await client.get("/item")).text() == "2"


# ---------------------------------------------------------------- compiled key templates


@pytest.mark.parametrize(
    "template",
    [
        "p:{match_info[id]}",
        "{match_info[id]}",
        "{match_info[id]}:end",
        "x:{match_info[id]}:y",
        "p:{query[page]}",
        "p:{match_info[id]}:{query[page]}",
        "fixed",
    ],
)
@pytest.mark.parametrize("value", ["7", "a b/%", "", "é" * 600, None])
def test_compiled_templates_render_what_render_renders(template: str, value: str | None) -> None:
    match_info = {} if value is None else {"id": value}
    request = make_mocked_request("GET", "/p?page=2&page=3", match_info=match_info)
    compiled = keys.KeyTemplate(template).compiled()
    assert compiled(request) == keys.KeyTemplate(template).render(request)


# ---------------------------------------------------------------- Redis: one lookup per request


@pytest.mark.parametrize("kind", ["fakeredis", "redis"])
async def test_a_plain_redis_request_looks_the_store_up_once(
    aiohttp_client, request: pytest.FixtureRequest, kind: str
) -> None:
    # `fresh_hit` computes the key and `request_handler` makes the lookup; a request that is
    # not a fresh hit continues in `serve` with that lookup, without a second one.
    routes = web.RouteTableDef()
    calls = [0]

    @routes.get("/items/{n}")
    @cached(ttl=0.4, stale_ttl=30, key="items:{match_info[n]}")
    async def item(request: web.Request) -> web.Response:
        calls[0] += 1
        return web.json_response({"n": request.match_info["n"], "call": calls[0]})

    url = request.getfixturevalue("real_redis_url") if kind == "redis" else None
    store = make_store(kind, url)
    app, cache = make_app(routes, store=store)
    client: Client = await aiohttp_client(app)

    async def looked_up_keys(path: str) -> tuple[str, int]:
        before = cache.stats()["lookup_keys"]
        response = await client.get(path)
        assert response.status == 200
        return response.headers["X-Cache"], cache.stats()["lookup_keys"] - before

    # A miss: the request's lookup, then the fill's re-check once it holds the fill lock.
    assert await looked_up_keys("/items/1") == ("MISS", 2)
    assert await looked_up_keys("/items/1") == ("HIT", 1)
    assert (await client.get("/items/1", headers={"If-None-Match": '"x"'})).status == 200
    await asyncio.sleep(0.45)
    assert await looked_up_keys("/items/1") == ("STALE", 1)  # then one refresh runs
    for _ in range(100):
        if calls[0] == 2:
            break
        await asyncio.sleep(0.01)
    assert calls[0] == 2
    assert cache.stats()["hits"] == 2 and cache.stats()["stale_hits"] == 1
