"""@cached end to end on the embedded store: fidelity, methods, what is never stored, keys."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request
from yarl import URL

from cachekit import cached, get_cache
from cachekit.backends.memory import MemoryStore
from tests.apps import make_app

Client = TestClient[web.Request, web.Application]


def counted() -> tuple[web.RouteTableDef, Counter[str]]:
    return web.RouteTableDef(), Counter()


async def test_hit_replays_status_headers_and_exact_body(aiohttp_client) -> None:
    routes, calls = counted()
    body = bytes(range(256)) * 3

    @routes.get("/bin")
    @cached(ttl=30)
    async def binary(request: web.Request) -> web.Response:
        calls["bin"] += 1
        response = web.Response(
            body=body, status=203, content_type="application/x-thing", charset="latin-1"
        )
        response.headers.add("X-Multi", "one")
        response.headers.add("X-Other", "between")
        response.headers.add("X-Multi", "two")
        return response

    client = await aiohttp_client(make_app(routes)[0])
    first = await client.get("/bin")
    second = await client.get("/bin")
    assert calls["bin"] == 1
    assert first.headers["X-Cache"] == "MISS" and second.headers["X-Cache"] == "HIT"
    assert second.status == 203
    assert await second.read() == body
    assert second.headers["Content-Type"] == "application/x-thing; charset=latin-1"
    lines = [(k, v) for k, v in second.headers.items() if k.startswith("X-M") or k == "X-Other"]
    assert lines == [("X-Multi", "one"), ("X-Other", "between"), ("X-Multi", "two")]


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


async def test_age_and_cache_status_headers(aiohttp_client) -> None:
    routes, _ = counted()

    @routes.get("/a")
    @cached(ttl=42)
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="a")

    client = await aiohttp_client(make_app(routes)[0])
    miss = await client.get("/a")
    hit = await client.get("/a")
    assert miss.headers["Cache-Status"] == "cachekit; fwd=miss; stored"
    assert "Age" not in miss.headers
    assert hit.headers["Cache-Status"].startswith("cachekit; hit; ttl=4")
    assert hit.headers["Age"] == "0"


async def test_head_is_answered_from_the_get_entry(aiohttp_client) -> None:
    routes, calls = counted()

    @routes.get("/doc")
    @cached(ttl=30)
    async def doc(request: web.Request) -> web.Response:
        calls[request.method] += 1
        return web.Response(text="full body")

    client = await aiohttp_client(make_app(routes)[0])
    assert await (await client.get("/doc")).text() == "full body"
    head = await client.head("/doc")
    assert head.status == 200 and head.headers["X-Cache"] == "HIT"
    assert await head.read() == b""
    assert head.headers["Content-Length"] == str(len("full body"))
    assert calls == {"GET": 1}


async def test_head_miss_never_becomes_the_get_entry(aiohttp_client) -> None:
    routes, calls = counted()

    @routes.get("/lazy")
    @cached(ttl=30)
    async def lazy(request: web.Request) -> web.Response:
        calls[request.method] += 1
        return web.Response(text="" if request.method == "HEAD" else "the real body")

    client = await aiohttp_client(make_app(routes)[0])
    await client.head("/lazy")
    assert await (await client.get("/lazy")).text() == "the real body"


async def test_other_methods_go_to_the_handler(aiohttp_client) -> None:
    routes, calls = counted()

    @routes.route("*", "/any")
    @cached(ttl=30)
    async def anything(request: web.Request) -> web.Response:
        calls[request.method] += 1
        return web.Response(text=request.method)

    client = await aiohttp_client(make_app(routes)[0])
    for _ in range(2):
        response = await client.post("/any")
        assert response.headers["X-Cache"] == "BYPASS"
        assert response.headers["Cache-Status"] == "cachekit; fwd=bypass; detail=method"
    await client.put("/any")
    assert calls == {"POST": 2, "PUT": 1}


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


async def test_authorization_bypasses_unless_keyed(aiohttp_client) -> None:
    routes, calls = counted()

    @routes.get("/plain")
    @cached(ttl=30)
    async def plain(request: web.Request) -> web.Response:
        calls["plain"] += 1
        return web.Response(text=request.headers.get("Authorization", "anon"))

    @routes.get("/per-user")
    @cached(ttl=30, vary=["Authorization"])
    async def per_user(request: web.Request) -> web.Response:
        calls["per-user"] += 1
        return web.Response(text=request.headers.get("Authorization", "anon"))

    client = await aiohttp_client(make_app(routes)[0])
    await client.get("/plain")  # anonymous: stored
    alice = await client.get("/plain", headers={"Authorization": "Bearer alice"})
    assert await alice.text() == "Bearer alice"
    assert alice.headers["Cache-Status"] == "cachekit; fwd=bypass; detail=authorization"

    texts = [
        await (await client.get("/per-user", headers={"Authorization": who})).text()
        for who in ("Bearer alice", "Bearer bob", "Bearer alice", "Bearer bob")
    ]
    assert texts == ["Bearer alice", "Bearer bob", "Bearer alice", "Bearer bob"]
    assert calls["per-user"] == 2


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


async def test_hostile_query_and_path_input_never_share_a_key(aiohttp_client) -> None:
    routes, _ = counted()

    @routes.get("/echo/{tail:.*}")
    @cached(ttl=30)
    async def echo(request: web.Request) -> web.Response:
        # What the key promises to respect: the path and the query aiohttp parsed.
        return web.Response(text=repr((request.path, sorted(request.query.items()))))

    client = await aiohttp_client(make_app(routes)[0])
    paths = [
        "/echo/a?q=1&r=2",
        "/echo/a?q=1%26r%3D2",
        "/echo/a%3Fq=1&r=2",
        "/echo/a/b",
        "/echo/a%2Fb",
        "/echo/x?v=%FF",
        "/echo/x?v=%FE",
        "/echo/x?v=%7E",
        "/echo/x?v",
        "/echo/x?v=",
    ]
    fresh = {}
    for path in paths:
        url = URL(path, encoded=True)
        fresh[path] = repr((url.path, sorted(url.query.items())))
    for _ in range(2):
        for path in paths:
            response = await client.get(URL(path, encoded=True))
            assert await response.text() == fresh[path], path


async def test_query_order_is_canonical_but_repeats_keep_order(aiohttp_client) -> None:
    routes, calls = counted()

    @routes.get("/list")
    @cached(ttl=30)
    async def listing(request: web.Request) -> web.Response:
        calls["list"] += 1
        return web.Response(text=",".join(request.query.getall("t", [])))

    client = await aiohttp_client(make_app(routes)[0])
    await client.get("/list?a=1&t=x&t=y")
    assert (await client.get("/list?t=x&t=y&a=1")).headers["X-Cache"] == "HIT"
    reordered = await client.get("/list?t=y&t=x&a=1")
    assert reordered.headers["X-Cache"] == "MISS" and await reordered.text() == "y,x"


async def test_vary_headers_key_absent_apart_from_empty(aiohttp_client) -> None:
    routes, calls = counted()

    @routes.get("/lang")
    @cached(ttl=30, vary=["Accept-Language"])
    async def lang(request: web.Request) -> web.Response:
        calls["lang"] += 1
        return web.Response(text=repr(request.headers.get("Accept-Language")))

    client = await aiohttp_client(make_app(routes)[0])
    assert await (await client.get("/lang", skip_auto_headers=["Accept-Language"])).text() == "None"
    assert await (await client.get("/lang", headers={"Accept-Language": ""})).text() == "''"
    assert await (await client.get("/lang", headers={"Accept-Language": "fr"})).text() == "'fr'"
    assert await (await client.get("/lang", headers={"accept-language": "fr"})).text() == "'fr'"
    assert calls["lang"] == 3


async def test_key_template_callable_and_async_callable(aiohttp_client) -> None:
    routes, calls = counted()

    @routes.get("/t/{id}")
    @cached(ttl=30, key="item:{match_info[id]}")
    async def by_template(request: web.Request) -> web.Response:
        calls["t"] += 1
        return web.Response(text=request.match_info["id"])

    async def async_key(request: web.Request) -> str:
        return "page:" + request.query.get("page", "1")

    @routes.get("/pages")
    @cached(ttl=30, key=async_key)
    async def pages(request: web.Request) -> web.Response:
        calls["pages"] += 1
        return web.Response(text=request.query.get("page", "1"))

    app, cache = make_app(routes)
    client = await aiohttp_client(app)
    for path in ("/t/7", "/t/7?ignored=1", "/pages?page=2", "/pages?page=2&x=1", "/pages"):
        await client.get(path)
    assert calls == {"t": 1, "pages": 2}
    assert isinstance(cache.store, MemoryStore)
    assert set(cache.store._entries) == {"item:7", "page:2", "page:1"}


async def test_failing_key_callable_serves_uncached(aiohttp_client) -> None:
    routes, _ = counted()

    @routes.get("/k")
    @cached(ttl=30, key=lambda request: request.query["needed"])
    async def needs_param(request: web.Request) -> web.Response:
        return web.Response(text="fine")

    app, cache = make_app(routes)
    client = await aiohttp_client(app)
    response = await client.get("/k")
    assert response.status == 200 and response.headers["X-Cache"] == "BYPASS"
    assert cache.stats()["errors"] == 1


async def test_unless_bypasses(aiohttp_client) -> None:
    routes, calls = counted()

    @routes.get("/u")
    @cached(ttl=30, unless=lambda request: "fresh" in request.query)
    async def handler(request: web.Request) -> web.Response:
        calls["u"] += 1
        return web.Response(text="u")

    client = await aiohttp_client(make_app(routes)[0])
    await client.get("/u")
    await client.get("/u")
    bypassed = await client.get("/u?fresh")
    assert bypassed.headers["Cache-Status"] == "cachekit; fwd=bypass; detail=unless"
    assert calls["u"] == 2


async def test_disabled_runs_as_if_undecorated(aiohttp_client) -> None:
    routes, calls = counted()

    @routes.get("/d")
    @cached(ttl=30)
    async def handler(request: web.Request) -> web.Response:
        calls["d"] += 1
        return web.Response(text="d")

    client = await aiohttp_client(make_app(routes, enabled=False)[0])
    for _ in range(3):
        response = await client.get("/d")
        assert "X-Cache" not in response.headers and "Cache-Status" not in response.headers
    assert calls["d"] == 3


async def test_view_methods_are_cached_under_class_dot_method(aiohttp_client) -> None:
    calls: Counter[str] = Counter()

    class ProductView(web.View):
        @cached(ttl=30)
        async def get(self) -> web.Response:
            calls["get"] += 1
            return web.Response(text="view")

    app, cache = make_app(web.RouteTableDef())
    app.router.add_view("/view", ProductView)
    client = await aiohttp_client(app)
    await client.get("/view")
    assert (await client.get("/view")).headers["X-Cache"] == "HIT"
    assert calls["get"] == 1
    assert isinstance(cache.store, MemoryStore)
    assert next(iter(cache.store._entries)).startswith("ProductView.get:")


async def test_missing_setup_cache_is_a_clear_error() -> None:
    @cached(ttl=1)
    async def orphan(request: web.Request) -> web.Response:
        return web.Response(text="x")

    request = make_mocked_request("GET", "/", app=web.Application())
    with pytest.raises(RuntimeError, match=r"setup_cache\(app\)"):
        await orphan(request)


async def test_invalidate_tags_clear_and_stats(aiohttp_client) -> None:
    routes, calls = counted()

    @routes.get("/p/{id}")
    @cached(ttl=30, key="p:{match_info[id]}", tags=lambda r: ["products", f"p{r.match_info['id']}"])
    async def product(request: web.Request) -> web.Response:
        calls[request.match_info["id"]] += 1
        return web.json_response({"id": request.match_info["id"]})

    app, _ = make_app(routes)
    client = await aiohttp_client(app)
    for path in ("/p/1", "/p/2", "/p/1", "/p/2"):
        await client.get(path)
    cache = get_cache(app)
    assert await cache.invalidate_tags("p1") == 1
    await client.get("/p/1")
    await client.get("/p/2")
    assert calls == {"1": 2, "2": 1}
    assert await cache.invalidate("p:2") == 1
    await client.get("/p/2")
    await cache.clear()
    await client.get("/p/1")
    assert calls == {"1": 3, "2": 2}
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["stores"]) == (3, 5, 5)
    assert json.dumps(stats)  # plain data, ready for a stats endpoint


def test_decorator_arguments_are_validated_at_import_time() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    with pytest.raises(ValueError, match="ttl"):
        cached(ttl=-1)(handler)
    with pytest.raises(ValueError, match="unknown field"):
        cached(key="{nope}")(handler)
    with pytest.raises(ValueError, match="statuses"):
        cached(statuses=[99])(handler)
    with pytest.raises(TypeError, match="async"):
        cached()(lambda request: None)  # type: ignore[arg-type,return-value]
