"""The main run: every variant under wrk, interleaved over rounds, medians against `limit`."""

from __future__ import annotations

from dataclasses import dataclass, field

import redis as redis_client

from bench import client, report
from bench.payload import SPREAD_KEYS
from bench.procs import Child, RedisProcess, start_server
from bench.variants import Variant
from bench.wrk import Wrk, WrkResult

HOT_KEY = 1


@dataclass(frozen=True, slots=True)
class Sample:
    """One measurement: wrk's numbers, upstream calls, and the CPU the processes used."""

    wrk: WrkResult
    handler_runs: int
    server_cpu: float  # seconds of CPU the server used during the measured load
    redis_cpu: float  # the same for redis-server (0.0 without Redis)
    per_mget: float | None = None  # cachekit on Redis: requests per lookup batch (MGET)

    def cpu_us(self, seconds: float) -> float:
        """CPU microseconds per request."""
        return seconds / self.wrk.requests * 1e6 if self.wrk.requests else 0.0

    def cpu_note(self) -> str:
        """CPU per request, for progress lines."""
        note = f"server {self.cpu_us(self.server_cpu):.0f} us/req"
        if self.redis_cpu:
            note += f", redis {self.cpu_us(self.redis_cpu):.1f} us/req"
        if self.per_mget is not None:
            note += f", {self.per_mget:.1f} req/MGET"
        return note


@dataclass
class Outcome:
    """Every measured round of one variant, or why it was skipped."""

    variant: Variant
    samples: list[Sample] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    skipped: str | None = None


def one_line(exc: BaseException) -> str:
    """An exception as one line: its first line and, when different, its last."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()] or [
        type(exc).__name__
    ]
    return lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"


def keys_of(variant: Variant, spread_keys: int = SPREAD_KEYS) -> list[int]:
    """The page numbers a variant's load touches (all of them are warmed first)."""
    return list(range(spread_keys)) if variant.spread else [HOT_KEY]


def warm(variant: Variant, base: str, keys: list[int]) -> None:
    """One request per key, then check that a second pass never reaches the handler."""
    paths = [f"/items/{n}" for n in keys]
    bad = [status for status, _ in client.fetch_all(base, paths) if status != 200]
    if bad:
        raise RuntimeError(f"warm-up got HTTP {sorted(set(bad))}")
    if not variant.cached:
        return
    before = client.handler_calls(base)
    second = client.fetch_all(base, paths)
    ran = client.handler_calls(base) - before
    if ran:
        raise RuntimeError(f"not caching: the handler ran {ran} times for warmed keys")
    if variant.kind.startswith("cachekit") and any(x_cache != "HIT" for _, x_cache in second):
        raise RuntimeError("cachekit did not answer HIT for warmed keys")


def measure(
    variant: Variant,
    wrk: Wrk,
    redis: RedisProcess | None,
    duration: float,
    warmup: float,
    *,
    flush: bool = True,
    warm_keys: list[int] | None = None,
) -> Sample:
    """One round of one variant: fresh server, warm-up, then the measured wrk run.

    `flush` empties Redis first; `warm_keys` overrides the pages requested beforehand."""
    redis_url = None
    if variant.uses_redis:
        if redis is None:
            raise RuntimeError("no redis-server")
        if flush:
            redis_flush(redis)
        redis_url = redis.url
    server: Child
    server, base = start_server(variant.kind, variant.backend, redis_url)
    with server:
        warm(variant, base, keys_of(variant) if warm_keys is None else warm_keys)
        spread = SPREAD_KEYS if variant.spread else 0
        if warmup > 0:
            wrk.run(base, warmup, spread, gzip=variant.gzip)  # unmeasured: load settles
        before = client.counters(base)
        cpu = server.cpu_seconds(), redis.cpu_seconds() if redis_url and redis else 0.0
        result = wrk.run(base, duration, spread, gzip=variant.gzip)
        cpu_after = server.cpu_seconds(), redis.cpu_seconds() if redis_url and redis else 0.0
        after = client.counters(base)
        if not server.alive:
            raise RuntimeError(f"server died under load:\n{server.log_tail()}")
    runs = after["calls"] - before["calls"]
    batches = after.get("lookup_batches", 0) - before.get("lookup_batches", 0)
    per_mget = result.requests / batches if batches else None
    return Sample(result, runs, cpu_after[0] - cpu[0], cpu_after[1] - cpu[1], per_mget)


def redis_flush(redis: RedisProcess) -> None:
    """Empty the private Redis between variants, so each starts from the same state."""
    with redis_client.Redis.from_url(redis.url) as connection:
        connection.flushall()


def run(
    variants: list[Variant], rounds: int, duration: float, connections: int, warmup: float
) -> str:
    """Measure, print progress, and return the Markdown report."""
    outcomes = {variant.name: Outcome(variant) for variant in variants}
    for variant in variants:
        reason = variant.unavailable()
        if reason is not None:
            outcomes[variant.name].skipped = reason
            print(f"skip {variant.name}: {reason}")
    wrk = Wrk(connections)
    redis = None
    try:
        if any(v.uses_redis and outcomes[v.name].skipped is None for v in variants):
            redis = RedisProcess()
        for round_index in range(rounds):
            shift = round_index % len(variants)  # no variant always goes first
            order = variants[shift:] + variants[:shift]
            for variant in order:
                outcome = outcomes[variant.name]
                if outcome.skipped is not None:
                    continue
                try:
                    sample = measure(variant, wrk, redis, duration, warmup)
                except Exception as exc:  # a peer that fails is skipped, never fatal
                    failure = f"round {round_index + 1} failed: {one_line(exc)}"
                    print(f"{variant.name}: {failure}\n{exc}", flush=True)
                    outcome.failures.append(failure)
                    if not outcome.samples:  # never worked: do not try again
                        outcome.skipped = failure
                    continue
                outcome.samples.append(sample)
                report.progress(round_index, rounds, variant.name, sample.wrk, sample.cpu_note())
    finally:
        if redis is not None:
            redis.stop()
        wrk.close()
    return render(list(outcomes.values()), rounds, duration, connections, warmup)


def render(
    outcomes: list[Outcome], rounds: int, duration: float, connections: int, warmup: float
) -> str:
    """The Markdown report: medians per variant and the ratio to `limit`."""
    bases = {
        o.variant.name: report.median([s.wrk.rps for s in o.samples])
        for o in outcomes
        if o.variant.name in ("limit", "limit-gzip") and o.samples
    }
    rows = []
    for outcome in outcomes:
        if outcome.skipped is not None or not outcome.samples:
            continue
        samples = outcome.samples
        rps = [s.wrk.rps for s in samples]
        redis_us = report.median([s.cpu_us(s.redis_cpu) for s in samples])
        per_mget = [s.per_mget for s in samples if s.per_mget is not None]
        rows.append(
            [
                outcome.variant.name,
                f"{report.median(rps):,.0f}",
                f"{min(rps):,.0f}-{max(rps):,.0f}",
                f"{report.median([s.wrk.p50_ms for s in samples]):.2f}",
                f"{report.median([s.wrk.p99_ms for s in samples]):.2f}",
                (
                    f"{report.median(rps) / bases[outcome.variant.base]:.2f}x"
                    + (" (of limit-gzip)" if outcome.variant.gzip else "")
                    if bases.get(outcome.variant.base)
                    else "-"
                ),
                f"{report.median([s.cpu_us(s.server_cpu) for s in samples]):,.0f}",
                f"{redis_us:,.0f}" if outcome.variant.uses_redis else "-",
                f"{report.median(per_mget):.1f}" if per_mget else "-",
                str(sum(s.handler_runs for s in samples)),
                str(sum(s.wrk.errors + s.wrk.bad_status for s in samples)),
            ]
        )
    headers = ["variant", "req/s", "req/s range", "p50 ms", "p99 ms", "vs limit"]
    headers += ["server CPU us/req", "redis CPU us/req", "requests per MGET", "handler runs"]
    headers += ["errors"]
    parts = [
        report.environment(
            f"{rounds} round(s) x {duration:g} s per variant (after {warmup:g} s unmeasured),"
            f" wrk -t1 -c{connections},"
            f" 13 KB JSON body, spread over {SPREAD_KEYS:,} keys; medians over rounds"
        ),
        "",
        report.table(headers, rows),
    ]
    skipped = [o for o in outcomes if o.skipped is not None]
    if skipped:
        parts += ["", "Skipped:", ""]
        parts += [f"- {o.variant.name}: {o.skipped}" for o in skipped]
    partial = [o for o in outcomes if o.skipped is None and o.failures]
    if partial:
        parts += ["", "Rounds that failed (the medians use the others):", ""]
        parts += [f"- {o.variant.name}: {'; '.join(o.failures)}" for o in partial]
    parts += [
        "",
        "`server CPU us/req`: CPU time of the server process during the measured load divided"
        " by its requests (from /proc; less sensitive to other work on the machine than req/s);"
        " `redis CPU us/req` the same for redis-server; `requests per MGET`: how many requests"
        " cachekit's Redis variants answered per lookup round trip (the batching).",
        "",
        "Variants:",
        "",
    ]
    parts += [f"- {o.variant.name}: {o.variant.description}" for o in outcomes]
    return "\n".join(parts)
