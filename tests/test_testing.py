"""cachekit.testing, the pytest plugin: each fixture does what its users rely on.

Written as a user's tests are: an app factory that calls `setup_cache` itself, and the
plugin's fixtures requested before the client.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from cachekit import CacheSettings, cached, get_cache, setup_cache
from cachekit.backends.memory import MemoryStore
from cachekit.testing import (
    CacheClock,
    StoreFaults,
    assert_cache,
    cache_clock,
    cache_disabled,
    cache_outcome,
    cachekit_settings,
    cachekit_store,
    store_faults,
)

__all__ = ["cache_clock", "cache_disabled", "cachekit_settings", "cachekit_store", "store_faults"]


def create_app(settings: CacheSettings | None = None, store: MemoryStore | None = None) -> Any:
    """A user's app factory: one cached handler that counts its runs."""
    runs = {"n": 0}

    @cached(ttl=60, stale_ttl=30)
    async def product(request: web.Request) -> web.Response:
        runs["n"] += 1
        return web.Response(text=f"product {request.match_info['id']} run {runs['n']}")

    app = web.Application()
    app.router.add_get("/products/{id}", product)
    setup_cache(app, settings or CacheSettings(redis_url=None), store=store)
    return app, runs


async def test_a_users_handler_misses_then_hits(
    aiohttp_client: Any, cachekit_settings: CacheSettings, cachekit_store: MemoryStore
) -> None:
    app, runs = create_app(cachekit_settings, cachekit_store)
    client = await aiohttp_client(app)
    assert_cache(await client.get("/products/1"), "MISS", reason=None)
    assert_cache(await client.get("/products/1"), "HIT")
    assert runs["n"] == 1 and len(cachekit_store) == 1


def test_settings_ignore_the_environment(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    monkeypatch.setenv("CACHEKIT_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("CACHEKIT_DEFAULT_TTL", "not a number")
    settings = request.getfixturevalue("cachekit_settings")
    assert settings.redis_url is None and settings.default_ttl == CacheSettings().default_ttl


async def test_the_clock_moves_ttls_and_age_without_sleeping(
    cache_clock: CacheClock, aiohttp_client: Any
) -> None:
    app, _runs = create_app()
    client = await aiohttp_client(app)
    await client.get("/products/1")
    cache_clock.advance(20)
    hit = await client.get("/products/1")
    assert_cache(hit, "HIT")
    assert hit.headers["Age"] == "20"
    cache_clock.advance(45)  # 65 s: past the TTL, inside the stale window
    assert_cache(await client.get("/products/1"), "STALE")
    cache_clock.advance(100)  # past the stale window too
    assert_cache(await client.get("/products/1"), "MISS")
    with pytest.raises(ValueError, match="forward"):
        cache_clock.advance(-1)


async def test_disabled_caches_run_the_handler_every_time(
    cache_disabled: None, aiohttp_client: Any
) -> None:
    app, runs = create_app()
    client = await aiohttp_client(app)
    for _ in range(3):
        response = await client.get("/products/1")
        assert "Cache-Status" not in response.headers
    assert runs["n"] == 3


@pytest.mark.parametrize("fault", ["timeout", "refuse", "damage"])
async def test_store_faults_fail_open(
    fault: str, store_faults: StoreFaults, aiohttp_client: Any
) -> None:
    app, runs = create_app()
    client = await aiohttp_client(app)
    await client.get("/products/1")  # stored
    store_faults.fail_next(2, fault)  # type: ignore[arg-type]
    answered = [await client.get("/products/1") for _ in range(2)]
    assert all(response.status == 200 for response in answered)
    assert runs["n"] >= 2  # the lookup failed: served by the handler, as without a cache
    assert store_faults.stores[0].injected == 2
    assert_cache(await client.get("/products/1"), "HIT")  # and then the store works again
    assert get_cache(app).stats()["faults_injected"] == 2


async def test_the_breaker_cool_down_follows_the_clock(
    cache_clock: CacheClock, store_faults: StoreFaults, aiohttp_client: Any
) -> None:
    app, _ = create_app(CacheSettings(redis_url=None, failure_threshold=2, failure_cooldown=30))
    client = await aiohttp_client(app)
    await client.get("/products/1")
    store_faults.fail_next(2, "timeout")
    for _ in range(2):
        await client.get("/products/1")
    cache = get_cache(app)
    assert cache.stats()["breaker_open"]
    # While open, the store is skipped: nothing new is stored.
    assert_cache(await client.get("/products/2"), "MISS", reason="not-stored")
    assert_cache(await client.get("/products/2"), "MISS", reason="not-stored")
    cache_clock.advance(31)  # past the cool-down: the next write probes the store
    assert_cache(await client.get("/products/2"), "MISS")
    assert_cache(await client.get("/products/2"), "HIT")
    assert not cache.stats()["breaker_open"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("cachekit; hit; ttl=5", ("HIT", None)),
        ("cachekit; hit; fwd=stale; ttl=-1", ("STALE", None)),
        ("cachekit; hit; fwd=stale; detail=stale-if-error; ttl=-3", ("STALE", "stale-if-error")),
        ("cachekit; fwd=miss; stored", ("MISS", None)),
        ("cachekit; fwd=miss; detail=no-store", ("MISS", "no-store")),
        ("cachekit; fwd=stale; fwd-status=304", ("REVALIDATED", None)),
        ("cachekit; fwd=bypass; detail=authorization", ("BYPASS", "authorization")),
        ("CDN; hit, cachekit; fwd=miss; stored", ("MISS", None)),
        ("other; hit", (None, None)),
        ("", (None, None)),
    ],
)
def test_cache_status_is_read_as_rfc_9211_says(value: str, expected: tuple[str, str]) -> None:
    assert cache_outcome(value) == expected


def test_assert_cache_says_what_it_saw() -> None:
    class Answer:
        headers = web.Response(headers={"Cache-Status": "cachekit; fwd=miss; stored"}).headers

    assert_cache(Answer(), "MISS")
    with pytest.raises(AssertionError, match="expected HIT, cachekit said"):
        assert_cache(Answer(), "HIT")
    with pytest.raises(AssertionError, match="expected detail=no-store"):
        assert_cache(Answer(), "MISS", reason="no-store")
