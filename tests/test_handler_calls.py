"""`handler_calls`: which request a decorated handler is handed, and how it is called with
another one (a narrowed clone, a clone without conditionals, a view made anew)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from cachekit import cached
from cachekit.cache import Cache
from cachekit.handler_calls import (
    call_with,
    called_as,
    find_request,
    handed,
    handed_later,
    job_for,
)
from cachekit.handler_spec import HandlerSpec
from cachekit.handler_state import HandlerState
from cachekit.ignored_query import IgnoredQuery
from cachekit.invalidation import SPEC_ATTRIBUTE
from cachekit.policy import NO_DIRECTIVES
from cachekit.storing import Job
from tests.apps import settings


async def echo(request: web.Request) -> web.Response:
    return web.Response(text=f"{request.path_qs}|{request.headers.get('If-None-Match', '-')}")


class View(web.View):
    async def get(self) -> web.Response:
        return await echo(self.request)


def state_of(ignored: IgnoredQuery | None) -> HandlerState:
    @cached(ttl=1)
    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    spec: HandlerSpec = getattr(handler, SPEC_ATTRIBUTE)
    state = Cache(settings()).handler(spec)
    return replace(state, ignored_query=ignored)


def test_the_request_is_found_among_the_arguments() -> None:
    request = make_mocked_request("GET", "/a")
    assert find_request(("self", request)) is request
    assert find_request((View(request),)) is request
    with pytest.raises(TypeError, match="takes the request"):
        find_request(("no", "request"))


async def test_call_with_hands_another_request_and_makes_a_view_anew() -> None:
    original, other = make_mocked_request("GET", "/a"), make_mocked_request("GET", "/b")
    response: Any = await call_with(echo, (original,), {}, other)()
    assert response.text == "/b|-"
    response = await call_with(View.get, (View(original),), {}, other)()
    assert response.text == "/b|-"


@pytest.mark.parametrize(
    ("target", "ignored", "handed_path"),
    [
        ("/p?a=1&utm_source=x", ("utm_*",), "/p?a=1"),
        ("/p?a=1&a=2&fbclid=z&b=", ("utm_*", "fbclid"), "/p?a=1&a=2&b="),
        ("/p?a=1", ("utm_*",), None),  # nothing to narrow: the request as it came
        ("/p?utm_source=x", None, None),  # the setting off
    ],
)
async def test_handed_narrows_the_query_on_the_default_key(
    target: str, ignored: tuple[str, ...] | None, handed_path: str | None
) -> None:
    request = make_mocked_request("GET", target)
    state = state_of(IgnoredQuery(ignored) if ignored else None)

    def call() -> Any:
        return echo(request)

    found = handed(state, request, call, lambda clone: lambda: echo(clone))
    assert found is not None
    clone, clone_call = found
    if handed_path is None:
        assert clone is request and clone_call is call
    else:
        assert clone.path_qs == handed_path and clone.match_info is request.match_info
        assert (await clone_call()).text == f"{handed_path}|-"
        later = handed_later(state, request, call, lambda clone: lambda: echo(clone))
        assert (await later()).text == f"{handed_path}|-"


async def test_a_fill_asks_without_the_clients_conditionals() -> None:
    request = make_mocked_request("GET", "/p", headers={"If-None-Match": '"v1"'})
    cache = Cache(settings())
    spec: HandlerSpec = getattr(cached(ttl=1)(echo), SPEC_ATTRIBUTE)

    def call() -> Any:
        return echo(request)

    job = Job(cache, spec, request, call, "b", "k", NO_DIRECTIVES, 0, ())
    def asks(other: web.Request) -> Any:
        return lambda: echo(other)

    job = job_for(job, asks, None)
    assert (await job.call()).text == "/p|-"
    assert job.call_with is asks and job.stale is None
    plain = make_mocked_request("GET", "/p")
    job = job_for(Job(cache, spec, plain, call, "b", "k", NO_DIRECTIVES, 0, ()), asks, None)
    assert job.call is call  # nothing to take away: the handler is called as it was


async def test_called_as_calls_the_handler_with_its_own_arguments() -> None:
    seen: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    async def handler(*args: Any, **kwargs: Any) -> web.Response:
        seen.append((args, kwargs))
        return web.Response(text="ok")

    request = make_mocked_request("GET", "/p")
    call = called_as(handler, ("view", request), {"extra": 1})
    assert seen == []  # made, not called
    response = await call()
    assert response.text == "ok" and seen == [(("view", request), {"extra": 1})]
