"""Instructions per request under callgrind: a deterministic meter for hit-path work.

`python -m bench.instructions` runs small aiohttp servers under `valgrind --tool=callgrind`
on a free loopback port, sends them a fixed number of requests from one keep-alive
client, and reports (instructions with N2 requests - with N1 requests) / (N2 - N1), so
start-up cost cancels out. Unlike req/s or CPU time it does not move with machine load.
valgrind's own memcpy counts roughly per byte, so it overstates copy-heavy paths (Redis
values of 13 KB); compare memory-store variants here and Redis ones with `python -m bench`.

Variants: `limit` (prebuilt body), `headers` (prebuilt body with the five header lines a
hit adds), `setup` (setup_cache on the app, handler not decorated), `disabled`
(decorated, CACHEKIT enabled=false), `hit` (a fresh hit from the embedded store, default
settings), `hit-no-invalidation` (the same with invalidate_on_unsafe=false).

Peers, on the wrk benchmark's own apps (`bench.server`: the 13 KB catalogue page, the
embedded/in-process stores): `bench-limit`, `bench-cachekit-memory`, `aiocache-memory`,
`cashews-memory`, `aiohttp-cache-memory` (`--variants peers` runs these five), so the
"faster than the best peer" comparison has a figure that does not move with machine noise.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Final

from aiohttp import ClientError, ClientSession, web

from bench.payload import page_body
from bench.procs import free_port

VARIANTS: Final = ("limit", "headers", "setup", "disabled", "hit", "hit-no-invalidation")
PEER_VARIANTS: Final = (
    "bench-limit",
    "bench-cachekit-memory",
    "aiocache-memory",
    "cashews-memory",
    "aiohttp-cache-memory",
)
HIT_HEADERS: Final = (
    ("Content-Type", "application/json"),
    ("ETag", '"b484b92619d2ed1d5ef0dc3a6e3e6bb5"'),
    ("Date", "Tue, 24 Nov 2026 00:08:44 GMT"),
    ("Age", "0"),
    ("Cache-Status", "cachekit; hit; ttl=3599"),
    ("X-Cache", "HIT"),
)


def build(variant: str) -> web.Application:
    """The app of one variant, serving /items/{n}."""
    from cachekit import CacheSettings, cached, setup_cache  # noqa: PLC0415

    if variant in PEER_VARIANTS:
        from bench.handlers import ServerConfig  # noqa: PLC0415
        from bench.server import build_app  # noqa: PLC0415

        kind, _, backend = variant.removeprefix("bench-").rpartition("-")
        kind, backend = (kind, backend) if kind else (backend, "none")
        return build_app(ServerConfig(kind, backend, None, 0.002, 0.1))

    body = page_body(1)

    async def plain(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    async def with_headers(request: web.Request) -> web.Response:
        return web.Response(body=body, headers=HIT_HEADERS)

    app = web.Application()
    handler = with_headers if variant == "headers" else plain
    if variant in ("setup", "disabled", "hit", "hit-no-invalidation"):
        settings = CacheSettings(
            redis_url=None,
            enabled=variant != "disabled",
            invalidate_on_unsafe=variant != "hit-no-invalidation",
        )
        setup_cache(app, settings)
    if variant in ("disabled", "hit", "hit-no-invalidation"):
        handler = cached(ttl=3600, key="items:{match_info[n]}")(plain)
    app.router.add_get("/items/{n}", handler)
    return app


async def drive(port: int, requests: int) -> None:
    """Wait for the server, then send `requests` GETs on one connection."""
    url = f"http://127.0.0.1:{port}/items/1"
    async with ClientSession() as session:
        for _ in range(1200):  # under valgrind start-up takes up to a minute or two
            try:
                async with session.get(url) as response:
                    await response.read()
                break
            except ClientError:
                await asyncio.sleep(0.25)
        for _ in range(requests):
            async with session.get(url) as response:
                await response.read()


def instructions(variant: str, requests: int) -> int:
    """Total instructions of one server run that answered `requests` (+1 warm-up) GETs."""
    port = free_port()
    server = subprocess.Popen(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-m",
            "bench.instructions",
            "--serve",
            variant,
            "--port",
            str(port),
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "PYTHONHASHSEED": "0"},  # the same dict layouts in every run
    )
    try:
        asyncio.run(asyncio.wait_for(drive(port, requests), timeout=300))
    finally:
        server.send_signal(2)  # SIGINT: run_app shuts down cleanly, callgrind reports
        _, err = server.communicate(timeout=120)
    match = re.search(r"Collected : (\d+)", err)
    if match is None:
        raise RuntimeError(f"no callgrind total for {variant}: {err[-500:]}")
    return int(match.group(1))


async def _freeze_heap(app: web.Application) -> None:
    """Move everything alive after start-up out of the garbage collector's reach: its full
    collections then scan only what requests allocate, and stop moving the per-request
    figure by several thousand instructions depending on where they fall."""
    gc.collect()
    gc.freeze()


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--low", type=int, default=200, help="requests of the first run")
    parser.add_argument("--high", type=int, default=1200, help="requests of the second run")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        app = build(args.serve)
        app.on_startup.append(_freeze_heap)
        web.run_app(app, host="127.0.0.1", port=args.port, print=None)
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is needed: apt-get install -y valgrind")
    baseline = None
    variants = {"peers": ",".join(PEER_VARIANTS)}.get(args.variants, args.variants)
    for variant in variants.split(","):
        low, high = instructions(variant, args.low), instructions(variant, args.high)
        per_request = (high - low) // (args.high - args.low)
        baseline = baseline or per_request
        ratio = baseline / per_request
        print(f"{variant:>22}: {per_request:>8,} instructions/request  {ratio:.3f}x limit")


if __name__ == "__main__":
    main()
