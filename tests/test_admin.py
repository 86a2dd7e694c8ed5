"""The guarded admin API (`cachekit.admin.setup_admin`): the token guard answers before
routing, stats, and purges by tags, keys, handler parameters and namespace."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import pytest
from aiohttp import web

from cachekit import SettingsError, cached
from cachekit.admin import setup_admin
from cachekit.testing import assert_cache
from tests.apps import make_app

TOKEN = "t" * 40
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def site(aiohttp_client: Any) -> Any:
    calls: Counter[str] = Counter()
    routes = web.RouteTableDef()

    @routes.get("/products/{id}")
    @cached(ttl=60, tags=["products"])
    async def get_product(request: web.Request) -> web.Response:
        calls[request.match_info["id"]] += 1
        return web.Response(text=f"product {request.match_info['id']}")

    @routes.get("/page")
    @cached(ttl=60, key="page")
    async def page(request: web.Request) -> web.Response:
        calls["page"] += 1
        return web.Response(text="page")

    app, _ = make_app(routes, admin_token=TOKEN)
    setup_admin(app)
    client = await aiohttp_client(app)
    client.calls = calls
    return client


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/_cache/stats"),
        ("POST", "/_cache/purge"),
        ("GET", "/_cache/purge"),  # a known path with another method
        ("GET", "/_cache/no-such-page"),
        ("DELETE", "/_cache/"),
    ],
)
@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN[:-1]}", "Bearer \xff"],
)
async def test_without_the_token_every_path_is_the_same_401(
    site: Any, method: str, path: str, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    answer = await site.request(method, path, headers=headers)
    assert answer.status == 401
    assert await answer.json() == {"error": "unauthorized"}
    assert answer.headers["WWW-Authenticate"] == 'Bearer realm="cachekit"'
    assert TOKEN not in await answer.text()


async def test_with_the_token(site: Any) -> None:
    assert (await site.get("/_cache/no-such-page", headers=AUTH)).status == 404
    await site.get("/page")
    await site.get("/page")
    await site.get("/page", headers={"Authorization": "x"})  # keyed by the handler: a hit
    await site.get("/products/3", headers={"Authorization": "x"})
    stats = await (await site.get("/_cache/stats", headers=AUTH)).json()
    assert stats["process"]["misses"] == 1 and stats["process"]["stores"] == 1
    assert stats["handlers"]["page"] == {"results": {"hit": 2, "miss": 1}, "requests": 3}
    assert stats["handlers"]["get_product"] == {
        "results": {"bypass:authorization": 1, "hit": 0},
        "requests": 1,
    }


async def test_purges(site: Any) -> None:
    for path in ("/products/1", "/products/2", "/page"):
        await site.get(path)

    async def purge(body: Any) -> Any:
        answer = await site.post("/_cache/purge", json=body, headers=AUTH)
        assert answer.status == 200, await answer.text()
        return await answer.json()

    assert await purge({"handler": "get_product", "params": {"id": 1}}) == {
        "purged": "handler",
        "handler": "get_product",
        "entries": 1,
    }
    assert_cache(await site.get("/products/1"), "MISS")
    assert_cache(await site.get("/products/2"), "HIT")
    assert (await purge({"tags": ["products"]}))["entries"] == 2
    assert_cache(await site.get("/products/2"), "MISS")
    assert (await purge({"keys": ["page"], "soft": True}))["entries"] == 1
    assert (await purge({"namespace": True})) == {"purged": "namespace"}
    assert_cache(await site.get("/page"), "MISS")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "the body is not JSON"),
        (b"[1]", "the body must be a JSON object"),
        (b'{"tags": ["a"], "typo": 1}', "unknown fields: typo"),
        (b'{"tags": ["a"], "keys": ["b"]}', "give exactly one of tags, keys, handler, namespace"),
        (b"{}", "give exactly one of tags, keys, handler, namespace"),
        (b'{"tags": []}', "tags must be a non-empty list of non-empty strings"),
        (b'{"tags": "products"}', "tags must be a non-empty list of non-empty strings"),
        (b'{"tags": ["a"], "soft": "yes"}', "soft must be true or false"),
        (b'{"namespace": false}', "namespace must be true (and cannot be soft)"),
        (b'{"keys": ["a"], "params": {}}', "params go with handler"),
        (b'{"handler": "nope"}', "no @cached handler named 'nope' is routed in this app"),
        (b'{"handler": "get_product", "params": {"id": [1]}}', "params values must be"),
        (b'{"handler": "get_product", "params": {}}', ""),  # a missing route parameter
    ],
)
async def test_bad_purges_are_400_with_a_clear_message(
    site: Any, body: bytes, message: str
) -> None:
    answer = await site.post("/_cache/purge", data=body, headers=AUTH)
    assert answer.status == 400
    assert (await answer.json())["error"].startswith(message)


def test_it_refuses_to_mount_without_a_long_token(caplog: pytest.LogCaptureFixture) -> None:
    for token in (None, "short"):
        app, _ = make_app(web.RouteTableDef(), admin_token=token)
        with caplog.at_level(logging.DEBUG), pytest.raises(SettingsError, match="ADMIN_TOKEN"):
            setup_admin(app)
    assert "short" not in caplog.text


def test_the_token_is_never_shown_by_the_settings() -> None:
    _, cache = make_app(web.RouteTableDef(), admin_token=TOKEN)
    assert TOKEN not in repr(cache.settings) and TOKEN not in str(cache.settings.model_dump())
