"""Memory under a flood of unique URLs: `python -m bench.flood`.

Starts one cachekit server process (embedded store, `CACHEKIT_MEMORY_MAX_BYTES`, default
8 MiB) on a free 127.0.0.1 port, warms it with `--warmup` requests, then sends `--requests`
GETs to unique URLs (a unique path segment and query each, with a `--url-bytes` long
tracking parameter; ~1 KB bodies stored), and
reports the server's resident memory (VmRSS) before and after, the store's own bytes, and
the budget the issue sets: growth <= 1.25 x memory_max_bytes + 4 MiB. Bounded in count and
in time (`--seconds`); all traffic goes to 127.0.0.1.

    python -m bench.flood                       # 50,000 unique URLs, 8 MiB budget
    python -m bench.flood --requests 5000 --budget 1048576
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from bench.procs import Child, free_port, http_get, wait_until

HOST = "127.0.0.1"
BODY = b'{"item": "' + b"x" * 1000 + b'"}'


def rss_of(pid: int) -> int:
    """Resident set size of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def serve(port: int) -> None:
    """The flood target: one cached handler on every path, and /stats."""
    from cachekit import cached, get_cache, setup_cache  # noqa: PLC0415

    @cached()
    async def anything(request: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="application/json")

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(get_cache(request.app).stats())

    app = web.Application()
    app.router.add_get("/_stats", stats)
    app.router.add_get("/{tail:.*}", anything)
    setup_cache(app)
    web.run_app(app, host=HOST, port=port, print=None, access_log=None)


async def flood(
    base: str,
    count: int,
    deadline: float,
    padding: str,
    *,
    repeat: int = 1,
    distinct: int | None = None,
) -> int:
    """Send `count` GETs over 16 keep-alive connections, to unique URLs (or to `distinct`
    URLs in turn); how many were sent."""
    sent = 0
    connector = aiohttp.TCPConnector(limit=16)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(n: int) -> None:
            if distinct is not None:
                n %= distinct
            url = f"{base}/items/{n}/detail?ref=campaign-{n}&page={n % 7}&utm={padding}"
            for _ in range(repeat):  # a miss, then hits
                async with session.get(url) as r:
                    await r.read()

        for start in range(0, count, 256):
            if time.monotonic() > deadline:
                break
            batch = range(start, min(start + 256, count))
            await asyncio.gather(*(one(n) for n in batch))
            sent += len(batch)
    return sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--budget", type=int, default=8 << 20, help="memory_max_bytes")
    parser.add_argument(
        "--url-bytes", type=int, default=400, help="length of a tracking parameter per URL"
    )
    parser.add_argument("--repeat", type=int, default=1, help="requests per unique URL")
    parser.add_argument("--seconds", type=float, default=300.0, help="bound on the flood")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    port = free_port()
    env = {**os.environ, "CACHEKIT_MEMORY_MAX_BYTES": str(args.budget)}
    module = __spec__.name if __spec__ is not None else "bench.flood"
    command = [sys.executable, "-m", module, "--serve", str(port)]
    base = f"http://{HOST}:{port}"
    with Child("flood", command, env=env) as server:
        wait_until(lambda: http_get(base + "/_stats") is not None, 20, "the flood server")
        deadline = time.monotonic() + args.seconds
        # Warm the code paths (imports, aiohttp's own caches) on a few URLs, not the store.
        padding = "p" * args.url_bytes
        asyncio.run(flood(base, args.warmup, deadline, padding, distinct=16))
        before = rss_of(server.proc.pid)
        started = time.monotonic()
        sent = asyncio.run(flood(base, args.requests, deadline, padding, repeat=args.repeat))
        elapsed = time.monotonic() - started
        after = rss_of(server.proc.pid)
        stats = json.loads(http_get(base + "/_stats") or b"{}")
    growth = after - before
    allowed = 1.25 * args.budget + (4 << 20)
    report = {
        "unique_urls": sent,
        "requests_per_url": args.repeat,
        "seconds": round(elapsed, 1),
        "budget_bytes": args.budget,
        "rss_before_mib": round(before / 2**20, 1),
        "rss_after_mib": round(after / 2**20, 1),
        "growth_mib": round(growth / 2**20, 1),
        "allowed_growth_mib": round(allowed / 2**20, 1),
        "within_budget": growth <= allowed,
        "store_entries": stats.get("entries"),
        "store_mib": round(stats.get("memory_bytes", 0) / 2**20, 2),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
