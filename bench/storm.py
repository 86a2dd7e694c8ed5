"""Miss storm: N clients hit cold keys of a slow handler at once; how often did it run?"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from bench import client, report, throughput, variants
from bench.procs import RedisProcess, start_server
from bench.variants import Variant

FIRST_KEY = 500_000  # far from the pages the throughput run warms


@dataclass(frozen=True, slots=True)
class Storm:
    """One storm: how many times the handler ran and the clients' latencies."""

    handler_runs: int
    latencies: list[float]
    failures: int
    not_stored: int  # keys whose handler ran again when fetched once more after the storm


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of `values`."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


def storm_variant(
    variant: Variant, redis: RedisProcess | None, args: argparse.Namespace
) -> list[Storm]:
    """Start the variant's server and release `rounds` storms, each on a new cold key."""
    redis_url = None
    if variant.uses_redis:
        if redis is None:
            raise RuntimeError("no redis-server")
        throughput.redis_flush(redis)
        redis_url = redis.url
    server, base = start_server(
        variant.kind, variant.backend, redis_url, slow_delay=args.slow_delay
    )
    storms = []
    with server:
        throughput.warm(variant, base, [FIRST_KEY - 1])  # caching works at all (else: skip)
        for index in range(args.rounds):
            first = FIRST_KEY + index * args.keys
            paths = [f"/slow/{n}" for n in range(first, first + args.keys)]
            before = client.handler_calls(base)
            latencies, statuses = client.storm(base, paths, args.clients)
            runs = client.handler_calls(base) - before
            failures = sum(status != 200 for status in statuses)
            before = client.handler_calls(base)
            client.fetch_all(base, paths)
            not_stored = client.handler_calls(base) - before
            storms.append(Storm(runs, latencies, failures, not_stored))
            print(
                f"{variant.name:<24} storm {index + 1}: handler ran {runs} times,"
                f" p50 {percentile(latencies, 50) * 1000:.0f} ms,"
                f" p99 {percentile(latencies, 99) * 1000:.0f} ms, {failures} failed,"
                f" {not_stored} not stored",
                flush=True,
            )
    return storms


def run(args: argparse.Namespace) -> str:
    """Every chosen variant in turn; returns the Markdown report."""
    try:
        chosen = variants.parse(args.variants, with_limit=False)
    except ValueError as exc:
        raise SystemExit(f"python -m bench storm: {exc}") from None
    results: dict[str, list[Storm]] = {}
    skipped: dict[str, str] = {}
    redis = None
    try:
        if any(v.uses_redis for v in chosen):
            redis = RedisProcess()
        for variant in chosen:
            reason = variant.unavailable()
            if reason is None:
                try:
                    results[variant.name] = storm_variant(variant, redis, args)
                except Exception as exc:  # a failing peer is reported, not fatal
                    print(f"{variant.name} failed: {exc}", flush=True)
                    reason = f"failed: {throughput.one_line(exc)}"
            if reason is not None:
                skipped[variant.name] = reason
                print(f"skip {variant.name}: {reason}")
    finally:
        if redis is not None:
            redis.stop()
    return render(results, skipped, args)


def render(
    results: dict[str, list[Storm]], skipped: dict[str, str], args: argparse.Namespace
) -> str:
    """The Markdown report of the storms."""
    rows = []
    for name, storms in results.items():
        latencies = [value for storm in storms for value in storm.latencies]
        rows.append(
            [
                name,
                ", ".join(str(storm.handler_runs) for storm in storms),
                f"{percentile(latencies, 50) * 1000:.0f}",
                f"{percentile(latencies, 99) * 1000:.0f}",
                f"{max(latencies, default=0.0) * 1000:.0f}",
                str(sum(storm.failures for storm in storms)),
                ", ".join(str(storm.not_stored) for storm in storms),
            ]
        )
    headers = ["variant", "handler runs per storm", "p50 ms", "p99 ms", "max ms", "failed"]
    headers.append("not stored")
    parts = [
        report.environment(
            f"{args.clients} concurrent clients (aiohttp, connections opened beforehand) per"
            f" storm on {args.keys} cold key(s); handler takes {args.slow_delay * 1000:.0f} ms;"
            f" {args.rounds} storm(s) per variant, each on new keys; latencies pooled;"
            f" ideal handler runs per storm: {args.keys}; `not stored`: keys whose handler ran"
            " again on one more request each after the storm (uncached: all of them)"
        ),
        "",
        report.table(headers, rows),
    ]
    if skipped:
        parts += ["", "Skipped:", ""] + [f"- {name}: {why}" for name, why in skipped.items()]
    return "\n".join(parts)
