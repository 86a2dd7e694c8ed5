"""How a decorated handler is called: with the request it was given, or with another one.

A fill asks the handler with a clone of the client's request when the key calls for it:
without the ignored query parameters on the default key (`handed`: the key is built from
that same narrowed URL, so the handler sees exactly what the key says), and without the
client's conditionals and Range (`job_for`: a fill's answer is shared); a revalidation
asks with a conditional clone (`call_with`). A `web.View` is made anew around the clone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web

from cachekit.entry import CachedResponse
from cachekit.handler_state import HandlerState
from cachekit.ignored_query import narrowed_request
from cachekit.revalidation import unconditional_request
from cachekit.storing import Call, Job

Handler = Callable[..., Awaitable[web.StreamResponse]]


def job_for(
    job: Job,
    call_with: Callable[[web.Request], Call],
    entry: CachedResponse | None,
) -> Job:
    """`job`, able to ask the handler with other requests: to revalidate `entry`, and
    without the client's conditionals and Range (`unconditional_request`): a fill's answer
    is stored and shared, so it must be the whole representation, never a 304 or a part
    meant for one client."""
    job.stale = entry
    job.call_with = call_with
    plain = unconditional_request(job.request)
    if plain is not job.request and plain is not None:
        job.call = call_with(plain)
    return job


def called_as(handler: Handler, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call:
    """The handler as it was called (a lambda is cheaper than a partial). Made off the hit
    path: a closure over `args` in the decorated handler would make them cells for every
    request."""
    return lambda: handler(*args, **kwargs)


def call_with(
    handler: Handler, args: tuple[Any, ...], kwargs: dict[str, Any], request: web.Request
) -> Call:
    """The handler bound to `request` in place of the one it was called with (a web.View
    is made anew around it): how a revalidation asks with a conditional clone."""
    swapped = tuple(
        request
        if isinstance(arg, web.BaseRequest)
        else type(arg)(request)
        if isinstance(arg, web.View)
        else arg
        for arg in args
    )
    return lambda: handler(*swapped, **kwargs)


def handed(
    state: HandlerState, request: web.Request, call: Call, call_with: Callable[[web.Request], Call]
) -> tuple[web.Request, Call] | None:
    """The request the handler is handed for this key, and the call that hands it over:
    on the default key, a clone of `request` less its ignored query parameters (the key
    was built from that same narrowed URL: `IgnoredQuery.apply`); else `request` and
    `call` as they are. None when aiohttp cannot clone it (a body already read)."""
    ignored = state.ignored_query
    narrowed = ignored.apply(request.rel_url) if ignored is not None else None
    if narrowed is None:
        return request, call
    clone = narrowed_request(request, narrowed)
    return None if clone is None else (clone, call_with(clone))


def handed_later(
    state: HandlerState, request: web.Request, call: Call, call_with: Callable[[web.Request], Call]
) -> Call:
    """`handed`'s call, made when it runs (a request that joined a fill runs the handler
    only when the fill's answer cannot be shared; then nothing is stored, so a request
    aiohttp cannot clone is handed as it is)."""

    def later() -> Awaitable[web.StreamResponse]:
        found = handed(state, request, call, call_with)
        return (call if found is None else found[1])()

    return later


def find_request(args: tuple[Any, ...]) -> web.Request:
    """The request among a handler's arguments (a `web.View`'s, for a view method)."""
    for arg in reversed(args):
        if isinstance(arg, web.BaseRequest):
            return cast(web.Request, arg)
        if isinstance(arg, web.View):
            return arg.request
    raise TypeError("a @cached handler takes the request (or is a web.View method)")
