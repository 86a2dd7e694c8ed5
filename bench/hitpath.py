"""Micro-benchmark of the hit path in one process: what cachekit adds to a trivial handler.

`python -m bench.hitpath [--profile]` calls a decorated handler directly with a prepared
request object (no sockets, no HTTP parsing), so the figure is cachekit's own cost per hit,
to compare with the whole per-request budget wrk measures.

`python -m bench.hitpath --redis` compares stores instead: rounds of 32 concurrent hits
(`asyncio.gather`, as 32 wrk connections would issue them) on the embedded store, on one
hot Redis key and spread over 1,000 Redis keys (a private redis-server on a free loopback
port), reporting this process's CPU time per hit (user + system: the Redis round trips'
socket work included). Every loop is bounded by its round count.

`--send` also sends every hit as the server would: `prepare` and `write_eof` through
aiohttp's own `StreamWriter` into a transport that drops the bytes, so the cost of the
status line and header block is counted. `--off blocks,heads,...` runs with per-process
memos emptied of budget or shortcuts turned off (`OFF_SWITCHES`); `--compare` runs every
such configuration, each in a fresh process, one after another, and prints them side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib
import pstats
import random
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final

from aiohttp import web
from aiohttp.http import StreamWriter
from aiohttp.test_utils import make_mocked_request

from bench.handlers import json_response
from bench.payload import page_body
from bench.procs import RedisProcess
from cachekit import CacheSettings, cached, setup_cache

BODY = page_body(7)
ROUNDS = 5
CALLS = 20_000


def build() -> tuple[web.Application, dict[str, Callable[[web.Request], Awaitable[object]]]]:
    """An app with the limit handler and a cached one (memory store)."""

    async def limit(request: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="application/json")

    @cached(ttl=3600)
    async def item(request: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="application/json")

    @cached(ttl=3600, key="item:{match_info[id]}")
    async def item_by_template(request: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="application/json")

    app = web.Application()
    setup_cache(app, CacheSettings(redis_url=None, invalidate_on_unsafe=False))
    return app, {"limit": limit, "default-key": item, "template-key": item_by_template}


async def measure(profile: bool) -> None:
    """Print µs per call for each handler, best of several rounds."""
    app, handlers = build()
    request = make_mocked_request(
        "GET",
        "/items/7?b=2&a=1",
        headers={"Host": "bench.local"},
        app=app,
        match_info={"id": "7"},
    )
    for handler in handlers.values():
        await handler(request)  # fill
    results = {}
    for name, handler in handlers.items():
        best = float("inf")
        for _ in range(ROUNDS):
            started = time.perf_counter()
            for _ in range(CALLS):
                await handler(request)
            best = min(best, (time.perf_counter() - started) / CALLS)
        results[name] = best * 1e6
    for name, micros in results.items():
        extra = micros - results["limit"]
        print(f"{name:>14}: {micros:6.2f} µs/call  (+{extra:5.2f} µs over limit)")
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(CALLS):
            await handlers["default-key"](request)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(18)


CONCURRENT: Final = 32
KEYS: Final = 1_000
CONCURRENT_ROUNDS: Final = 300


class _Dropping:
    """A transport (and its protocol) that takes every write and keeps only a count."""

    def __init__(self) -> None:
        self.transport = self
        self._paused = False
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def writelines(self, chunks: Iterable[bytes]) -> None:
        for chunk in chunks:
            self.written += len(chunk)

    def is_closing(self) -> bool:
        return False


async def _sent(request: web.Request, response: web.StreamResponse, sink: _Dropping) -> None:
    # Each response gets a new writer, as aiohttp gives each request one.
    request._payload_writer = StreamWriter(sink, asyncio.get_running_loop())  # type: ignore[arg-type]
    await response.prepare(request)
    await response.write_eof()


async def cpu_per_concurrent_hit(
    redis_url: str | None,
    spread: bool,
    send: bool,
    *,
    rounds: int = CONCURRENT_ROUNDS,
    passes: int = ROUNDS,
    redis_timeout: float = 0.25,
) -> float:
    """Best CPU µs per hit over `passes` of `rounds` rounds of `CONCURRENT` concurrent hits
    (after one unmeasured pass)."""
    app = web.Application()
    settings = CacheSettings(
        redis_url=redis_url,
        namespace="hitpath",
        invalidate_on_unsafe=False,
        redis_timeout=redis_timeout,
    )
    setup_cache(app, settings)

    @cached(ttl=3600, key="items:{match_info[n]}")
    async def item(request: web.Request) -> web.Response:
        return json_response(page_body(int(request.match_info["n"])))

    sink = _Dropping()

    async def hit(request: web.Request) -> web.StreamResponse:
        response = await item(request)
        if send:
            await _sent(request, response, sink)
        return response

    app.router.add_get("/items/{n}", item)
    app.freeze()
    await app.startup()
    try:
        requests = [
            make_mocked_request("GET", f"/items/{n}", app=app, match_info={"n": str(n)})
            for n in range(KEYS if spread else 1)
        ]
        for request in requests:
            await item(request)  # fill
        picks = random.Random(7)
        best = float("inf")
        for measured in (False, *([True] * passes)):
            started = time.process_time()
            for _ in range(rounds):
                batch = [picks.choice(requests) for _ in range(CONCURRENT)]
                responses = await asyncio.gather(*(hit(request) for request in batch))
            if measured:
                spent = time.process_time() - started
                best = min(best, spent / (rounds * CONCURRENT))
            if any(response.headers.get("X-Cache") != "HIT" for response in responses):
                raise RuntimeError("a hit was expected")
        return best * 1e6
    finally:
        await app.cleanup()


def measure_stores(send: bool) -> None:
    """Print CPU µs per concurrent hit: embedded store, hot Redis key, 1,000 Redis keys."""
    with RedisProcess() as redis_server:
        cases = {
            "memory, hot key": (None, False),
            "redis, hot key": (redis_server.url, False),
            f"redis, {KEYS:,} keys": (redis_server.url, True),
        }
        print(f"{CONCURRENT} concurrent hits per round, best of {ROUNDS} x {CONCURRENT_ROUNDS}")
        for name, (url, spread) in cases.items():
            micros = asyncio.run(cpu_per_concurrent_hit(url, spread, send))
            print(f"{name:>17}: {micros:6.2f} µs CPU per hit", flush=True)


def _replace(module_name: str, attribute: str, make: Callable[[Any], Any]) -> Callable[[], None]:
    """A switch that sets `module.attribute` to `make(its value)`; imported only when used,
    so that the benchmark also runs against code without these names (a before/after)."""

    def switch() -> None:
        module = importlib.import_module(module_name)
        setattr(module, attribute, make(getattr(module, attribute)))

    return switch


def _memo_off(kept: Any) -> Any:
    from cachekit.memo import BoundedMemo  # noqa: PLC0415 (see `_replace`)

    return BoundedMemo(kept.name, 0)  # keeps nothing


#: What `--off` can switch off: per-process memos (their budget set to 0) and shortcuts.
OFF_SWITCHES: Final[dict[str, Callable[[], None]]] = {
    "blocks": _replace("cachekit.responses", "_BLOCKS", _memo_off),
    "heads": _replace("cachekit.entry", "_HEADS", _memo_off),
    "names": _replace("cachekit.entry", "_HEADER_NAMES", _memo_off),
    "wire": _replace("cachekit.aiohttp_internals", "WIRE_WORKS", lambda _: False),
    "template": _replace("cachekit.aiohttp_internals", "RESPONSE_TEMPLATE", lambda _: None),
}
#: The configurations `--compare` runs, each in its own process.
COMPARED: Final = ("", "blocks", "wire", "blocks,wire", "template", "heads", "names")


def _switch_off(names: str) -> None:
    for name in filter(None, names.split(",")):
        if name not in OFF_SWITCHES:
            raise SystemExit(f"--off: unknown {name!r}; known: {', '.join(OFF_SWITCHES)}")
        OFF_SWITCHES[name]()


def compare(send: bool, rounds: int) -> None:
    """Run `--redis` once per configuration in `COMPARED` and round, each in a fresh process
    (configurations interleaved, so that drift of the machine hits all alike); print every
    figure and the best per configuration."""
    figures: dict[str, dict[str, list[float]]] = {names: {} for names in COMPARED}
    for round_number in range(rounds):
        for names in COMPARED:
            command = [sys.executable, "-m", "bench.hitpath", "--redis", "--off", names]
            done = subprocess.run(
                [*command, "--send"] if send else command,
                check=True,
                capture_output=True,
                text=True,
            )
            for line in done.stdout.splitlines():
                case, _, rest = line.partition(":")
                if rest.endswith("µs CPU per hit"):
                    micros = float(rest.split()[0])
                    figures[names].setdefault(case.strip(), []).append(micros)
            print(f"round {round_number + 1}, off: {names or '-'}: {figures[names]}", flush=True)
    cases = list(figures[""])
    print(f"\nbest of {rounds} (µs CPU per hit; --send: {send})")
    print("| off | " + " | ".join(cases) + " |")
    print("| --- |" + " ---: |" * len(cases))
    for names, by_case in figures.items():
        best = (f"{min(by_case[case]):.2f}" for case in cases)
        print(f"| {names or 'nothing'} | " + " | ".join(best) + " |")


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", action="store_true", help="print a cProfile of hits")
    parser.add_argument("--redis", action="store_true", help="compare stores (see above)")
    parser.add_argument("--send", action="store_true", help="also send each hit (see above)")
    parser.add_argument("--off", default="", help=f"comma list of {', '.join(OFF_SWITCHES)}")
    parser.add_argument("--compare", action="store_true", help="every `--off` configuration")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of `--compare`")
    args = parser.parse_args()
    if args.compare:
        compare(args.send, args.rounds)
    elif args.redis:
        _switch_off(args.off)
        measure_stores(args.send)
    else:
        _switch_off(args.off)
        asyncio.run(measure(args.profile))


if __name__ == "__main__":
    main()
