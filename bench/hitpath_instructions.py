"""Instructions per in-process hit under callgrind: cachekit's own hit cost, deterministic.

`python -m bench.hitpath_instructions [--variants limit,default-key,template-key]` calls
`bench.hitpath`'s handlers in-process (one `make_mocked_request`, reused; no sockets, no
HTTP parsing) under `valgrind --tool=callgrind`, once with `--low` and once with `--high`
hits after a few warm-up calls, and prints (instructions(high) - instructions(low)) /
(high - low): start-up cancels out. `PYTHONHASHSEED=0` pins string hashing, so a figure
repeats to within a few instructions; `python -m bench.hitpath` measures the same calls in
µs, which this machine's noise moves by more than most changes do.

`--variants redis-hot,redis-spread` counts Redis hits instead: `bench.hitpath --redis`'s
rounds of 32 concurrent hits (sent through aiohttp's writer into a transport that drops the
bytes), on one hot key or over 1,000 keys, against a private redis-server started here
(never under valgrind); `--low` and `--high` are then rounds (default 20 and 60). The
child's wall clock is frozen, so that valgrind's slowness does not make every hit rebuild
its header block (rebuilt once a second per key: `Age` changes), which it does once in
many hits at full speed; the store timeout is raised to 30 s for the same reason.

To compare trees, run it from each tree's directory (`PYTHONPATH=<tree>`): the child
process imports `cachekit` and `bench` from the tree it is started in.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Final

from aiohttp.test_utils import make_mocked_request

from bench.procs import RedisProcess

VARIANTS: Final = ("limit", "default-key", "template-key")
REDIS_VARIANTS: Final = ("redis-hot", "redis-spread")
#: Hits per round of a Redis variant (`bench.hitpath.CONCURRENT`), each round counted twice
#: (the unmeasured pass and the measured one).
_REDIS_HITS_PER_ROUND: Final = 2 * 32
_COLLECTED: Final = re.compile(rb"Collected : (\d+)")


async def _hits(variant: str, count: int) -> None:
    from bench.hitpath import build  # noqa: PLC0415  (see `_redis_hits`)

    app, handlers = build()
    handler = handlers[variant]
    request = make_mocked_request(
        "GET", "/items/7?b=2&a=1", headers={"Host": "bench.local"}, app=app, match_info={"id": "7"}
    )
    for _ in range(3):  # fill, and the memos' first use
        await handler(request)
    for _ in range(count):
        await handler(request)


def _redis_hits(variant: str, rounds: int, redis_url: str) -> None:
    frozen = time.time()
    # Before cachekit is imported: its clocks are taken from `time` at import.
    time.time = lambda: frozen  # see the module docstring
    from bench.hitpath import cpu_per_concurrent_hit  # noqa: PLC0415

    spread = variant == "redis-spread"
    asyncio.run(
        cpu_per_concurrent_hit(
            redis_url, spread, send=True, rounds=rounds, passes=1, redis_timeout=30.0
        )
    )


def _instructions(variant: str, count: int, redis_url: str = "") -> int:
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": os.getcwd()}
    run = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-m",
            "bench.hitpath_instructions",
            "--child",
            variant,
            str(count),
            redis_url,
        ],
        env=env,
        capture_output=True,
        check=True,
        timeout=600,
    )
    found = _COLLECTED.search(run.stderr)
    if found is None:
        raise RuntimeError(f"callgrind printed no total: {run.stderr[-500:]!r}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--low", type=int, help="hits (Redis: rounds) of the first run")
    parser.add_argument("--high", type=int, help="hits (Redis: rounds) of the second run")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        variant, count, redis_url = args.child
        if variant in REDIS_VARIANTS:
            _redis_hits(variant, int(count), redis_url)
        else:
            asyncio.run(_hits(variant, int(count)))
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    variants = args.variants.split(",")
    with contextlib.ExitStack() as stack:
        redis_url = ""
        if any(variant in REDIS_VARIANTS for variant in variants):
            redis_url = stack.enter_context(RedisProcess()).url
        for variant in variants:
            print(
                f"{variant:>14}: {_per_hit(variant, args.low, args.high, redis_url):9,.0f}"
                " instructions/hit",
                flush=True,
            )


def _per_hit(variant: str, low: int | None, high: int | None, redis_url: str) -> float:
    if variant not in REDIS_VARIANTS:
        low, high = low or 1000, high or 6000
        return (_instructions(variant, high) - _instructions(variant, low)) / (high - low)
    low, high = low or 20, high or 60
    counts = []
    for rounds in (low, high):
        _flush(redis_url)  # each run fills the same keys, then hits them
        counts.append(_instructions(variant, rounds, redis_url))
    return (counts[1] - counts[0]) / ((high - low) * _REDIS_HITS_PER_ROUND)


def _flush(redis_url: str) -> None:
    import redis  # noqa: PLC0415  (only for the Redis variants)

    with redis.Redis.from_url(redis_url) as client:
        client.flushdb()  # a private server, started by this run


if __name__ == "__main__":
    main()
