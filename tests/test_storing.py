"""`storing`: what a handler's response leaves in the store: headers kept, responses never
stored, raised HTTPExceptions, TTL precedence, ETags, learned Vary and its variants."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from cachekit import cached
from cachekit.backends.memory import MemoryStore
from cachekit.entry import body_etag
from tests.apps import make_app, make_store
from tests.test_conditional import etag_routes


def counted() -> tuple[web.RouteTableDef, Counter[str]]:
    return web.RouteTableDef(), Counter()


async def test_hop_by_hop_headers_are_not_stored(aiohttp_client) -> None:
    routes, _ = counted()

    @routes.get("/hop")
    @cached(ttl=30)
    async def hop(request: web.Request) -> web.Response:
        return web.Response(
            text="x",
            headers={
                "Connection": "X-Private-Hop",
                "X-Private-Hop": "1",
                "Keep-Alive": "5",
                "X-Kept": "yes",
            },
        )

    app, cache = make_app(routes)
    client = await aiohttp_client(app)
    await client.get("/hop")
    assert isinstance(cache.store, MemoryStore)
    (entry,) = [item[0] for item in cache.store._entries.values()]
    names = {name.lower() for name, _ in entry.headers}
    assert "x-kept" in names
    assert not names & {"connection", "x-private-hop", "keep-alive", "content-length"}


def never_stored_handlers(routes: web.RouteTableDef, tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("file")

    @routes.get("/status500")
    @cached(ttl=30)
    async def server_error(request: web.Request) -> web.Response:
        return web.Response(status=500, text="boom")

    @routes.get("/cookie-header")
    @cached(ttl=30)
    async def cookie_header(request: web.Request) -> web.Response:
        return web.Response(text="c", headers={"Set-Cookie": "session=secret"})

    @routes.get("/cookie-jar")
    @cached(ttl=30)
    async def cookie_jar(request: web.Request) -> web.Response:
        response = web.Response(text="c")
        response.set_cookie("session", "secret")
        return response

    @routes.get("/no-store")
    @cached(ttl=30)
    async def no_store(request: web.Request) -> web.Response:
        return web.Response(text="n", headers={"Cache-Control": "no-store"})

    @routes.get("/private")
    @cached(ttl=30)
    async def private(request: web.Request) -> web.Response:
        return web.Response(text="p", headers={"Cache-Control": "max-age=60, private"})

    @routes.get("/vary-star")
    @cached(ttl=30)
    async def vary_star(request: web.Request) -> web.Response:
        return web.Response(text="v", headers={"Vary": "*"})

    @routes.get("/stream")
    @cached(ttl=30)
    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"streamed")
        return response

    @routes.get("/file")
    @cached(ttl=30)
    async def file(request: web.Request) -> web.FileResponse:
        return web.FileResponse(tmp_path / "f.txt")

    @routes.get("/large")
    @cached(ttl=30)
    async def large(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 2048)


@pytest.mark.parametrize(
    ("path", "status", "reason"),
    [
        ("/status500", 500, "status"),
        ("/cookie-header", 200, "set-cookie"),
        ("/cookie-jar", 200, "set-cookie"),
        ("/no-store", 200, "no-store"),
        ("/private", 200, "private"),
        ("/vary-star", 200, "vary-star"),
        ("/stream", 200, None),
        ("/file", 200, "streaming"),
        ("/large", 200, "too-large"),
    ],
)
async def test_responses_that_are_never_stored(
    aiohttp_client, tmp_path: Path, path: str, status: int, reason: str | None
) -> None:
    routes, _ = counted()
    never_stored_handlers(routes, tmp_path)
    app, cache = make_app(routes, max_entry_bytes=1024)
    client = await aiohttp_client(app)
    for _ in range(2):
        response = await client.get(path)
        assert response.status == status
        await response.read()
        if reason is not None:  # a prepared stream cannot be labelled any more
            assert response.headers["X-Cache"] == "MISS"
            assert response.headers["Cache-Status"] == f"cachekit; fwd=miss; detail={reason}"
    assert cache.stats()["entries"] == 0
    assert cache.stats()["hits"] == 0


async def test_set_cookie_is_never_served_to_another_client(aiohttp_client) -> None:
    routes, calls = counted()

    @routes.get("/me")
    @cached(ttl=30)
    async def me(request: web.Request) -> web.Response:
        calls["me"] += 1
        response = web.json_response({"n": calls["me"]})
        response.set_cookie("session", f"user-{calls['me']}")
        return response

    client = await aiohttp_client(make_app(routes)[0])
    cookies = [(await client.get("/me")).cookies["session"].value for _ in range(3)]
    assert cookies == ["user-1", "user-2", "user-3"]


async def test_raised_http_exception_with_cacheable_status_is_stored(aiohttp_client) -> None:
    routes, calls = counted()

    @routes.get("/missing/{id}")
    @cached(ttl=30)
    async def missing(request: web.Request) -> web.Response:
        calls["missing"] += 1
        raise web.HTTPNotFound(text="no such thing", headers={"X-Why": "gone"})

    client = await aiohttp_client(make_app(routes)[0])
    first = await client.get("/missing/1")
    second = await client.get("/missing/1")
    assert (first.status, second.status) == (404, 404)
    assert await second.text() == "no such thing" and second.headers["X-Why"] == "gone"
    assert first.headers["X-Cache"] == "MISS" and second.headers["X-Cache"] == "HIT"
    assert calls["missing"] == 1


async def test_raised_server_error_is_not_stored(aiohttp_client) -> None:
    routes, calls = counted()

    @routes.get("/flaky")
    @cached(ttl=30)
    async def flaky(request: web.Request) -> web.Response:
        calls["flaky"] += 1
        raise web.HTTPServiceUnavailable()

    client = await aiohttp_client(make_app(routes)[0])
    for _ in range(2):
        assert (await client.get("/flaky")).status == 503
    assert calls["flaky"] == 2


async def test_ttl_precedence(aiohttp_client) -> None:
    routes, _ = counted()

    @routes.get("/declared")
    @cached()
    async def declared(request: web.Request) -> web.Response:
        return web.Response(text="d", headers={"Cache-Control": "max-age=50, s-maxage=70"})

    @routes.get("/decorated")
    @cached(ttl=20)
    async def decorated(request: web.Request) -> web.Response:
        return web.Response(text="d", headers={"Cache-Control": "max-age=50"})

    @routes.get("/overridden")
    @cached(ttl=20)
    async def overridden(request: web.Request) -> web.Response:
        return web.Response(text="o")

    @routes.get("/defaulted")
    @cached()
    async def defaulted(request: web.Request) -> web.Response:
        return web.Response(text="x")

    @routes.get("/zero")
    @cached(ttl=0)
    async def zero(request: web.Request) -> web.Response:
        return web.Response(text="z")

    app, cache = make_app(routes, default_ttl=11, ttls={"overridden": 99})
    client = await aiohttp_client(app)
    ttls = {}
    for path in ("/declared", "/decorated", "/overridden", "/defaulted", "/zero"):
        response = await client.get(path)
        ttls[path] = response.headers["Cache-Status"]
    assert isinstance(cache.store, MemoryStore)
    stored = {key.split(":")[0]: item[0].ttl for key, item in cache.store._entries.items()}
    assert stored == {"declared": 70, "decorated": 20, "overridden": 99, "defaulted": 11}
    assert ttls["/zero"] == "cachekit; fwd=miss; detail=ttl-zero"


async def test_entries_carry_a_deterministic_strong_etag(aiohttp_client: Any) -> None:
    calls: Counter[str] = Counter()
    client = await aiohttp_client(make_app(etag_routes(calls))[0])
    miss = await client.get("/doc")
    hit = await client.get("/doc")
    assert miss.headers["ETag"] == hit.headers["ETag"] == body_etag(b"document")
    assert hit.headers["ETag"].startswith('"') and not hit.headers["ETag"].startswith("W/")


async def test_vary_is_learned_from_responses(aiohttp_client: Any) -> None:
    routes = web.RouteTableDef()
    calls: Counter[str] = Counter()

    @routes.get("/greet")
    @cached(ttl=30)
    async def greet(request: web.Request) -> web.Response:
        language = request.headers.get("Accept-Language", "none")
        calls[language] += 1
        return web.Response(text=f"hello in {language}", headers={"Vary": "accept-language"})

    client = await aiohttp_client(make_app(routes)[0])
    texts = []
    for language in ["fr", "de", "fr", "de", " fr"]:
        response = await client.get("/greet", headers={"Accept-Language": language.strip()})
        texts.append(await response.text())
    assert texts == ["hello in fr", "hello in de"] * 2 + ["hello in fr"]
    assert calls == {"fr": 1, "de": 1}


async def test_learned_vary_reaches_other_processes_through_stubs(
    aiohttp_client: Any, real_redis_url: str
) -> None:
    routes = web.RouteTableDef()
    calls: Counter[str] = Counter()

    @routes.get("/greet")
    @cached(ttl=30)
    async def greet(request: web.Request) -> web.Response:
        language = request.headers.get("Accept-Language", "none")
        calls[language] += 1
        return web.Response(text=language, headers={"Vary": "Accept-Language"})

    one = await aiohttp_client(make_app(routes, store=make_store("redis", real_redis_url))[0])
    two = await aiohttp_client(make_app(routes, store=make_store("redis", real_redis_url))[0])

    def lang(value: str) -> dict[str, str]:  # one site behind a load balancer: one Host
        return {"Accept-Language": value, "Host": "shop.example"}

    assert await (await one.get("/greet", headers=lang("fr"))).text() == "fr"
    # The second app has not learned the Vary yet: the stub sends it to the right variant.
    hit = await two.get("/greet", headers=lang("fr"))
    assert hit.headers["X-Cache"] == "HIT" and await hit.text() == "fr"
    other = await two.get("/greet", headers=lang("de"))
    assert other.headers["X-Cache"] == "MISS" and await other.text() == "de"
    assert calls == {"fr": 1, "de": 1}


async def test_variants_per_url_are_capped(aiohttp_client: Any) -> None:
    routes = web.RouteTableDef()

    @routes.get("/v")
    @cached(ttl=30, vary=["X-Variant"])
    async def variant(request: web.Request) -> web.Response:
        return web.Response(text=request.headers["X-Variant"])

    app, cache = make_app(routes, max_variants=4)
    client = await aiohttp_client(app)
    statuses = []
    for n in range(10):
        response = await client.get("/v", headers={"X-Variant": str(n)})
        statuses.append(response.headers["Cache-Status"])
    assert statuses.count("cachekit; fwd=miss; stored") == 4
    assert cache.stats()["entries"] == 4


ETAG_OF_BODY = """
import sys
from cachekit.entry import body_etag
sys.stdout.write(body_etag(b"same body everywhere"))
"""


def test_etag_is_equal_across_processes() -> None:
    outputs = {
        subprocess.run(
            [sys.executable, "-c", ETAG_OF_BODY],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
            env={"PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2", "random")
    }
    assert outputs == {body_etag(b"same body everywhere")}
