"""The shared "slow" upstream, the handler-run counter and the routes every variant serves."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from bench.payload import CONTENT_TYPE, page_body

TTL: Final = 3600
ITEMS_ROUTE: Final = r"/items/{n:\d+}"
SLOW_ROUTE: Final = r"/slow/{n:\d+}"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """What one benchmark server process runs: an app kind, a backend and the delays."""

    kind: str
    backend: str
    redis_url: str | None
    delay: float
    slow_delay: float

    @property
    def redis_host_port(self) -> tuple[str, int]:
        """Host and port of `redis_url` (peers that do not take URLs need them)."""
        if self.redis_url is None:
            raise ValueError("this variant needs --redis-url")
        address = self.redis_url.split("://", 1)[1].split("/", 1)[0]
        host, _, port = address.rpartition(":")
        return host, int(port)


class Upstream:
    """Builds the JSON page from data after an `asyncio.sleep`, counting every run."""

    def __init__(self, delay: float, slow_delay: float) -> None:
        self.delay = delay
        self.slow_delay = slow_delay
        self.calls = 0

    async def page(self, n: int) -> bytes:
        """The body of /items/<n>: a short simulated upstream wait, then real serialisation."""
        self.calls += 1
        await asyncio.sleep(self.delay)
        return page_body(n)

    async def slow_page(self, n: int) -> bytes:
        """The body of /slow/<n>: the same page behind a long upstream wait (miss storms)."""
        self.calls += 1
        await asyncio.sleep(self.slow_delay)
        return page_body(n)


def json_response(body: bytes) -> web.Response:
    """The response every variant sends for a page body."""
    return web.Response(body=body, content_type=CONTENT_TYPE)


def page_number(request: web.Request) -> int:
    """The `<n>` of /items/<n> or /slow/<n>."""
    return int(request.match_info["n"])


def base_app(
    upstream: Upstream, counters: Callable[[], dict[str, int]] | None = None
) -> web.Application:
    """An app with /health and /calls (the handler-run counter, plus `counters()` when
    given), without the page routes."""
    app = web.Application()

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def calls(_: web.Request) -> web.Response:
        return web.json_response({**(counters() if counters else {}), "calls": upstream.calls})

    app.router.add_get("/health", health)
    app.router.add_get("/calls", calls)
    return app


def uncached_handlers(upstream: Upstream) -> tuple[Handler, Handler]:
    """The undecorated /items and /slow handlers, which call the upstream every time."""

    async def items(request: web.Request) -> web.Response:
        return json_response(await upstream.page(page_number(request)))

    async def slow(request: web.Request) -> web.Response:
        return json_response(await upstream.slow_page(page_number(request)))

    return items, slow


def add_pages(app: web.Application, items: Handler, slow: Handler) -> web.Application:
    """Route /items/<n> and /slow/<n> to the given handlers."""
    app.router.add_get(ITEMS_ROUTE, items)
    app.router.add_get(SLOW_ROUTE, slow)
    return app
