"""Purges handed to the app (`on_purge`) and tags handed to a CDN (`surrogate_key_header`)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import fakeredis
import pytest
from aiohttp import ClientSession, web

from cachekit import Purge, cached, setup_cache
from cachekit.backends.redis import RedisStore
from cachekit.purging import PurgeNotifier
from cachekit.tagging import surrogate_key, surrogate_keys_line
from tests.apps import NAMESPACE, settings

ITEM = web.AppKey("item", Any)


def catalogue(calls: list[str]) -> web.Application:
    routes = web.RouteTableDef()

    @routes.get("/items/{n}")
    @cached(ttl=60, tags=["items", "shop ünïcode,tag"])
    async def item(request: web.Request) -> web.Response:
        calls.append(request.match_info["n"])
        return web.Response(text="item", headers={"Cache-Tag": "from-handler"})

    @routes.post("/items/{n}")
    async def write(request: web.Request) -> web.Response:
        return web.Response(text="written")

    app = web.Application()
    app.add_routes(routes)
    app[ITEM] = item
    return app


@pytest.fixture(params=["memory", "fakeredis"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def attach(app: web.Application, kind: str, **kwargs: Any) -> Any:
    store = RedisStore(fakeredis.FakeAsyncRedis(), NAMESPACE, 2.0) if kind == "fakeredis" else None
    overrides = kwargs.pop("settings", {})
    return setup_cache(app, settings(**overrides), store=store, **kwargs)


async def test_every_purge_reaches_the_hook_after_it_is_applied(
    aiohttp_client: Any, store_kind: str
) -> None:
    purges: list[Purge] = []
    app = catalogue([])

    async def hook(purge: Purge) -> None:
        purges.append(purge)

    cache = attach(app, store_kind, on_purge=hook)
    client = await aiohttp_client(app)
    await client.get("/items/1")
    assert await cache.invalidate_tags("items") == 1
    await cache.invalidate(app[ITEM], soft=True, n="1")
    await cache.invalidate("product:9")
    await cache.clear()
    assert (await client.post("/items/1")).status == 200
    assert purges[:4] == [
        Purge("tag", tags=("items",)),
        Purge("key", keys=(purges[1].keys[0],), soft=True),
        Purge("key", keys=("product:9",)),
        Purge("namespace"),
    ]
    assert purges[1].keys[0].startswith("item:/items/1?")
    assert purges[4].kind == "unsafe_method" and purges[4].tags == ("path:/items/1",)
    assert cache.stats()["purge_hook_errors"] == 0


async def test_a_hook_sees_the_purge_applied(aiohttp_client: Any, store_kind: str) -> None:
    """When the hook runs, the purged entry is no longer served (a CDN that refetches at
    once gets a fresh answer); a plain function works as a hook too."""
    app = catalogue([])
    answers: list[str] = []
    cache = attach(app, store_kind)
    client = await aiohttp_client(app)
    await client.get("/items/1")
    assert (await client.get("/items/1")).headers["X-Cache"] == "HIT"
    looked_up: list[asyncio.Task[Any]] = []

    def hook(purge: Purge) -> None:
        looked_up.append(asyncio.ensure_future(client.get("/items/1")))

    cache.purges.hook = hook
    await cache.invalidate_tags("items")
    answers.append((await looked_up[0]).headers["X-Cache"])
    assert answers == ["MISS"]


async def test_a_failing_or_hanging_hook_never_fails_the_purge(
    aiohttp_client: Any, store_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = catalogue([])

    async def failing(purge: Purge) -> None:
        raise RuntimeError("CDN said 503")

    cache = attach(app, store_kind, on_purge=failing)
    client = await aiohttp_client(app)
    await client.get("/items/1")
    with caplog.at_level(logging.WARNING, logger="cachekit"):
        assert await cache.invalidate_tags("items") == 1
    assert "CDN said 503" in caplog.text
    response = await client.post("/items/1")  # the unsafe-method purge calls it too
    assert response.status == 200 and await response.text() == "written"
    assert cache.stats()["purge_hook_errors"] == 2

    async def hanging(purge: Purge) -> None:
        await asyncio.sleep(3600)

    cache.purges = PurgeNotifier(hanging, timeout=0.1)
    assert await cache.invalidate_tags("items") == 0
    assert cache.stats()["purge_hook_errors"] == 1


async def test_a_hook_forwards_tags_to_a_cdn(aiohttp_client: Any, aiohttp_server: Any) -> None:
    """The README's example: a CDN purge endpoint (a fake one on loopback) gets the tags,
    spelled as the surrogate-key header spelled them."""
    received: list[dict[str, Any]] = []

    async def cdn_purge(request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == "Bearer cdn-token"
        received.append(await request.json())
        return web.json_response({"status": "ok"})

    cdn = web.Application()
    cdn.router.add_post("/service/purge", cdn_purge)
    cdn_server = await aiohttp_server(cdn)
    app = catalogue([])
    session = ClientSession()

    async def forward_to_cdn(purge: Purge) -> None:
        if not purge.tags:
            return
        async with session.post(
            cdn_server.make_url("/service/purge"),
            json={"surrogate_keys": [surrogate_key(tag) for tag in purge.tags]},
            headers={"Authorization": "Bearer cdn-token"},
        ) as answer:
            answer.raise_for_status()

    cache = setup_cache(
        app, settings(surrogate_key_header="Surrogate-Key"), on_purge=forward_to_cdn
    )
    try:
        client = await aiohttp_client(app)
        response = await client.get("/items/1")
        header = response.headers["Surrogate-Key"].split(" ")
        await cache.invalidate_tags("shop ünïcode,tag")
        assert received == [{"surrogate_keys": ["shop%20%C3%BCn%C3%AFcode%2Ctag"]}]
        assert received[0]["surrogate_keys"][0] in header
        assert cache.stats()["purge_hook_errors"] == 0
    finally:
        await session.close()


@pytest.mark.parametrize(
    ("header", "separator"),
    [("Surrogate-Key", " "), ("Cache-Tag", ","), ("Edge-Cache-Tag", ",")],
)
async def test_tagged_responses_carry_their_tags_to_the_cdn(
    aiohttp_client: Any, store_kind: str, header: str, separator: str
) -> None:
    calls: list[str] = []
    app = catalogue(calls)
    attach(app, store_kind, settings={"surrogate_key_header": header})
    client = await aiohttp_client(app)
    miss = await client.get("/items/1")
    hit = await client.get("/items/1")
    assert (miss.headers["X-Cache"], hit.headers["X-Cache"]) == ("MISS", "HIT")
    for response in (miss, hit):
        assert len(response.headers.getall(header)) == 1
        tags = response.headers[header].split(separator)
        assert set(tags) == {
            "items",
            "shop%20%C3%BCn%C3%AFcode%2Ctag",
            "from-handler",
            "path:/items/1",
        }
    assert calls == ["1"]


async def test_no_surrogate_header_unless_configured(aiohttp_client: Any) -> None:
    app = catalogue([])
    setup_cache(app, settings())
    client = await aiohttp_client(app)
    response = await client.get("/items/1")
    assert "Surrogate-Key" not in response.headers
    assert "Cache-Tag" not in response.headers  # the handler's, meant for the cache only


@pytest.mark.parametrize(
    ("tag", "key"),
    [
        ("product:7", "product:7"),
        ("a b", "a%20b"),
        ("a,b", "a%2Cb"),
        ("50%", "50%25"),
        ('say "hi"', "say%20%22hi%22"),
        ("é", "%C3%A9"),
        ("line\nbreak", "line%0Abreak"),
    ],
)
def test_surrogate_keys_are_single_tokens(tag: str, key: str) -> None:
    assert surrogate_key(tag) == key


def test_distinct_tags_stay_distinct_in_the_header() -> None:
    tags = ["a b", "a%20b", "a,b", "a%2Cb"]
    _, value = surrogate_keys_line("Cache-Tag", tags)
    assert len(set(value.split(","))) == 4
