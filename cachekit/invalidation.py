"""Invalidation driven by the app: unsafe methods (RFC 9111 §4.4) and purge by parameters."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy, MultiMapping
from yarl import URL

from cachekit import keys
from cachekit.backends.base import StoreError
from cachekit.guard import RateLimitedLog
from cachekit.handler_spec import HandlerSpec
from cachekit.policy import SAFE_METHODS

log = logging.getLogger("cachekit")
_failure_log = RateLimitedLog()

SPEC_ATTRIBUTE: Final = "__cachekit_spec__"


def unsafe_method_receiver(
    invalidate_tags: Callable[[web.Request], Callable[..., Awaitable[int]] | None],
) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """An `on_response_prepare` receiver that purges a path's entries after a successful
    unsafe request, before the response is sent.

    A signal rather than a middleware: aiohttp runs a middleware around every request at
    several times the cost (bench/README.md), and the signal sees the final status, also
    of a raised HTTPException.
    `invalidate_tags(request)` returns the cache's `invalidate_tags`, or None when no cache
    applies. Same-origin Location and Content-Location targets are purged too.
    """

    async def receiver(request: web.Request, response: web.StreamResponse) -> None:
        if request.method in SAFE_METHODS:
            return
        await _purge_targets(request, response, invalidate_tags(request))

    return receiver


async def _purge_targets(
    request: web.Request,
    response: web.StreamResponse,
    invalidate_tags: Callable[..., Awaitable[int]] | None,
) -> None:
    if invalidate_tags is None or not 200 <= response.status < 400:
        return
    targets = [request.rel_url]
    for name in ("Location", "Content-Location"):
        value = response.headers.get(name)
        if value:
            try:
                url = URL(value, encoded=True)
                # Same origin only (scheme, host and port): RFC 9111 §4.4.
                if not url.is_absolute() or url.origin() == request.url.origin():
                    targets.append(url)
            except ValueError:  # a malformed URL names nothing we store
                continue
    try:
        await invalidate_tags(*{keys.path_tag(target) for target in targets})
    except StoreError as exc:
        # The write itself succeeded; failing it now would only add a second problem.
        _failure_log.warning("could not purge %s after %s: %r", targets, request.method, exc)


@dataclass(frozen=True)
class _PurgeRequest:
    """Just enough of a request to rebuild a key from handler parameters."""

    match_info: Mapping[str, str]
    rel_url: URL
    host: str = ""
    scheme: str = "http"
    headers: MultiMapping[str] = field(default_factory=lambda: CIMultiDictProxy(CIMultiDict()))


def spec_of(handler: Callable[..., Any]) -> HandlerSpec:
    """The caching spec of a `@cached` handler (or view method); TypeError otherwise."""
    spec = getattr(handler, SPEC_ATTRIBUTE, None)
    if not isinstance(spec, HandlerSpec):
        raise TypeError(f"{handler!r} is not decorated with @cached")
    return spec


def handler_base_key(
    handler: Callable[..., Any], router: web.UrlDispatcher | None, params: Mapping[str, str]
) -> str:
    """The base key a GET of `handler`'s route with these parameters (no query) uses."""
    spec = spec_of(handler)
    if spec.key_function is not None:
        raise TypeError(
            f"{spec.name} builds keys with a callable, which cannot be inverted:"
            " purge it by tag (cache.invalidate_tags) instead"
        )
    url = _route_url(handler, router, params) if spec.template is None else URL("/")
    request = _PurgeRequest(match_info=dict(params), rel_url=url)
    if spec.template is not None:
        return spec.template.render(request)
    return keys.default_key(spec.name, url)


def _route_url(
    handler: Callable[..., Any], router: web.UrlDispatcher | None, params: Mapping[str, str]
) -> URL:
    for resource in router.resources() if router is not None else ():
        for route in resource:
            served = route.handler
            view_method = getattr(served, getattr(handler, "__name__", ""), None)
            if served is handler or (isinstance(served, type) and view_method is handler):
                # Parsed as aiohttp parses a request target, so the key matches a GET's.
                return URL(resource.url_for(**params).raw_path, encoded=True)
    raise LookupError(f"no route of this app serves {spec_of(handler).name}")
