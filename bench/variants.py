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

    @property
    def cached(self) -> bool:
        """Whether the variant caches (so its handler must not run once warm)."""
        return self.kind not in {"limit", "uncached"}

    @property
    def uses_redis(self) -> bool:
        """Whether the variant needs the private redis-server."""
        return self.backend.startswith("redis")

    def unavailable(self) -> str | None:
        """Why the variant cannot run here, or None."""
        return peers.missing_reason(self.kind)


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
        elif part in BY_NAME:
            names.append(part)
        elif part:
            known = ", ".join(variant.name for variant in ALL)
            raise ValueError(f"unknown variant {part!r}; known: {known}, default, all")
    if with_limit and "limit" not in names:
        names.insert(0, "limit")
    return [BY_NAME[name] for name in dict.fromkeys(names)]
