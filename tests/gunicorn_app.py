"""The app of tests/test_gunicorn.py, as a user deploys one under gunicorn:

    gunicorn tests.gunicorn_app:create_app --worker-class aiohttp.GunicornWebWorker --workers 2

Settings come from `CACHEKIT_*` variables (the test sets them); the handler counts its runs
in Redis (`INCR gunicorn:runs`), so the test can add up every worker's runs. Routes:

    GET  /items/{id}   cached 60 s, tagged `item:{id}`; sleeps 200 ms like a slow upstream
    POST /purge/{id}   invalidate_tags("item:{id}") through this worker's cache
    GET  /pid          this worker's pid (to see that both workers answer)
    GET  /metrics      Prometheus metrics, when CACHEKIT_METRICS_PATH=/metrics is set
    GET  /_cache/stats the admin API's figures over every worker, when CACHEKIT_ADMIN_TOKEN
                       is set

Every response names the worker that answered in `X-Pid`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from redis.asyncio import Redis

from cachekit import cached, get_cache, setup_cache
from cachekit.admin import setup_admin

RUNS_KEY = "gunicorn:runs"
REDIS_KEY: web.AppKey[Redis] = web.AppKey("gunicorn_test_redis", Redis)


@cached(ttl=60, tags=lambda request: [f"item:{request.match_info['id']}"])
async def item(request: web.Request) -> web.Response:
    runs = int(await request.app[REDIS_KEY].incr(RUNS_KEY))
    await asyncio.sleep(0.2)
    return web.Response(text=f"item {request.match_info['id']} run {runs}")


async def purge(request: web.Request) -> web.Response:
    removed = await get_cache(request).invalidate_tags(f"item:{request.match_info['id']}")
    return web.Response(text=str(removed))


async def pid(request: web.Request) -> web.Response:
    return web.Response(text=str(os.getpid()))


@web.middleware
async def served_by(request: web.Request, handler: Any) -> web.StreamResponse:
    """Name the worker that answered (`X-Pid`), so a test can see both at work."""
    response = await handler(request)
    response.headers["X-Pid"] = str(os.getpid())
    return response


async def create_app() -> web.Application:
    """The app factory gunicorn calls in each worker."""
    app = web.Application(middlewares=[served_by])
    app.router.add_get("/items/{id}", item)
    app.router.add_post("/purge/{id}", purge)
    app.router.add_get("/pid", pid)
    setup_cache(app)
    if os.environ.get("CACHEKIT_ADMIN_TOKEN"):
        setup_admin(app)

    async def counter(app: web.Application) -> AsyncIterator[None]:
        app[REDIS_KEY] = Redis.from_url(os.environ["CACHEKIT_REDIS_URL"])
        yield
        await app[REDIS_KEY].aclose()

    app.cleanup_ctx.append(counter)
    return app
