"""Resident cost of the embedded store: `python -m bench.memory_footprint` prints one JSON line."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import time
import tracemalloc
from pathlib import Path

from cachekit.backends.memory import MemoryStore
from cachekit.entry import CachedResponse, body_etag

CONTENT_TYPE = "application/json; charset=utf-8"


def make_entry(n: int, body_size: int, now: float) -> tuple[str, CachedResponse]:
    """A logical key and an entry shaped like the ones `@cached` stores (own objects each)."""
    stamp = f"{n:08d}".encode()
    body = (stamp * (body_size // len(stamp) + 1))[:body_size]
    headers = (("".join(("Content-", "Type")), "".join((CONTENT_TYPE[:16], CONTENT_TYPE[16:]))),)
    entry = CachedResponse(
        status=200, headers=headers, body=body, stored_at=now, ttl=3600.0, etag=body_etag(body)
    )
    return f"items:{n}", entry


def rss_bytes() -> int:
    """This process's resident set size."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


async def fill(store: MemoryStore, entries: int, body_size: int) -> None:
    """Insert `entries` entries, evicting as the store's budget demands."""
    now = time.time()
    for n in range(entries):
        key, entry = make_entry(n, body_size, now)
        await store.set(key, entry)


def measure(entries: int, body_size: int, max_bytes: int, mode: str) -> dict[str, float]:
    """Fill a fresh store and compare what it accounts with what the process really holds."""
    gc.collect()
    if mode == "tracemalloc":
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
    else:
        before = rss_bytes()
    store = MemoryStore(max_bytes)
    asyncio.run(fill(store, entries, body_size))
    gc.collect()
    after = tracemalloc.get_traced_memory()[0] if mode == "tracemalloc" else rss_bytes()
    kept = len(store)
    return {
        "body_bytes": body_size,
        "inserted": entries,
        "kept": kept,
        "accounted_bytes": store.used_bytes,
        "measured_bytes": after - before,
        "max_bytes": max_bytes,
    }


def main() -> None:
    """Parse flags, measure once, print the result as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.memory_footprint")
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--body", type=int, default=256, help="body bytes per entry")
    parser.add_argument("--max-bytes", type=int, default=64 << 20, help="memory_max_bytes")
    parser.add_argument("--mode", choices=["tracemalloc", "rss"], default="tracemalloc")
    args = parser.parse_args()
    print(json.dumps(measure(args.entries, args.body, args.max_bytes, args.mode)))


if __name__ == "__main__":
    main()
