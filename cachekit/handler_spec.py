"""What `@cached` knows about one handler, compiled once at decoration time."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from cachekit import encodings, keys, policy
from cachekit.ignored_query import IgnoredQuery
from cachekit.settings import handler_setting_name
from cachekit.url_memo import default_key, narrowed_default_key

KeyFunction = Callable[[web.Request], str | Awaitable[str]]
KeySpec = str | KeyFunction | None
TagFunction = Callable[[web.Request], Iterable[str] | Awaitable[Iterable[str]]]
TagSpec = Iterable[str] | TagFunction


def handler_name(handler: Callable[..., Any]) -> str:
    """`get_product` for a function, `ProductView.get` for a view method."""
    qualname: str = getattr(handler, "__qualname__", None) or handler.__name__
    return qualname.rpartition("<locals>.")[2]


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """A decorated handler's caching options, validated and pre-compiled."""

    name: str
    setting_name: str
    ttl: float | None
    stale_ttl: float | None
    stale_if_error: float | None
    template: keys.KeyTemplate | None
    key_function: KeyFunction | None
    tags: tuple[str, ...]
    tag_function: TagFunction | None
    vary: tuple[str, ...]
    statuses: frozenset[int]
    unless: Callable[[web.Request], bool | Awaitable[bool]] | None
    emit_cache_control: bool | None = None
    honor_request_cache_control: bool | None = None
    #: Whether the handler keys on credentials itself (so Authorization may be cached).
    authorization_keyed: bool = False
    #: The base key in one call, for templates and default keys (None: a key callable).
    sync_key: Callable[[web.Request], str] | None = None
    #: Whether the decorator named `statuses` (then only those are stored).
    statuses_declared: bool = False
    #: Content codings to store this handler's responses in (None: the `compress` setting).
    compress: tuple[str, ...] | None = None
    #: The part of its default keys naming the handler (None: it has a `key` of its own).
    default_prefix: str | None = None

    @classmethod
    def build(
        cls,
        handler: Callable[..., Any],
        *,
        ttl: float | None,
        stale_ttl: float | None = None,
        stale_if_error: float | None = None,
        key: KeySpec,
        name: str | None,
        tags: TagSpec,
        vary: Iterable[str],
        statuses: Iterable[int] | None,
        unless: Callable[[web.Request], bool | Awaitable[bool]] | None,
        emit_cache_control: bool | None = None,
        honor_request_cache_control: bool | None = None,
        compress: str | Iterable[str] | None = None,
    ) -> HandlerSpec:
        """Validate the decorator's arguments; raises ValueError/TypeError at import time."""
        if not inspect.iscoroutinefunction(handler):
            raise TypeError(f"@cached needs an async handler, got {handler!r}")
        for label, seconds in (
            ("ttl", ttl),
            ("stale_ttl", stale_ttl),
            ("stale_if_error", stale_if_error),
        ):
            if seconds is not None and (isinstance(seconds, bool) or not seconds >= 0):
                raise ValueError(f"{label} must be a non-negative number of seconds: {seconds!r}")
        resolved_name = name or handler_name(handler)
        status_set = frozenset(policy.DEFAULT_STATUSES if statuses is None else statuses)
        if not all(isinstance(code, int) and 100 <= code <= 599 for code in status_set):
            raise ValueError(f"statuses must be HTTP status codes, got {sorted(status_set)!r}")
        if isinstance(tags, str):
            raise TypeError("tags must be a list of strings or a callable, not one string")
        vary_names = keys.normalise_header_names(["host", *vary] if key is None else vary)
        template = keys.KeyTemplate(key) if isinstance(key, str) else None
        sync_key: Callable[[web.Request], str] | None = None
        default_prefix = keys.default_key_prefix(resolved_name) if key is None else None
        if template is not None:
            sync_key = template.compiled()
        elif default_prefix is not None:
            sync_key = functools.partial(default_key, default_prefix)
        return cls(
            name=resolved_name,
            setting_name=handler_setting_name(resolved_name),
            ttl=ttl,
            stale_ttl=stale_ttl,
            stale_if_error=stale_if_error,
            template=template,
            key_function=key if callable(key) else None,
            tags=() if callable(tags) else tuple(tags),
            tag_function=tags if callable(tags) else None,
            # RFC 9111 §4: the target URI, host included, is part of the default key. As a
            # key suffix (not in the base) it still lets purges reach every host's copy.
            vary=vary_names,
            statuses=status_set,
            unless=unless,
            emit_cache_control=emit_cache_control,
            honor_request_cache_control=honor_request_cache_control,
            authorization_keyed="authorization" in vary_names or key is not None,
            sync_key=sync_key,
            statuses_declared=statuses is not None,
            compress=None
            if compress is None
            else encodings.parse_codings(compress if isinstance(compress, str) else list(compress)),
            default_prefix=default_prefix,
        )

    def key_ignoring(self, ignored: IgnoredQuery | None) -> Callable[[web.Request], str] | None:
        """`sync_key`, with default keys left without the query parameters `ignored` names
        (the handler is then called without them: see `serving`)."""
        if ignored is None or self.default_prefix is None:
            return self.sync_key
        return functools.partial(narrowed_default_key, self.default_prefix, ignored)

    async def base_key(self, request: web.Request) -> str:
        """The logical key of this request before any Vary suffix (without ignored query
        parameters: `key_ignoring` gives the key of a handler on the default key)."""
        if self.template is not None:
            return self.template.render(request)
        if self.key_function is not None:
            produced = self.key_function(request)
            if inspect.isawaitable(produced):
                produced = await produced
            if not isinstance(produced, str):
                raise TypeError(f"key callable of {self.name} returned {produced!r}")
            return keys.escape_light(produced)
        return keys.default_key(self.name, request.rel_url)

    async def tags_for(self, request: web.Request) -> tuple[str, ...]:
        """The tags to record with an entry stored for this request."""
        if self.tag_function is None:
            return self.tags
        produced = self.tag_function(request)
        if inspect.isawaitable(produced):
            produced = await produced
        if isinstance(produced, str):
            raise TypeError(f"tags callable of {self.name} returned one string, not a list")
        return tuple(produced)
