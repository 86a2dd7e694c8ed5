"""Sentinel mode: settings, URL parsing, and requests that survive a primary promotion."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from aiohttp import web

from cachekit import SettingsError, cached, load_settings, setup_cache
from cachekit.backends.sentinel import SentinelStore
from tests.apps import NAMESPACE
from tests.redis_servers import MakeRedisServer, RedisSentinelSetup

SENTINEL_PASSWORD = "sentinel-only-secret"


def test_sentinel_settings_are_checked_at_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHEKIT_REDIS_MODE", "sentinel")
    monkeypatch.setenv("CACHEKIT_REDIS_URL", "redis://:secret@h1:26379,h2:26379")
    with pytest.raises(SettingsError, match="CACHEKIT_REDIS_SENTINEL_SERVICE: required") as info:
        load_settings()
    assert "secret" not in str(info.value)
    monkeypatch.setenv("CACHEKIT_REDIS_SENTINEL_SERVICE", "cache")
    assert load_settings().redis_sentinel_service == "cache"
    monkeypatch.setenv("CACHEKIT_REDIS_URL", "redis://:secret@h1:port")
    with pytest.raises(SettingsError, match="CACHEKIT_REDIS_URL: every Sentinel") as info:
        load_settings()
    assert "secret" not in str(info.value)


def test_sentinel_credentials_come_from_their_own_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CACHEKIT_REDIS_MODE", "sentinel")
    monkeypatch.setenv("CACHEKIT_REDIS_URL", "redis://:primary-secret@h1:26379")
    monkeypatch.setenv("CACHEKIT_REDIS_SENTINEL_SERVICE", "cache")
    monkeypatch.setenv("CACHEKIT_REDIS_SENTINEL_USERNAME", "watcher")
    monkeypatch.setenv("CACHEKIT_REDIS_SENTINEL_PASSWORD", "sentinel-secret")
    settings = load_settings()
    assert settings.redis_sentinel_username == "watcher"
    assert settings.redis_sentinel_password is not None
    assert settings.redis_sentinel_password.get_secret_value() == "sentinel-secret"
    assert "sentinel-secret" not in repr(settings)


async def test_sentinels_that_require_a_password(
    aiohttp_client: Any, make_redis_server: MakeRedisServer
) -> None:
    primary = make_redis_server(name="primary")
    sentinel = make_redis_server(
        name="sentinel",
        sentinel=True,
        config=(
            f"requirepass {SENTINEL_PASSWORD}\n"
            f"sentinel monitor svc {primary.host} {primary.port} 1\n"
        ),
    )
    calls = 0

    async def answers(password: str | None) -> list[str]:
        nonlocal calls
        calls = 0
        settings = load_settings(
            namespace=NAMESPACE,
            redis_mode="sentinel",
            redis_url=f"redis://{sentinel.host}:{sentinel.port}",
            redis_sentinel_service="svc",
            redis_sentinel_password=password,
            redis_timeout=0.5,
        )
        routes = web.RouteTableDef()

        @routes.get("/page")
        @cached(ttl=60)
        async def page(request: web.Request) -> web.Response:
            nonlocal calls
            calls += 1
            return web.Response(text="page")

        app = web.Application()
        app.add_routes(routes)
        setup_cache(app, settings)
        client = await aiohttp_client(app)
        replies = [await client.get("/page") for _ in range(2)]
        assert {reply.status for reply in replies} == {200}  # fail open without it
        return [reply.headers["X-Cache"] for reply in replies]

    assert await answers(None) != ["MISS", "HIT"]  # the Sentinel refused: nothing cached
    assert calls == 2
    primary.flushall()
    assert await answers(SENTINEL_PASSWORD) == ["MISS", "HIT"]
    assert calls == 1


@pytest.mark.slow
async def test_requests_keep_succeeding_across_a_primary_promotion(
    aiohttp_client: Any, redis_sentinel: RedisSentinelSetup
) -> None:
    host, port = redis_sentinel.sentinels[0]
    settings = load_settings(
        namespace=NAMESPACE,
        redis_mode="sentinel",
        redis_url=f"redis://{host}:{port}",
        redis_sentinel_service=redis_sentinel.service_name,
        redis_timeout=0.5,
        failure_cooldown=0.2,  # probe the store again soon after the switch
    )
    routes = web.RouteTableDef()
    calls = 0

    @routes.get("/page/{n}")
    @cached(ttl=60)
    async def page(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.Response(text=request.match_info["n"])

    app = web.Application()
    app.add_routes(routes)
    cache = setup_cache(app, settings)
    assert isinstance(cache.store, SentinelStore)
    client = await aiohttp_client(app)
    assert (await client.get("/page/0")).headers["X-Cache"] == "MISS"
    assert (await client.get("/page/0")).headers["X-Cache"] == "HIT"
    old_primary = redis_sentinel.primary.port

    promotion = asyncio.get_running_loop().run_in_executor(None, redis_sentinel.failover)
    seen: list[tuple[int, str]] = []
    while not promotion.done():  # requests keep flowing during the switch
        answer = await client.get("/page/0")
        seen.append((answer.status, answer.headers["X-Cache"]))
        await asyncio.sleep(0.01)
    await promotion
    print(f"\nduring the promotion: {Counter(seen)}")
    assert redis_sentinel.primary.port != old_primary
    assert seen and {status for status, _ in seen} == {200}  # failed open, never failed

    cached_again = False
    for n in range(1, 200):  # stored on the new primary and served from it
        await client.get(f"/page/{n}")
        if (await client.get(f"/page/{n}")).headers["X-Cache"] == "HIT":
            cached_again = True
            break
        await asyncio.sleep(0.05)
    assert cached_again
    with redis_sentinel.primary.client() as primary:
        assert primary.keys(f"{NAMESPACE}:e:*/page/{n}?*")  # written after the promotion
    assert (await client.get("/page/0")).headers["X-Cache"] == "HIT"  # replicated entry


@pytest.mark.slow
async def test_a_killed_primary_fails_open_until_the_replica_is_promoted(
    aiohttp_client: Any, redis_sentinel: RedisSentinelSetup
) -> None:
    host, port = redis_sentinel.sentinels[0]
    settings = load_settings(
        namespace=NAMESPACE,
        redis_mode="sentinel",
        redis_url=f"redis://{host}:{port}",
        redis_sentinel_service=redis_sentinel.service_name,
        redis_timeout=0.3,
        failure_cooldown=0.2,
    )
    routes = web.RouteTableDef()

    @routes.get("/page/{n}")
    @cached(ttl=60)
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=request.match_info["n"])

    app = web.Application()
    app.add_routes(routes)
    setup_cache(app, settings)
    client = await aiohttp_client(app)
    await client.get("/page/0")
    old_primary = redis_sentinel.primary
    old_primary.kill()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    seen: Counter[tuple[int, str]] = Counter()
    n = 0
    while loop.time() < deadline:
        n += 1
        answer = await client.get(f"/page/{n}")
        seen[(answer.status, answer.headers["X-Cache"])] += 1
        if (await client.get(f"/page/{n}")).headers["X-Cache"] == "HIT":
            break  # stored and served again: the promoted replica took over
        await asyncio.sleep(0.05)
    print(f"\nwhile the primary was down: {seen}")
    assert {status for status, _ in seen} == {200}
    assert redis_sentinel.primary_address()[1] != old_primary.port
    assert (await client.get(f"/page/{n}")).headers["X-Cache"] == "HIT"
