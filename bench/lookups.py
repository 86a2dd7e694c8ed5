"""CPU per MGET: redis-py's client against the store's lookup channel.

`python -m bench.lookups` starts a private redis-server (core 1 when pinning is available),
stores `--keys` values of `--value-bytes` bytes, and from this process (core 0) times
`--calls` MGETs of 1, 16 and 32 of them (plus the generation key, as the store sends) with
`redis.asyncio.Redis.mget` and with `cachekit.backends.lookup_channel.LookupChannel.mget`,
one at a time. Reported: this process's CPU time (user + system) per MGET and per key,
best of `--repeat` runs. Only loopback traffic; every loop is bounded by `--calls`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import cast

from redis.asyncio import BlockingConnectionPool, Redis

from bench.procs import SERVER_CPU, RedisProcess, pinning_available
from cachekit.backends import redis_internals
from cachekit.backends.lookup_channel import LookupChannel

Mget = Callable[[Sequence[str]], Awaitable[list[bytes | None]]]


async def cpu_per_call(mget: Mget, keys: Sequence[str], calls: int, repeat: int) -> float:
    """Best CPU seconds per `mget(keys)` over `repeat` runs of `calls` calls."""
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        for _ in range(calls):
            values = await mget(keys)
        best = min(best, (time.process_time() - started) / calls)
        if len(values) != len(keys) or values[-1] is None:
            raise RuntimeError("the MGET did not return the stored values")
    return best


async def measure(url: str, args: argparse.Namespace) -> None:
    """Print one line per client and batch size."""
    pool = BlockingConnectionPool.from_url(url, max_connections=64)
    client = Redis.from_pool(pool)
    address = redis_internals.channel_address(pool)
    assert address is not None
    channel = LookupChannel.for_address(address)
    value = os.urandom(args.value_bytes)
    await client.mset({f"bench:{i}": value for i in range(args.keys)})

    async def with_redis_py(keys: Sequence[str]) -> list[bytes | None]:
        return cast(list[bytes | None], await client.mget(list(keys)))

    clients: dict[str, Mget] = {"redis-py": with_redis_py, "lookup channel": channel.mget}
    print(f"{args.value_bytes:,}-byte values, {args.calls:,} MGETs per run, best of {args.repeat}")
    try:
        for batch in (1, 16, 32):
            keys = ["bench:gen", *(f"bench:{i}" for i in range(batch))]
            for name, mget in clients.items():
                await cpu_per_call(mget, keys, 50, 1)  # connect and warm up
                seconds = await cpu_per_call(mget, keys, args.calls, args.repeat)
                print(
                    f"{name:>15}, {batch:>2} keys: {seconds * 1e6:7.1f} µs CPU per MGET, "
                    f"{seconds * 1e6 / batch:6.1f} per key"
                )
    finally:
        channel.close()
        await client.aclose()


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.lookups", description=__doc__)
    parser.add_argument("--keys", type=int, default=32)
    parser.add_argument("--value-bytes", type=int, default=13_000)
    parser.add_argument("--calls", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if pinning_available():
        os.sched_setaffinity(0, {int(SERVER_CPU)})
    with RedisProcess() as redis_server:
        asyncio.run(measure(redis_server.url, args))


if __name__ == "__main__":
    main()
