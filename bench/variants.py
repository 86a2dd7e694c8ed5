"""The benchmark variants: which app, which store, hot key or keys spread over 1,000 pages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from bench import peers


@dataclass(frozen=True, slots=True)
class Variant:
    """One server configuration under load."""

    name: str
    kind: str  # a key of bench.server.BUILDERS
    backend: str  # none | memory | redis | redis-near (Redis with cachekit's near cache)
    spread: bool
    description: str
    #: wrk sends `Accept-Encoding: gzip, deflate, br` (the ratio's base is then limit-gzip).
    gzip: bool = False

    @property
    def cached(self) -> bool:
        """Whether the variant caches (so its handler must not run once warm)."""
        return self.kind not in _UNCACHED

    @property
    def base(self) -> str:
        """The variant its ratio is taken against."""
        return "limit-gzip" if self.gzip else "limit"

    @property
    def uses_redis(self) -> bool:
        """Whether the variant needs the private redis-server."""
        return self.backend.startswith("redis")

    def unavailable(self) -> str | None:
        """Why the variant cannot run here, or None."""
        return peers.missing_reason(self.kind)


_UNCACHED: Final = frozenset(
    {"limit", "uncached", "limit-gzip", "limit-pages", "limit-gzip-pages", "aiohttp-compression"}
)


def _peer(kind: str, backend: str, spread: bool = False) -> Variant:
    where = "in process" if backend == "memory" else "in the private Redis"
    keys = "1,000 keys" if spread else "one hot key"
    name = f"{kind}-{backend}" + ("-spread" if spread else "")
    return Variant(name, kind, backend, spread, f"{kind}, {where}, {keys}")


ALL: Final = (
    Variant("limit", "limit", "none", False, "prebuilt 13 KB body, no cache: the ceiling"),
    Variant("uncached", "uncached", "none", False, "real handler (2 ms upstream + JSON), no cache"),
    Variant("cachekit-memory", "cachekit", "memory", False, "@cached, embedded store, hot key"),
    Variant("cachekit-redis", "cachekit", "redis", False, "@cached, Redis, one hot key"),
    Variant("cachekit-redis-spread", "cachekit", "redis", True, "@cached, Redis, 1,000 keys"),
    Variant("cachekit-memory-spread", "cachekit", "memory", True, "@cached, embedded, 1,000 keys"),
    Variant(
        "cachekit-redis-near",
        "cachekit",
        "redis-near",
        False,
        "@cached, Redis + near cache (CACHEKIT_NEAR_CACHE_MAX_BYTES=64 MiB), one hot key",
    ),
    Variant(
        "cachekit-redis-near-spread",
        "cachekit",
        "redis-near",
        True,
        "@cached, Redis + near cache, 1,000 keys",
    ),
    Variant(
        "limit-gzip",
        "limit-gzip",
        "none",
        False,
        "prebuilt gzip bytes of the 13 KB body (Content-Encoding: gzip), no cache: the ceiling"
        " for clients sending Accept-Encoding",
        gzip=True,
    ),
    Variant(
        "limit-spread",
        "limit-pages",
        "none",
        True,
        "1,000 prebuilt 13 KB bodies, one per page, no cache: the ceiling for 1,000 keys",
    ),
    Variant(
        "limit-gzip-spread",
        "limit-gzip-pages",
        "none",
        True,
        "1,000 prebuilt gzip bodies, one per page, no cache: the ceiling for 1,000 keys"
        " and gzip clients",
        gzip=True,
    ),
    Variant(
        "aiohttp-compression",
        "aiohttp-compression",
        "none",
        False,
        "prebuilt 13 KB body with enable_compression(), no cache: gzip on every request",
        gzip=True,
    ),
    Variant(
        "cachekit-memory-gzip",
        "cachekit",
        "memory",
        False,
        "@cached (compress=gzip), embedded store, hot key, gzip clients",
        gzip=True,
    ),
    Variant(
        "cachekit-redis-gzip",
        "cachekit",
        "redis",
        False,
        "@cached (compress=gzip), Redis, one hot key, gzip clients",
        gzip=True,
    ),
    Variant(
        "cachekit-memory-spread-gzip",
        "cachekit",
        "memory",
        True,
        "@cached (compress=gzip), embedded store, 1,000 keys, gzip clients",
        gzip=True,
    ),
    Variant(
        "cachekit-redis-spread-gzip",
        "cachekit",
        "redis",
        True,
        "@cached (compress=gzip), Redis, 1,000 keys, gzip clients",
        gzip=True,
    ),
    Variant(
        "cachekit-memory-metrics",
        "cachekit-metrics",
        "memory",
        False,
        "cachekit-memory with Prometheus metrics on (metrics_path)",
    ),
    Variant(
        "cachekit-redis-metrics",
        "cachekit-metrics",
        "redis",
        False,
        "cachekit-redis with Prometheus metrics on (metrics_path)",
    ),
    _peer("aiohttp-cache", "memory"),
    _peer("aiohttp-cache", "redis"),
    _peer("aiocache", "memory"),
    _peer("aiocache", "redis"),
    _peer("cashews", "memory"),
    _peer("cashews", "redis"),
    _peer("aiohttp-cache", "redis", spread=True),
    _peer("aiocache", "redis", spread=True),
    _peer("cashews", "redis", spread=True),
)
BY_NAME: Final = {variant.name: variant for variant in ALL}
#: `python -m bench run --variants metrics`: what counting for Prometheus costs a hit.
METRICS: Final = (
    "limit",
    "cachekit-memory",
    "cachekit-memory-metrics",
    "cachekit-redis",
    "cachekit-redis-metrics",
)
#: `python -m bench run --variants gzip`: what content codings stored with entries give.
GZIP: Final = (
    "limit",
    "limit-gzip",
    "aiohttp-compression",
    "cachekit-memory",
    "cachekit-memory-gzip",
    "cachekit-redis",
    "cachekit-redis-gzip",
    "cachekit-redis-spread",
    "cachekit-redis-spread-gzip",
)
DEFAULT: Final = (
    "limit",
    "uncached",
    "cachekit-memory",
    "cachekit-redis",
    "cachekit-redis-spread",
    "cachekit-redis-near",
    "cachekit-redis-near-spread",
    "aiohttp-cache-memory",
    "aiohttp-cache-redis",
    "aiocache-memory",
    "aiocache-redis",
    "cashews-memory",
    "cashews-redis",
)


def parse(text: str, *, with_limit: bool = True) -> list[Variant]:
    """Comma-separated names, or `default` / `all`; `with_limit` adds `limit` (the ratio's
    base) when it is not named."""
    names: list[str] = []
    for part in (piece.strip() for piece in text.split(",")):
        if part == "all":
            names += [variant.name for variant in ALL]
        elif part == "default":
            names += DEFAULT
        elif part == "gzip":
            names += GZIP
        elif part == "metrics":
            names += METRICS
        elif part in BY_NAME:
            names.append(part)
        elif part:
            known = ", ".join(variant.name for variant in ALL)
            raise ValueError(
                f"unknown variant {part!r}; known: {known}, default, gzip, metrics, all"
            )
    if with_limit and "limit" not in names:
        names.insert(0, "limit")
    if with_limit and "limit-gzip" not in names and any(BY_NAME[n].gzip for n in names):
        names.insert(1, "limit-gzip")
    return [BY_NAME[name] for name in dict.fromkeys(names)]
