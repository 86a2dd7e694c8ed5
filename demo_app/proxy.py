"""``python -m demo_app.proxy ORIGIN [--host H] [--port P]``: a caching reverse proxy.

One catch-all ``@cached()`` handler forwards every request to ORIGIN (``http://host:port``,
optionally with a base path) and returns the origin's answer; cachekit decides what to keep
and for how long from the origin's own headers (``Cache-Control``, ``Expires``, ``Vary``,
``ETag``, ``Last-Modified``): ``default_ttl`` is 0 unless ``CACHEKIT_DEFAULT_TTL`` says
otherwise, so nothing the origin did not allow is stored. Stale entries are revalidated
with the origin (it sees ``If-None-Match`` / ``If-Modified-Since`` from cachekit, never a
client's), ranges are cut from stored responses, and unsafe methods (POST, PUT, ...) are
forwarded and purge the URL. Every other ``CACHEKIT_*`` setting applies (a Redis URL to
share the cache between several proxies).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Final

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from cachekit import CacheSettings, cached, setup_cache
from cachekit.directives import HOP_BY_HOP, connection_listed
from demo_app.__main__ import load_cache_settings
from demo_app.config import ConfigError, redact_url

log = logging.getLogger("demo_app.proxy")

#: Request fields never forwarded: hop-by-hop ones, the ones aiohttp sets for the
#: upstream connection, and Accept-Encoding (the origin answers in identity, which every
#: client accepts, so one stored entry serves all of them).
NOT_FORWARDED_REQUEST: Final = HOP_BY_HOP | {"host", "content-length", "accept-encoding"}
#: Response fields not passed back: hop-by-hop ones, and the ones aiohttp computes anew.
NOT_FORWARDED_RESPONSE: Final = HOP_BY_HOP | {"content-length", "content-encoding", "server"}
UPSTREAM_TIMEOUT: Final = aiohttp.ClientTimeout(total=30, connect=5)
SESSION: Final = web.AppKey("proxy_session", aiohttp.ClientSession)
ORIGIN: Final = web.AppKey("proxy_origin", URL)

routes = web.RouteTableDef()


def parse_origin(raw: str) -> URL:
    """The origin's base URL; ``ConfigError`` unless it is http(s) with a host."""
    url = URL(raw)
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(f"ORIGIN must be an http:// or https:// URL with a host, not {raw!r}")
    if url.query_string or url.fragment:
        raise ConfigError("ORIGIN must not have a query or a fragment")
    return url.with_path(url.path.rstrip("/"))


def _forwarded_headers(request: web.Request) -> CIMultiDict[str]:
    dropped = NOT_FORWARDED_REQUEST | connection_listed(request.headers.getall("Connection", []))
    headers = CIMultiDict(
        (name, value) for name, value in request.headers.items() if name.lower() not in dropped
    )
    peer = request.remote or ""
    previous = request.headers.get("X-Forwarded-For")
    headers["X-Forwarded-For"] = f"{previous}, {peer}" if previous else peer
    headers["X-Forwarded-Host"] = request.host
    headers["X-Forwarded-Proto"] = request.scheme
    return headers


@routes.route("*", "/{tail:.*}")
@cached(name="proxy")
async def proxy(request: web.Request) -> web.Response:
    """Forward the request to the origin and return its answer (502 when unreachable)."""
    origin = request.app[ORIGIN]
    target = URL(
        str(origin)
        + request.rel_url.raw_path
        + (f"?{request.rel_url.raw_query_string}" if request.rel_url.raw_query_string else ""),
        encoded=True,
    )
    body = await request.read() if request.can_read_body else None
    try:
        async with request.app[SESSION].request(
            request.method,
            target,
            headers=_forwarded_headers(request),
            data=body,
            allow_redirects=False,
        ) as upstream:
            payload = await upstream.read()
            dropped = NOT_FORWARDED_RESPONSE | connection_listed(
                upstream.headers.getall("Connection", [])
            )
            headers = CIMultiDict(
                (name, value)
                for name, value in upstream.headers.items()
                if name.lower() not in dropped
            )
            return web.Response(status=upstream.status, headers=headers, body=payload)
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("origin %s did not answer: %r", redact_url(str(origin)), exc)
        return web.Response(status=502, text="bad gateway: the origin did not answer\n")


def create_proxy_app(origin: URL, settings: CacheSettings | None = None) -> web.Application:
    """The proxy app for `origin`, with a cache from `settings` (default: the environment,
    with ``default_ttl`` 0 unless ``CACHEKIT_DEFAULT_TTL`` is set)."""
    app = web.Application()
    app[ORIGIN] = origin
    app.add_routes(routes)

    async def session(app: web.Application) -> AsyncIterator[None]:
        # aiohttp decodes a body the origin encodes anyway (its Content-Encoding is not
        # passed back), so what is stored is always the identity body.
        async with aiohttp.ClientSession(timeout=UPSTREAM_TIMEOUT) as client:
            app[SESSION] = client
            yield

    app.cleanup_ctx.append(session)
    setup_cache(app, settings if settings is not None else proxy_settings())
    return app


def proxy_settings() -> CacheSettings:
    """`CacheSettings` from the environment, `default_ttl` 0 unless it is set there."""
    settings = load_cache_settings()
    if "CACHEKIT_DEFAULT_TTL" not in os.environ:
        settings = settings.model_copy(update={"default_ttl": 0.0})
    return settings


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and serve until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m demo_app.proxy", description="A caching reverse proxy built on cachekit."
    )
    parser.add_argument("origin", help="the origin's base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8081, help="port to listen on")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        origin = parse_origin(args.origin)
        settings = proxy_settings()
    except ConfigError as exc:
        print(f"demo_app.proxy: error: {exc}", file=sys.stderr)
        sys.exit(2)
    if not 0 < args.port < 65536:
        print("demo_app.proxy: error: --port must be 1-65535", file=sys.stderr)
        sys.exit(2)
    log.info("proxying http://%s:%d to %s", args.host, args.port, redact_url(str(origin)))
    web.run_app(create_proxy_app(origin, settings), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
