"""Prometheus metrics (`pip install 'cachekit[prometheus]'`, setting `metrics_path`).

Requests are tallied per handler and result in plain integers where the request story
decides them (`HandlerState.results`), at no cost beyond that to a hit; this module turns
the tallies into `prometheus-client` counters when it syncs: at each scrape and every
`SYNC_SECONDS` in every worker, so that in prometheus-client's multiprocess mode
(`PROMETHEUS_MULTIPROC_DIR`) one scrape of any worker sees every worker, at most
`SYNC_SECONDS` late. Durations are observed when they happen (fills, store calls).

Nothing here is imported unless `metrics_path` is set.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from cachekit.settings import SettingsError

if TYPE_CHECKING:
    from cachekit.cache import Cache

SYNC_SECONDS: Final = 1.0
#: Store calls are fast; fills wait for a handler: each has buckets to match.
STORE_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
FILL_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Counters of `CacheStats` exported as they are.
PLAIN_COUNTERS: Final = ("lock_waits", "lock_timeouts")


def _prometheus() -> Any:
    try:
        return importlib.import_module("prometheus_client")
    except ImportError:
        raise SettingsError(
            "CACHEKIT_METRICS_PATH is set but prometheus-client is not installed:"
            " pip install 'cachekit[prometheus]'"
        ) from None


class Metrics:
    """This process's cachekit metrics in prometheus-client (one instance per process:
    the client's registry is global)."""

    def __init__(self) -> None:
        prometheus = self.prometheus = _prometheus()
        counter, gauge, histogram = prometheus.Counter, prometheus.Gauge, prometheus.Histogram
        self.requests = counter(
            "cachekit_requests",
            "Requests to cached handlers, by handler and result (hit, stale, revalidated,"
            " miss, collapsed, bypass) and, for bypasses and misses, the reason.",
            ["handler", "result", "reason"],
        )
        self.fill_duration = histogram(
            "cachekit_fill_duration_seconds",
            "Time the handler took on fills and refreshes.",
            ["handler"],
            buckets=FILL_BUCKETS,
        )
        self.store_duration = histogram(
            "cachekit_store_duration_seconds",
            "Time of store calls, by operation (lookup, store, lock, purge).",
            ["operation"],
            buckets=STORE_BUCKETS,
        )
        #: One child per operation, made once: `labels()` costs more than the observation.
        self.store_timers = {
            operation: self.store_duration.labels(operation)
            for operation in ("lookup", "store", "lock", "purge")
        }
        self.store_errors = counter(
            "cachekit_store_errors", "Failed store calls, by operation.", ["operation"]
        )
        self.purges = counter(
            "cachekit_purges",
            "Purges applied, by kind (tag, key, namespace, unsafe_method).",
            ["kind"],
        )
        self.plain = {
            name: counter(f"cachekit_{name}", f"Fills that {name.replace('_', ' ')}.")
            for name in PLAIN_COUNTERS
        }
        self.breaker_open = gauge(
            "cachekit_breaker_open",
            "1 while the circuit breaker skips the store.",
            multiprocess_mode="max",
        )
        self.entries = gauge(
            "cachekit_entries",
            "Entries held in this process (the embedded store, the near cache).",
            ["store"],
            multiprocess_mode="livesum",
        )
        self.memory_bytes = gauge(
            "cachekit_memory_bytes",
            "Bytes held in this process (the embedded store, the near cache).",
            ["store"],
            multiprocess_mode="livesum",
        )
        # What was last pushed, per series, so each sync adds only the difference.
        self._pushed: dict[tuple[Any, ...], int] = {}

    def sync(self, caches: Iterable[Cache]) -> None:
        """Push what the caches counted since the last sync; set the gauges."""
        open_now = 0
        for cache in caches:
            for handler, results in cache.handler_results():
                for (result, reason), count in list(results.items()):
                    series = self.requests.labels(handler, result, reason)
                    self._push(series, count, id(cache))
            stats = cache.stats()
            for name in PLAIN_COUNTERS:
                self._push(self.plain[name], int(stats[name]), id(cache), name)
            for operation, count in cache.store_errors().items():
                self._push(self.store_errors.labels(operation), count, id(cache), operation)
            open_now = max(open_now, int(stats["breaker_open"]))
            if stats.get("store") == "memory":
                self.entries.labels("memory").set(stats.get("entries", 0))
                self.memory_bytes.labels("memory").set(stats.get("memory_bytes", 0))
            if "near_entries" in stats:
                self.entries.labels("near").set(stats["near_entries"])
                self.memory_bytes.labels("near").set(stats.get("near_bytes", 0))
        self.breaker_open.set(open_now)

    def _push(self, series: Any, total: int, *identity: Any) -> None:
        key = (id(series), *identity)
        delta = total - self._pushed.get(key, 0)
        if delta > 0:
            series.inc(delta)
        self._pushed[key] = total

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition of every worker (multiprocess mode) or of this process."""
        prometheus = self.prometheus
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = prometheus.CollectorRegistry()
            importlib.import_module("prometheus_client.multiprocess").MultiProcessCollector(
                registry
            )
        else:
            registry = prometheus.REGISTRY
        return prometheus.generate_latest(registry), prometheus.CONTENT_TYPE_LATEST


_instance: Metrics | None = None


def metrics() -> Metrics:
    """The process's `Metrics`, made on first use."""
    global _instance  # noqa: PLW0603  (one registry per process)
    if _instance is None:
        _instance = Metrics()
    return _instance


def metrics_handler(cache: Cache) -> Any:
    """The aiohttp handler serving the exposition at `metrics_path`."""

    async def serve(request: web.Request) -> web.Response:
        current = metrics()
        current.sync([cache])
        body, content_type = current.exposition()
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    return serve
