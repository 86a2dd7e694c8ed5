"""What one cache resolved for one handler: its settings, and the Vary it learned."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from aiohttp import web

from cachekit import encodings, policy
from cachekit.ignored_query import IgnoredQuery, compiled
from cachekit.settings import CacheSettings

if TYPE_CHECKING:
    from cachekit.handler_spec import HandlerSpec

#: Bounds on the request headers one URL's responses may vary on beyond the declared ones.
LEARNED_VARY_MAX_NAMES: Final = 16
VARY_NAME_MAX_CHARS: Final = 64


@dataclass(slots=True)
class HandlerState:
    """What one cache resolved for one handler, once: the settings that apply to it, and
    the request headers it declared its responses vary on (`vary`; a URL whose responses
    name more leaves a Vary stub at its key: `varied_names`)."""

    vary: tuple[str, ...]
    emit_cache_control: bool
    honor_request_cache_control: bool
    configured: policy.Configured
    #: Content codings its compressible entries are stored in, those this process has.
    codings: tuple[str, ...] = ()
    #: The query parameters its default keys leave out (None: none, or not on the default
    #: key: a template or key callable says itself what it keys on).
    ignored_query: IgnoredQuery | None = None
    #: Its base key in one call (`HandlerSpec.key_ignoring`); None: a key callable.
    sync_key: Callable[[web.Request], str] | None = None
    #: Fresh hits answered (the hot path's own counter), and every other result by
    #: (result, reason): what `cachekit_requests_total` reports per handler.
    hits: int = 0
    results: dict[tuple[str, str], int] = field(default_factory=dict)
    #: Handler calls made by fills and refreshes, and the seconds they took in all.
    fills: int = 0
    fill_seconds: float = 0.0


def resolve_handler(settings: CacheSettings, spec: HandlerSpec) -> HandlerState:
    """What the settings and the decorator make of one handler, before any Vary is learned."""
    emit, honor = spec.emit_cache_control, spec.honor_request_cache_control
    configured = policy.Configured(
        ttl_override=settings.ttl_override(spec.name),
        ttl=spec.ttl,
        default_ttl=settings.default_ttl,
        stale_ttl_override=settings.stale_ttl_override(spec.name),
        stale_ttl=spec.stale_ttl,
        default_stale_ttl=settings.stale_ttl,
        stale_if_error=spec.stale_if_error,
        default_stale_if_error=settings.stale_if_error,
        heuristic_max_ttl=settings.heuristic_max_ttl if settings.heuristic_freshness else None,
    )
    ignored = compiled(settings.ignore_query_params) if spec.default_prefix is not None else None
    return HandlerState(
        vary=spec.vary,
        emit_cache_control=emit if emit is not None else settings.emit_cache_control,
        honor_request_cache_control=(
            honor if honor is not None else settings.honor_request_cache_control
        ),
        configured=configured,
        codings=encodings.usable(spec.compress if spec.compress is not None else settings.compress),
        ignored_query=ignored,
        sync_key=spec.key_ignoring(ignored),
    )


def varied_names(declared: tuple[str, ...], names: Iterable[str]) -> tuple[str, ...] | None:
    """The names a response's keys vary on: the declared ones, then the others its `Vary`
    names, sorted (so every process builds the same key). None (do not store, do not
    serve) past `LEARNED_VARY_MAX_NAMES` names or `VARY_NAME_MAX_CHARS` characters a name.

    Per URL, never per handler: a Vary one URL answers with changes nothing for the
    handler's other URLs (RFC 9111 §4.1 is about one stored response and its request).
    """
    extra = set(names) - set(declared)
    if not extra:
        return declared
    if len(extra) > LEARNED_VARY_MAX_NAMES or any(
        len(name) > VARY_NAME_MAX_CHARS for name in extra
    ):
        return None
    return declared + tuple(sorted(extra))
