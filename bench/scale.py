"""Scale: hit cost with 1,000 vs 1,000,000 entries in Redis; the embedded store's footprint."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

import redis

from bench import client, report
from bench.memory_footprint import make_entry
from bench.payload import SPREAD_KEYS
from bench.procs import ROOT, RedisProcess, start_server
from bench.throughput import Sample, measure
from bench.variants import BY_NAME
from bench.wrk import Wrk
from cachekit.backends.redis import RedisStore
from cachekit.entry_format import encode

NAMESPACE = "cachekit"  # what bench.server's cachekit app uses
BATCH = 10_000
LOADS = ("cachekit-redis", "cachekit-redis-spread")
MODES = ("tracemalloc", "rss")


def fill(url: str, first: int, last: int, body_size: int) -> float:
    """Store real encoded entries for items:<first..last-1> in cachekit's key layout; seconds."""
    layout = RedisStore.from_url(url, NAMESPACE, 1.0)  # for entry_key only; never connects
    began = time.monotonic()
    now = time.time()
    with redis.Redis.from_url(url) as connection:
        pipe = connection.pipeline(transaction=False)
        for n in range(first, last):
            key, entry = make_entry(n, body_size, now)
            pipe.set(layout.entry_key(key), encode(entry), px=int(entry.keep_for() * 1000))
            if len(pipe) >= BATCH:
                pipe.execute()
        pipe.execute()
    return time.monotonic() - began


def redis_facts(url: str) -> tuple[int, str]:
    """The number of keys and the used memory of a Redis server."""
    with redis.Redis.from_url(url, decode_responses=True) as connection:
        info: dict[str, Any] = connection.info("memory")
        return int(connection.dbsize()), str(info["used_memory_human"])


def check_filler(server_redis: RedisProcess, entries: int) -> None:
    """A bulk-filled entry must be served by cachekit as a hit, without the handler."""
    if entries <= SPREAD_KEYS:
        return
    server, base = start_server("cachekit", "redis", server_redis.url)
    with server:
        before = client.handler_calls(base)
        [(status, x_cache)] = client.fetch_all(base, [f"/items/{entries - 1}"])
        if status != 200 or x_cache != "HIT" or client.handler_calls(base) != before:
            raise RuntimeError(f"filled entries are not served as hits ({status}, {x_cache!r})")


def redis_scale(args: argparse.Namespace) -> str:
    """Interleave the loads over one filled Redis per size; returns a Markdown section."""
    servers: dict[int, RedisProcess] = {}
    samples: dict[tuple[int, str], list[Sample]] = {}
    facts: dict[int, str] = {}
    wrk = Wrk(args.connections)
    try:
        for entries in args.entries:
            servers[entries] = RedisProcess()
            seconds = fill(servers[entries].url, SPREAD_KEYS, entries, args.filler_body)
            print(f"filled {max(0, entries - SPREAD_KEYS):,} entries in {seconds:.1f} s")
            check_filler(servers[entries], entries)
        for round_index in range(args.rounds):
            for entries, server_redis in servers.items():
                for name in LOADS:
                    result = measure(
                        BY_NAME[name],
                        wrk,
                        server_redis,
                        args.duration,
                        args.warmup,
                        flush=False,
                        warm_keys=list(range(SPREAD_KEYS)),
                    )
                    samples.setdefault((entries, name), []).append(result)
                    label = f"{entries:,} entries, {name}"
                    report.progress(round_index, args.rounds, label, result.wrk, result.cpu_note())
                keys, memory = redis_facts(server_redis.url)
                facts[entries] = f"{keys:,} keys, {memory}"
    finally:
        for server_redis in servers.values():
            server_redis.stop()
        wrk.close()
    return render_redis(samples, facts, args)


def render_redis(
    samples: dict[tuple[int, str], list[Sample]], facts: dict[int, str], args: argparse.Namespace
) -> str:
    """The Redis table: medians per (size, load) and the ratio to the smallest size."""
    base: dict[str, float] = {}
    rows = []
    for (entries, name), results in sorted(samples.items()):
        rps = report.median([r.wrk.rps for r in results])
        base.setdefault(name, rps)
        rows.append(
            [
                f"{entries:,}",
                facts.get(entries, "-"),
                name,
                f"{rps:,.0f}",
                f"{report.median([r.wrk.p50_ms for r in results]):.2f}",
                f"{report.median([r.wrk.p99_ms for r in results]):.2f}",
                f"{rps / base[name]:.2f}x" if base[name] else "-",
                f"{report.median([r.cpu_us(r.server_cpu) for r in results]):,.0f}",
                f"{report.median([r.cpu_us(r.redis_cpu) for r in results]):,.1f}",
            ]
        )
    headers = ["entries", "redis", "load", "req/s", "p50 ms", "p99 ms", "vs smallest"]
    headers += ["server CPU us/req", "redis CPU us/req"]
    intro = (
        f"Hit cost against Redis holding N entries: the {SPREAD_KEYS:,} pages the load touches"
        f" (13 KB, stored by the handler) plus N-{SPREAD_KEYS:,} bulk-filled real entries"
        f" ({args.filler_body} B bodies, cachekit's encode() and key layout)."
        f" {args.rounds} round(s) x {args.duration:g} s, medians."
    )
    return intro + "\n\n" + report.table(headers, rows)


def memory_scale(args: argparse.Namespace) -> str:
    """Run bench.memory_footprint in fresh processes; returns a Markdown section."""
    rows = []
    budgets = sorted({args.memory_max_bytes, 1 << 31})
    for budget in budgets:
        for body in args.memory_bodies:
            result = {mode: footprint(args.memory_entries, body, budget, mode) for mode in MODES}
            traced, rss = result["tracemalloc"], result["rss"]
            kept = int(traced["kept"]) or 1
            print(f"footprint body {body} B, budget {budget:,}: {json.dumps(traced)}", flush=True)
            rows.append(
                [
                    f"{budget:,}",
                    f"{body:,}",
                    f"{int(traced['inserted']):,}",
                    f"{int(traced['kept']):,}",
                    f"{int(traced['accounted_bytes']):,}",
                    f"{int(traced['measured_bytes']):,}",
                    f"{int(rss['measured_bytes']):,}",
                    f"{traced['measured_bytes'] / kept:,.0f}",
                    f"{traced['accounted_bytes'] / kept:,.0f}",
                    f"{traced['measured_bytes'] / budget:.2f}",
                    f"{traced['measured_bytes'] / max(1, traced['accounted_bytes']):.2f}",
                ]
            )
    headers = ["memory_max_bytes", "body B", "inserted", "kept", "accounted B", "tracemalloc B"]
    headers += ["RSS delta B", "real B/entry", "accounted B/entry", "real/budget", "real/acct"]
    intro = (
        f"Embedded store (MemoryStore) after inserting {args.memory_entries:,} entries, each"
        " process fresh: `accounted` is the store's own used_bytes, `tracemalloc` the Python"
        " allocations it really holds, `RSS delta` the process's growth (includes allocator slack)."
    )
    return intro + "\n\n" + report.table(headers, rows)


def footprint(entries: int, body: int, budget: int, mode: str) -> dict[str, float]:
    """One bench.memory_footprint run in a subprocess."""
    command = [sys.executable, "-m", "bench.memory_footprint", "--entries", str(entries)]
    command += ["--body", str(body), "--max-bytes", str(budget), "--mode", mode]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=True
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run(args: argparse.Namespace) -> str:
    """The whole scale scenario (or the part not skipped); returns the Markdown report."""
    sections = [report.environment(f"entries {args.entries}, connections {args.connections}")]
    if args.skip != "redis":
        sections += ["## Redis: hit cost by size", redis_scale(args)]
    if args.skip != "memory":
        sections += ["## Embedded store: memory footprint", memory_scale(args)]
    return "\n\n".join(sections)
