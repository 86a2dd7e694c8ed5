"""Servers for the key-parity test (tests/test_key_parity.py), in a process of their own.

    python -m tests.parity_server [--redis-url URL]

serves one app per store on its own 127.0.0.1 port and prints their ports as one JSON line
(`{"fresh": P, "passthrough": P, "memory": P, "fakeredis": P, "redis": P, "redis-near": P}`),
then serves until stdin closes. `fresh` runs the same handlers without a cache: what every
request would get if nothing were cached. `passthrough` runs them through cachekit with a
TTL of 0 (nothing is stored): what the handler is handed for each request once cachekit
drops the ignored query parameters (`ignore_query_params`, the default setting). A process
of its own so that the test can run aiohttp's C request parser and its Python one
(`AIOHTTP_NO_EXTENSIONS=1`), chosen at import time.

Every handler echoes what aiohttp handed it. For the default key that is everything the
key promises to respect: the decoded path, `match_info`, the parsed query (parameters in
name order, each name's values in the order sent: the documented canonical order), the
fragment aiohttp parsed, `request.host` and `request.scheme`. The template handler echoes
what its template names.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import fakeredis
from aiohttp import web

from cachekit import CacheSettings, cached, setup_cache
from cachekit.backends.base import Store
from cachekit.backends.redis import RedisStore

HOST = "127.0.0.1"
NAMESPACE = "parity"
TEMPLATE = "t:{match_info[id]}:{query[q]}:{path}:{host}"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _query(request: web.Request) -> list[tuple[str, str]]:
    return sorted(request.query.items(), key=lambda pair: pair[0])


async def item(request: web.Request) -> web.Response:
    return _echo(request, "item")


async def anything(request: web.Request) -> web.Response:
    return _echo(request, "anything")


def _echo(request: web.Request, route: str) -> web.Response:
    seen: dict[str, Any] = {
        "route": route,
        "path": request.path,
        "match_info": sorted(request.match_info.items()),
        "query": _query(request),
        "fragment": request.rel_url.fragment,
        "host": request.host,
        "scheme": request.scheme,
    }
    return web.json_response(seen)


async def templated(request: web.Request) -> web.Response:
    seen = {
        "id": request.match_info["id"],
        "q": request.query.getall("q", None),
        "path": request.path,
        "host": request.host,
    }
    return web.json_response(seen)


def build_app(
    cache_store: Store | None, *, cached_app: bool = True, ttl: float = 3600, **overrides: Any
) -> web.Application:
    """The parity routes, cached on `cache_store` (or the store the settings `overrides`
    name), or without a cache at all (the fresh app)."""

    def wrap(handler: Handler, **options: Any) -> Handler:
        return cached(ttl=ttl, **options)(handler) if cached_app else handler

    app = web.Application()
    app.router.add_get("/item/{id}", wrap(item))
    app.router.add_get("/t/{id}", wrap(templated, key=TEMPLATE))
    app.router.add_get("/{tail:.*}", wrap(anything))
    if cached_app:
        settings = CacheSettings(**{"namespace": NAMESPACE, "redis_url": None, **overrides})
        setup_cache(app, settings, store=cache_store)
    return app


async def serve(redis_url: str | None) -> None:
    apps: dict[str, web.Application] = {
        "fresh": build_app(None, cached_app=False),
        "passthrough": build_app(None, ttl=0),
        "memory": build_app_for("memory", None),
        "fakeredis": build_app_for("fakeredis", None),
    }
    if redis_url:
        apps["redis"] = build_app_for("redis", redis_url)
        apps["redis-near"] = build_app_for("redis-near", redis_url)
    runners, ports = [], {}
    for name, app in apps.items():
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, HOST, 0)
        await site.start()
        runners.append(runner)
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        ports[name] = server.sockets[0].getsockname()[1]
    print(json.dumps(ports), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the test closes our stdin
    for runner in runners:
        await runner.cleanup()


def build_app_for(kind: str, redis_url: str | None) -> web.Application:
    if kind == "memory":
        return build_app(None)
    if kind == "fakeredis":
        return build_app(RedisStore(fakeredis.FakeAsyncRedis(), NAMESPACE, 2.0))
    near = 8 << 20 if kind == "redis-near" else 0
    namespace = f"{NAMESPACE}-{kind}"
    return build_app(
        None, redis_url=redis_url, namespace=namespace, near_cache_max_bytes=near, redis_timeout=2.0
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-url")
    args = parser.parse_args()
    asyncio.run(serve(args.redis_url))


if __name__ == "__main__":
    main()
