"""Worker processes for the multi-process stampede tests (tests/test_filling.py).

    python -m tests.stampede_worker --port P --redis-url U --delay 0.1 --ttl 60 \
        --lock-timeout 5 [--lock-ttl 30] [--stale-ttl 0] [--stale-if-error 0] ...

serves one worker on 127.0.0.1:P. `--port` may be repeated: the process then imports
everything once and forks one worker process per port (each with its own event loop,
Redis connections and cache), which starts three workers in a third of the CPU time. The
parent forwards SIGTERM/SIGINT to its workers and exits when they all have; a worker dies
with its parent (PR_SET_PDEATHSIG), so a killed test run leaves nothing behind.

Routes of each worker:

    GET /item    cached under the key "item" in Redis (cachekit's RedisStore). The handler
                 INCRs the counter key in Redis (never a per-process counter: the tests add
                 up every process's runs there) *before* it sleeps `--delay` seconds, then
                 answers ``call N`` where N is the counter value after its INCR.
    GET /ready   ``ready <pid>`` (200) once the app has started and Redis answers PING;
                 the pid is this worker's own, to SIGKILL it. 503 while Redis does not answer.
    GET /stats   this process's ``cache.stats()`` as JSON.

`--vary NAME` makes the handler answer with `Vary: NAME` (a header the decorator does not
declare, as compression middleware adds `Vary: Accept-Encoding`). `--fail-after N` makes
every run after the Nth (counted in Redis) fail, by raising or answering 500 (`--fail-mode`).
Workers stop on SIGTERM/SIGINT (aiohttp's run_app) and print nothing but errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import traceback
from collections.abc import AsyncIterator, Sequence
from types import FrameType
from typing import Any

from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from cachekit import CacheSettings, cached, get_cache, setup_cache

HOST = "127.0.0.1"
COUNTER_KEY = "stampede:calls"
ITEM_KEY = "item"
REDIS_APP_KEY: web.AppKey[Redis] = web.AppKey("stampede_redis", Redis)

_PR_SET_PDEATHSIG = 1
_libc: Any = None
if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError):
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def die_with_parent() -> None:
    """Get SIGKILL when the parent (the thread that forked us) ends. Linux only; also used
    by the tests as the `preexec_fn` of the processes they start."""
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.stampede_worker")
    parser.add_argument("--port", type=int, action="append", required=True)
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--delay", type=float, default=0.1, help="handler sleep, seconds")
    parser.add_argument("--ttl", type=float, default=60.0)
    parser.add_argument("--stale-ttl", type=float, default=0.0)
    parser.add_argument("--stale-if-error", type=float, default=0.0)
    parser.add_argument("--lock-timeout", type=float, default=5.0)
    parser.add_argument("--lock-ttl", type=float, default=30.0)
    parser.add_argument("--redis-timeout", type=float, default=0.25)
    parser.add_argument("--namespace", default="stampede")
    parser.add_argument("--counter-key", default=COUNTER_KEY)
    parser.add_argument("--vary", default="", help="answer with this Vary header")
    parser.add_argument(
        "--fail-after", type=int, default=0, help="runs after the Nth fail (0: never)"
    )
    parser.add_argument("--fail-mode", choices=["raise", "return-500"], default="raise")
    return parser.parse_args(argv)


def create_app(args: argparse.Namespace) -> web.Application:
    """The worker app; every option comes from the command line (no CACHEKIT_* needed)."""
    app = web.Application()
    setup_cache(
        app,
        CacheSettings(
            redis_url=args.redis_url,
            namespace=args.namespace,
            lock_timeout=args.lock_timeout,
            lock_ttl=args.lock_ttl,
            redis_timeout=args.redis_timeout,
        ),
    )

    async def counter_client(app: web.Application) -> AsyncIterator[None]:
        client = Redis.from_url(args.redis_url, socket_timeout=5, socket_connect_timeout=2)
        app[REDIS_APP_KEY] = client
        yield
        await client.aclose()

    app.cleanup_ctx.append(counter_client)

    @cached(
        ttl=args.ttl,
        key=ITEM_KEY,
        stale_ttl=args.stale_ttl,
        stale_if_error=args.stale_if_error,
    )
    async def item(request: web.Request) -> web.Response:
        calls = int(await request.app[REDIS_APP_KEY].incr(args.counter_key))
        await asyncio.sleep(args.delay)
        if 0 < args.fail_after < calls:
            if args.fail_mode == "raise":
                raise RuntimeError(f"upstream is down (call {calls})")
            return web.Response(status=500, text=f"upstream is down (call {calls})")
        response = web.Response(text=f"call {calls}")
        if args.vary:
            response.headers["Vary"] = args.vary
        return response

    async def ready(request: web.Request) -> web.Response:
        try:
            await request.app[REDIS_APP_KEY].ping()
        except (RedisError, OSError) as exc:
            return web.Response(status=503, text=f"redis not reachable: {exc!r}")
        return web.Response(text=f"ready {os.getpid()}")

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(get_cache(request).stats())

    app.router.add_get("/item", item)
    app.router.add_get("/ready", ready)
    app.router.add_get("/stats", stats)
    return app


def serve(args: argparse.Namespace, port: int) -> None:
    web.run_app(
        create_app(args),
        host=args.host,
        port=port,
        backlog=1024,
        access_log=None,
        print=None,
        shutdown_timeout=1.0,
    )


def fork_workers(args: argparse.Namespace) -> int:
    """One forked worker per port; returns 0 when every worker exited cleanly."""
    parent = os.getpid()
    children: dict[int, int] = {}
    for port in args.port:
        pid = os.fork()
        if pid == 0:  # the worker: never return into the parent's code
            code = 1
            try:
                die_with_parent()
                if os.getppid() == parent:
                    serve(args, port)
                    code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children[pid] = port

    def forward(signum: int, _: FrameType | None) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    failed = False
    while children:
        pid, status = os.wait()
        if children.pop(pid, None) is not None and os.waitstatus_to_exitcode(status) != 0:
            failed = True
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if len(args.port) == 1:
        serve(args, args.port[0])
    else:
        sys.exit(fork_workers(args))


if __name__ == "__main__":
    main()
