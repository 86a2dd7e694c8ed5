"""Instructions per in-process hit under callgrind: cachekit's own hit cost, deterministic.

`python -m bench.hitpath_instructions [--variants limit,default-key,template-key]` calls
`bench.hitpath`'s handlers in-process (one `make_mocked_request`, reused; no sockets, no
HTTP parsing) under `valgrind --tool=callgrind`, once with `--low` and once with `--high`
hits after a few warm-up calls, and prints (instructions(high) - instructions(low)) /
(high - low): start-up cancels out. `PYTHONHASHSEED=0` pins string hashing, so a figure
repeats to within a few instructions; `python -m bench.hitpath` measures the same calls in
µs, which this machine's noise moves by more than most changes do.

To compare trees, run it from each tree's directory (`PYTHONPATH=<tree>`): the child
process imports `cachekit` and `bench` from the tree it is started in.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
from typing import Final

from aiohttp.test_utils import make_mocked_request

from bench.hitpath import build

VARIANTS: Final = ("limit", "default-key", "template-key")
_COLLECTED: Final = re.compile(rb"Collected : (\d+)")


async def _hits(variant: str, count: int) -> None:
    app, handlers = build()
    handler = handlers[variant]
    request = make_mocked_request(
        "GET", "/items/7?b=2&a=1", headers={"Host": "bench.local"}, app=app, match_info={"id": "7"}
    )
    for _ in range(3):  # fill, and the memos' first use
        await handler(request)
    for _ in range(count):
        await handler(request)


def _instructions(variant: str, count: int) -> int:
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
    parser.add_argument("--low", type=int, default=1000, help="hits of the first run")
    parser.add_argument("--high", type=int, default=6000, help="hits of the second run")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(_hits(args.child[0], int(args.child[1])))
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    for variant in args.variants.split(","):
        low, high = _instructions(variant, args.low), _instructions(variant, args.high)
        print(f"{variant:>14}: {(high - low) / (args.high - args.low):9,.0f} instructions/hit")


if __name__ == "__main__":
    main()
