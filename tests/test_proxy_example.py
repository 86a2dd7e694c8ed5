"""The caching reverse proxy example (`python -m demo_app.proxy ORIGIN`): one catch-all
cached handler in front of an origin on a loopback port, freshness only from the origin."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from yarl import URL

from cachekit import CacheSettings, not_modified
from cachekit.testing import CacheClock, assert_cache
from demo_app.config import ConfigError
from demo_app.proxy import create_proxy_app, parse_origin
from tests.redis_servers import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent


def origin_app(hits: Counter[str], seen: list[dict[str, str]]) -> web.Application:
    routes = web.RouteTableDef()
    state = {"version": "v1"}

    @routes.get("/fresh")
    async def fresh(request: web.Request) -> web.Response:
        hits["fresh"] += 1
        return web.Response(text="fresh", headers={"Cache-Control": "max-age=60"})

    @routes.get("/plain")
    async def plain(request: web.Request) -> web.Response:
        hits["plain"] += 1
        return web.Response(text="plain")

    @routes.get("/checked")
    async def checked(request: web.Request) -> web.Response:
        hits["checked"] += 1
        seen.append({k: v for k, v in request.headers.items() if k.lower().startswith("if-")})
        headers = {"Cache-Control": "no-cache", "ETag": f'"{state["version"]}"'}
        unchanged = not_modified(request, etag=state["version"])
        if unchanged is not None:
            unchanged.headers.update(headers)
            return unchanged
        return web.Response(text=f"checked {state['version']}", headers=headers)

    @routes.get("/file")
    async def file(request: web.Request) -> web.Response:
        hits["file"] += 1
        seen.append({k: v for k, v in request.headers.items() if "range" in k.lower()})
        return web.Response(body=b"0123456789", headers={"Cache-Control": "max-age=60"})

    @routes.post("/fresh")
    async def update(request: web.Request) -> web.Response:
        hits["post"] += 1
        state["version"] = "v2"
        return web.Response(text=f"got {await request.text()}")

    @routes.get("/who")
    async def who(request: web.Request) -> web.Response:
        forwarded = {k: request.headers.get(k, "") for k in ("X-Forwarded-Host", "Host")}
        return web.json_response(forwarded)

    app = web.Application()
    app.add_routes(routes)
    return app


@pytest.fixture
async def proxied(aiohttp_server: Any, aiohttp_client: Any, cache_clock: CacheClock) -> Any:
    hits: Counter[str] = Counter()
    seen: list[dict[str, str]] = []
    origin = await aiohttp_server(origin_app(hits, seen))
    settings = CacheSettings(default_ttl=0)
    client = await aiohttp_client(
        create_proxy_app(parse_origin(str(origin.make_url(""))), settings)
    )
    client.hits, client.seen, client.clock = hits, seen, cache_clock
    return client


async def test_freshness_comes_from_the_origin(proxied: Any) -> None:
    assert_cache(await proxied.get("/fresh"), "MISS")
    hit = await proxied.get("/fresh")
    assert_cache(hit, "HIT")
    assert await hit.text() == "fresh"
    plain = await proxied.get("/plain")
    assert_cache(plain, "MISS", reason="ttl-zero")  # nothing the origin did not allow
    await proxied.get("/plain")
    assert proxied.hits == {"fresh": 1, "plain": 2}


async def test_no_cache_is_revalidated_with_the_origin(proxied: Any) -> None:
    await proxied.get("/checked")
    again = await proxied.get("/checked", headers={"If-None-Match": '"client"'})
    assert_cache(again, "REVALIDATED")
    assert await again.text() == "checked v1"
    assert proxied.seen == [{}, {"If-None-Match": '"v1"'}]


async def test_ranges_come_from_the_stored_whole(proxied: Any) -> None:
    part = await proxied.get("/file", headers={"Range": "bytes=2-4"})
    assert part.status == 206 and await part.read() == b"234"
    again = await proxied.get("/file", headers={"Range": "bytes=-2"})
    assert again.status == 206 and await again.read() == b"89"
    assert proxied.hits["file"] == 1 and proxied.seen == [{}]


async def test_unsafe_methods_are_forwarded_and_purge_the_url(proxied: Any) -> None:
    await proxied.get("/fresh")
    posted = await proxied.post("/fresh", data=b"price=3")
    assert posted.status == 200 and await posted.text() == "got price=3"
    assert_cache(await proxied.get("/fresh"), "MISS")
    assert proxied.hits == {"fresh": 2, "post": 1}


async def test_forwarded_headers(proxied: Any) -> None:
    answer = await proxied.get("/who", headers={"Host": "shop.example"})
    body = await answer.json()
    assert body["X-Forwarded-Host"] == "shop.example"
    assert body["Host"] != "shop.example"  # the origin's own


async def test_an_unreachable_origin_is_a_502_not_stored(aiohttp_client: Any) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = create_proxy_app(URL(f"http://127.0.0.1:{port}"), CacheSettings(default_ttl=60))
    client = await aiohttp_client(app)
    for _ in range(2):
        answer = await client.get("/anything")
        assert answer.status == 502
        assert_cache(answer, "MISS", reason="status")


@pytest.mark.parametrize(
    "raw", ["ftp://x", "http://", "127.0.0.1:8080", "http://a/?q=1", "http://a/#f"]
)
def test_a_bad_origin_is_a_clear_error(raw: str) -> None:
    with pytest.raises(ConfigError, match="ORIGIN"):
        parse_origin(raw)


def test_the_command_line_serves_and_refuses_bad_input() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CACHEKIT_")}
    bad = subprocess.run(
        [sys.executable, "-m", "demo_app.proxy", "not-a-url"],
        check=False,
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 2 and "ORIGIN must be" in bad.stderr
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "demo_app.proxy", "http://127.0.0.1:9", "--port", str(port)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/x", timeout=2)
            except urllib.error.HTTPError as exc:
                assert exc.code == 502  # serving; the origin (discard port) does not answer
                break
            except OSError:
                assert time.monotonic() < deadline, "the proxy did not start"
                time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(timeout=20)
