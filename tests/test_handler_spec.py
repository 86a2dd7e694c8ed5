"""`HandlerSpec.build`: a decorated handler's options, validated and compiled once."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from cachekit import policy
from cachekit.handler_spec import HandlerSpec, handler_name


async def handler(request: web.Request) -> web.Response:
    return web.Response()


def build(**options: object) -> HandlerSpec:
    values: dict[str, object] = {
        "ttl": None,
        "key": None,
        "name": None,
        "tags": (),
        "vary": (),
        "statuses": None,
        "unless": None,
    }
    values.update(options)
    return HandlerSpec.build(handler, **values)  # type: ignore[arg-type]


def test_the_default_key_varies_on_the_host_and_is_compiled() -> None:
    spec = build(vary=["Accept-Language", " accept-language"])
    assert spec.vary == ("host", "accept-language")
    request = make_mocked_request("GET", "/p?b=1&a=2", headers={"Host": "h"})
    assert spec.sync_key is not None
    assert spec.sync_key(request) == "handler:/p?a=2&b=1"
    assert not spec.authorization_keyed


def test_a_template_key_does_not_vary_on_the_host_unless_asked() -> None:
    spec = build(key="p:{match_info[id]}")
    assert spec.vary == () and spec.authorization_keyed  # the handler keys on its own
    request = make_mocked_request("GET", "/p/7", match_info={"id": "7"})
    assert spec.sync_key is not None and spec.sync_key(request) == "p:7"


def test_a_key_callable_has_no_sync_key() -> None:
    spec = build(key=lambda request: "k")
    assert spec.sync_key is None and spec.key_function is not None


def test_authorization_in_vary_makes_it_keyed() -> None:
    assert build(vary=["Authorization"]).authorization_keyed


def test_statuses_default_or_declared() -> None:
    assert build().statuses == policy.DEFAULT_STATUSES and not build().statuses_declared
    declared = build(statuses=[200, 302])
    assert declared.statuses == frozenset({200, 302}) and declared.statuses_declared


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"ttl": -1}, ValueError),
        ({"ttl": True}, ValueError),
        ({"stale_ttl": float("nan")}, ValueError),
        ({"statuses": [99]}, ValueError),
        ({"tags": "one-string"}, TypeError),
        ({"key": "{nope}"}, ValueError),
        ({"vary": [" "]}, ValueError),
    ],
)
def test_bad_options_are_refused_at_decoration(options: dict[str, object], error: type) -> None:
    with pytest.raises(error):
        build(**options)


def test_a_sync_handler_is_refused() -> None:
    def sync(request: web.Request) -> web.Response:
        return web.Response()

    with pytest.raises(TypeError, match="async handler"):
        HandlerSpec.build(
            sync,  # type: ignore[arg-type]
            ttl=None,
            key=None,
            name=None,
            tags=(),
            vary=(),
            statuses=None,
            unless=None,
        )


def test_names_of_functions_and_view_methods() -> None:
    class ProductView(web.View):
        async def get(self) -> web.Response:
            return web.Response()

    assert handler_name(handler) == "handler"
    assert handler_name(ProductView.get) == "ProductView.get"
    assert build(name="custom").name == "custom"


async def test_tags_from_a_callable_sync_or_async() -> None:
    request = make_mocked_request("GET", "/p/7", match_info={"id": "7"})

    async def async_tags(request: web.Request) -> list[str]:
        return [f"p:{request.match_info['id']}"]

    assert await build(tags=["a", "b"]).tags_for(request) == ("a", "b")
    assert await build(tags=lambda request: ["x"]).tags_for(request) == ("x",)
    assert await build(tags=async_tags).tags_for(request) == ("p:7",)
    with pytest.raises(TypeError, match="one string"):
        await build(tags=lambda request: "x").tags_for(request)
