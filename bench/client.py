"""The harness's own HTTP client (aiohttp, loopback only): warm-up, counters and miss storms."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import aiohttp

WARM_CONCURRENCY = 32
TIMEOUT = aiohttp.ClientTimeout(total=30)


def _check(url: str) -> str:
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"refusing a non-loopback URL: {url}")
    return url


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(_check(url)) as response:
        await response.read()
        return response.status, response.headers.get("X-Cache", "")


async def _fetch_all(base: str, paths: Iterable[str]) -> list[tuple[int, str]]:
    gate = asyncio.Semaphore(WARM_CONCURRENCY)
    connector = aiohttp.TCPConnector(limit=WARM_CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector, timeout=TIMEOUT) as session:

        async def one(path: str) -> tuple[int, str]:
            async with gate:
                return await _get(session, base + path)

        return await asyncio.gather(*(one(path) for path in paths))


def fetch_all(base: str, paths: Iterable[str]) -> list[tuple[int, str]]:
    """GET every path once (32 at a time); returns (status, X-Cache) per path."""
    return asyncio.run(_fetch_all(base, list(paths)))


async def _counters(base: str) -> dict[str, int]:
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.get(_check(base + "/calls")) as response,
    ):
        data = await response.json()
        return {name: int(value) for name, value in data.items()}


def counters(base: str) -> dict[str, int]:
    """The server's counters: `calls` (see `handler_calls`) and, from cachekit's Redis
    variants, `lookup_batches` and `lookup_keys` (MGETs sent, keys they carried)."""
    return asyncio.run(_counters(base))


def handler_calls(base: str) -> int:
    """How many times the server's upstream (the handler's real work) has run."""
    return counters(base)["calls"]


async def _storm(base: str, paths: list[str], clients: int) -> tuple[list[float], list[int]]:
    connector = aiohttp.TCPConnector(limit=clients, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=TIMEOUT) as session:
        # Open every connection first (on another path), so the storm itself is only requests.
        await asyncio.gather(*(_get(session, base + "/health") for _ in range(clients)))
        start = asyncio.Event()

        async def one(path: str) -> tuple[float, int]:
            await start.wait()
            began = time.perf_counter()
            status, _ = await _get(session, base + path)
            return time.perf_counter() - began, status

        tasks = [asyncio.create_task(one(paths[i % len(paths)])) for i in range(clients)]
        await asyncio.sleep(0.05)  # every task is parked on the event
        start.set()
        results = await asyncio.gather(*tasks)
    return [latency for latency, _ in results], [status for _, status in results]


def storm(base: str, paths: list[str], clients: int) -> tuple[list[float], list[int]]:
    """`clients` concurrent GETs spread over `paths`, released at once; latencies (s) and
    statuses."""
    return asyncio.run(_storm(base, paths, clients))
