"""Faults under load: `python -m bench.chaos` (or `make chaos`).

Two cachekit worker processes share one 127.0.0.1 port (SO_REUSEPORT, as gunicorn's
workers do) and one private redis-server on a free loopback port. A bounded aiohttp load
loop (`--connections` concurrent clients: 90 % of requests on 200 hot keys, 10 % on new
keys, so writes keep happening) runs through three phases per fault: before, during,
after. The faults:

- `kill`:   SIGKILL redis-server, restart it on the same port after `--fault-seconds`
            (empty: every entry is gone, hits resume as keys are filled again);
- `freeze`: SIGSTOP redis-server for longer than the breaker cool-down, then SIGCONT;
- `full`:   `maxmemory` just above what is used, under `noeviction`: Redis refuses
            writes while it still answers reads (cachekit must keep serving hits).

For each phase the report gives requests, non-200 answers, client errors, p99 latency and
the hit ratio, and for each fault the seconds from its end until hits resume (the first
250 ms window after it with a hit ratio of at least half the "before" one). Every loop is
bounded in count and time; all traffic goes to 127.0.0.1.

    python -m bench.chaos                          # all three faults, ~1 minute
    python -m bench.chaos --faults kill --phase-seconds 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp
from aiohttp import web

from bench.procs import Child, free_port, http_get, redis_ping, wait_until

HOST = "127.0.0.1"
HOT_KEYS = 200
UPSTREAM_DELAY = 0.005
#: Worker settings: a short store timeout and cool-down, so a run stays short.
WORKER_ENV = {
    "CACHEKIT_REDIS_TIMEOUT": "0.1",
    "CACHEKIT_FAILURE_THRESHOLD": "5",
    "CACHEKIT_FAILURE_COOLDOWN": "1.0",
    "CACHEKIT_NAMESPACE": "chaos",
    "CACHEKIT_STATS_INTERVAL": "0",
}


# ---------------------------------------------------------------- the worker


def serve(port: int) -> None:
    """One worker: a cached handler with a 5 ms upstream, sharing `port` with the others."""
    from cachekit import cached, setup_cache  # noqa: PLC0415

    @cached(ttl=300)
    async def item(request: web.Request) -> web.Response:
        await asyncio.sleep(UPSTREAM_DELAY)
        return web.json_response({"item": request.match_info["n"], "pad": "x" * 500})

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/items/{n}", item)
    setup_cache(app)
    web.run_app(app, host=HOST, port=port, reuse_port=True, print=None, access_log=None)


# ---------------------------------------------------------------- redis under our control


class Redis:
    """A private diskless redis-server that can be killed, frozen and restarted."""

    def __init__(self) -> None:
        self.port = free_port()
        self.child = self._start()

    def _start(self) -> Child:
        command = ["redis-server", "--port", str(self.port), "--bind", HOST, "--save", ""]
        command += ["--appendonly", "no", "--daemonize", "no", "--logfile", ""]
        child = Child("chaos-redis", command)
        wait_until(lambda: redis_ping(self.port), 10, "redis-server")
        return child

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def kill(self) -> None:
        self.child.proc.kill()
        self.child.proc.wait()

    def restart(self) -> None:
        self.child.stop()
        self.child = self._start()

    def signal(self, number: int) -> None:
        os.kill(self.child.proc.pid, number)

    def command(self, *parts: str) -> bytes:
        """One command over a raw connection (RESP), its raw reply."""
        encoded = f"*{len(parts)}\r\n".encode()
        for part in parts:
            data = part.encode()
            encoded += b"$%d\r\n%s\r\n" % (len(data), data)
        with socket.create_connection((HOST, self.port), timeout=2) as connection:
            connection.sendall(encoded)
            return connection.recv(65536)

    def used_memory(self) -> int:
        reply = self.command("INFO", "memory").decode()
        for line in reply.splitlines():
            if line.startswith("used_memory:"):
                return int(line.split(":")[1])
        raise RuntimeError("no used_memory in INFO")

    def stop(self) -> None:
        self.child.stop()


# ---------------------------------------------------------------- load


@dataclass
class Sample:
    at: float
    status: int  # 0: client error
    latency: float
    hit: bool


@dataclass
class Load:
    base: str
    connections: int
    samples: list[Sample] = field(default_factory=list)
    stop: bool = False
    #: New keys count up from here: distinct for every run of the loop.
    fresh: int = field(default_factory=lambda: time.monotonic_ns() // 1000)

    async def run(self, deadline: float) -> None:
        timeout = aiohttp.ClientTimeout(total=5)
        connector = aiohttp.TCPConnector(limit=self.connections, force_close=False)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await asyncio.gather(
                *(self._client(session, deadline) for _ in range(self.connections))
            )

    async def _client(self, session: aiohttp.ClientSession, deadline: float) -> None:
        rng = random.Random()
        while not self.stop and time.monotonic() < deadline:
            if rng.random() < 0.9:
                n = rng.randrange(HOT_KEYS)
            else:
                self.fresh += 1
                n = self.fresh
            started = time.monotonic()
            try:
                async with session.get(f"{self.base}/items/{n}") as response:
                    await response.read()
                    hit = response.headers.get("X-Cache") == "HIT"
                    status = response.status
            except (aiohttp.ClientError, TimeoutError):
                status, hit = 0, False
            self.samples.append(Sample(started, status, time.monotonic() - started, hit))


def summarise(samples: list[Sample]) -> dict[str, object]:
    if not samples:
        return {"requests": 0}
    latencies = sorted(sample.latency for sample in samples)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return {
        "requests": len(samples),
        "non_200": sum(1 for s in samples if s.status not in (0, 200)),
        "client_errors": sum(1 for s in samples if s.status == 0),
        "p99_ms": round(p99 * 1000, 1),
        "hit_ratio": round(sum(s.hit for s in samples) / len(samples), 3),
    }


def seconds_to_recover(samples: list[Sample], since: float, target: float) -> float | None:
    """Seconds from `since` to the first 250 ms window with a hit ratio >= `target`."""
    window = 0.25
    start = since
    last = max((s.at for s in samples), default=since)
    while start < last:
        chunk = [s for s in samples if start <= s.at < start + window]
        if chunk and sum(s.hit for s in chunk) / len(chunk) >= target:
            return round(start - since, 2)
        start += window
    return None


# ---------------------------------------------------------------- faults


async def run_fault(
    name: str, redis: Redis, base: str, args: argparse.Namespace
) -> dict[str, Any]:
    load = Load(base, args.connections)
    phase = args.phase_seconds
    deadline = time.monotonic() + 3 * phase + args.fault_seconds + 15
    runner = asyncio.create_task(load.run(deadline))
    await asyncio.sleep(phase)
    fault_start = time.monotonic()
    if name == "kill":
        redis.kill()
        await asyncio.sleep(args.fault_seconds)
        # On this thread: a child dies with the thread that started it (PR_SET_PDEATHSIG),
        # and an executor thread ends with this run. Redis starts in well under 100 ms.
        redis.restart()
    elif name == "freeze":
        redis.signal(signal.SIGSTOP)
        await asyncio.sleep(args.fault_seconds)
        redis.signal(signal.SIGCONT)
    elif name == "full":
        used = await asyncio.to_thread(redis.used_memory)
        await asyncio.to_thread(redis.command, "CONFIG", "SET", "maxmemory-policy", "noeviction")
        await asyncio.to_thread(redis.command, "CONFIG", "SET", "maxmemory", str(used + 65536))
        await asyncio.sleep(args.fault_seconds)
        await asyncio.to_thread(redis.command, "CONFIG", "SET", "maxmemory", "0")
    fault_end = time.monotonic()
    await asyncio.sleep(2 * phase)
    load.stop = True
    await runner
    before = [s for s in load.samples if s.at < fault_start]
    during = [s for s in load.samples if fault_start <= s.at < fault_end]
    after = [s for s in load.samples if s.at >= fault_end]
    before_summary = summarise(before)
    target = 0.5 * float(cast(float, before_summary.get("hit_ratio", 0) or 0))
    return {
        "fault": name,
        "fault_seconds": round(fault_end - fault_start, 1),
        "before": before_summary,
        "during": summarise(during),
        "after": summarise(after),
        "seconds_until_hits_resume": seconds_to_recover(load.samples, fault_end, target),
    }


def render(results: list[dict[str, Any]]) -> str:
    lines = [
        "| fault | phase | requests | non-200 | client errors | p99 ms | hit ratio |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        for phase in ("before", "during", "after"):
            row = result[phase]
            lines.append(
                f"| {result['fault']} | {phase} | {row.get('requests')} | {row.get('non_200')} |"
                f" {row.get('client_errors')} | {row.get('p99_ms')} | {row.get('hit_ratio')} |"
            )
    lines.append("")
    for result in results:
        lines.append(
            f"- {result['fault']} ({result['fault_seconds']} s): hits resumed"
            f" {result['seconds_until_hits_resume']} s after the fault ended"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faults", default="kill,freeze,full")
    parser.add_argument("--phase-seconds", type=float, default=5.0)
    parser.add_argument("--fault-seconds", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    redis = Redis()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CACHEKIT_")}
    env.update(WORKER_ENV, CACHEKIT_REDIS_URL=redis.url)
    module = __spec__.name if __spec__ is not None else "bench.chaos"
    command = [sys.executable, "-m", module, "--serve", str(port)]
    workers = [Child(f"chaos-worker-{n}", command, env=env) for n in range(2)]
    base = f"http://{HOST}:{port}"
    try:
        wait_until(lambda: http_get(base + "/health") == b"ok", 20, "the workers")
        results = []
        for name in args.faults.split(","):
            results.append(asyncio.run(run_fault(name.strip(), redis, base, args)))
            if not all(worker.alive for worker in workers):
                raise RuntimeError("a worker died")
        print(render(results))
    finally:
        for worker in workers:
            worker.stop()
        redis.stop()


if __name__ == "__main__":
    main()
