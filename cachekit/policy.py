"""Pure caching policy: may a request use the cache (`admit`), is a stored entry fresh
(`freshness`), may a response be stored (`storable`) and for how long (`lifetime`).

Plain functions over request and response facts, with `now` passed in: no I/O, no clock,
no aiohttp. `serving.py` executes what they decide.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from cachekit.directives import (
    delta_seconds,
    header_values,
    parse_cache_control,
    targeted_directives,
    vary_names,
)
from cachekit.entry import CachedResponse
from cachekit.http_dates import parse_http_date

CACHEABLE_METHODS: Final = frozenset({"GET", "HEAD"})
#: RFC 9110 §9.2.1: every other method is unsafe and invalidates (RFC 9111 §4.4).
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
DEFAULT_STATUSES: Final = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})


@dataclass(frozen=True, slots=True)
class RequestDirectives:
    """The request's Cache-Control directives a server-side cache honours when asked to."""

    no_cache: bool = False
    no_store: bool = False
    max_age: int | None = None
    only_if_cached: bool = False


NO_DIRECTIVES: Final = RequestDirectives()


def request_directives(cache_control: str | None) -> RequestDirectives:
    """Parse a request's Cache-Control (RFC 9111 §5.2.1) into what the cache acts on."""
    if not cache_control:
        return NO_DIRECTIVES
    parsed = parse_cache_control(cache_control)
    return RequestDirectives(
        no_cache="no-cache" in parsed,
        no_store="no-store" in parsed,
        max_age=delta_seconds(parsed["max-age"]) if "max-age" in parsed else None,
        only_if_cached="only-if-cached" in parsed,
    )


@dataclass(frozen=True, slots=True)
class Decision:
    """A yes/no with the reason, so `Cache-Status` and debug logs can say why."""

    allowed: bool
    reason: str = ""


ALLOWED: Final = Decision(True)


def admit(method: str, has_authorization: bool, authorization_is_keyed: bool) -> Decision:
    """May this request be answered from (and fill) the cache?"""
    if method not in CACHEABLE_METHODS:
        return Decision(False, "method")
    if has_authorization and not authorization_is_keyed:
        # RFC 9111 §3.5: a shared cache must not reuse a response to an authenticated request
        # unless the handler keyed on the credentials itself.
        return Decision(False, "authorization")
    return ALLOWED


@dataclass(frozen=True, slots=True)
class ResponseFacts:
    """What the decisions read of a response, parsed once (`response_facts`)."""

    status: int
    cache_control: Mapping[str, str | None]
    vary: tuple[str, ...]
    set_cookie: bool
    expires: tuple[str, ...]
    date: str | None
    age: str | None
    last_modified: str | None = None
    #: The response's own ETag (the first line), if it set one.
    etag: str | None = None

    @property
    def has_validator(self) -> bool:
        """Whether the response carries a validator of its own to revalidate it with."""
        return bool(self.etag) or parse_http_date(self.last_modified) is not None


def response_facts(
    status: int, lines: Sequence[tuple[str, str]], targeted: str | None = None
) -> ResponseFacts:
    """Parse a response's caching headers once, for `storable` and `lifetime`. With
    `targeted` (a field such as `CDN-Cache-Control`, RFC 9213), its directives replace
    Cache-Control's when the response carries it and it is valid."""
    dates, ages = header_values(lines, "Date"), header_values(lines, "Age")
    modified = header_values(lines, "Last-Modified")
    etags = header_values(lines, "ETag")
    cache_control = targeted_directives(lines, targeted) if targeted else None
    if cache_control is None:
        cache_control = parse_cache_control(", ".join(header_values(lines, "Cache-Control")))
    return ResponseFacts(
        status=status,
        cache_control=cache_control,
        vary=tuple(vary_names(header_values(lines, "Vary"))),
        set_cookie=bool(header_values(lines, "Set-Cookie")),
        expires=tuple(header_values(lines, "Expires")),
        date=dates[0] if dates else None,
        age=ages[0] if ages else None,
        last_modified=modified[0] if len(modified) == 1 else None,
        etag=etags[0] if etags else None,
    )


def storable(
    facts: ResponseFacts,
    *,
    statuses: frozenset[int],
    body_size: int,
    max_entry_bytes: int,
    statuses_declared: bool = False,
) -> Decision:
    """May this response be stored?

    `statuses` (declared on the decorator, or cachekit's defaults) are stored; with the
    defaults, so is any final status the response gives explicit freshness (RFC 9111 §3).
    A response that varies on named request headers is storable: the cache learns the
    names and keys the entry on their values. `Vary: *` can never match again.
    """
    if facts.status not in statuses and (statuses_declared or not _explicitly_fresh(facts)):
        return Decision(False, "status")
    if facts.set_cookie:
        return Decision(False, "set-cookie")
    cache_control = facts.cache_control
    for directive in ("no-store", "private", "no-cache"):
        if directive in cache_control:
            if directive == "no-store" and _understood_despite_no_store(facts):
                continue
            # no-cache: stored to be revalidated before every reuse (RFC 9111 §5.2.2.4),
            # which needs a validator of the handler's; without one a copy saves nothing.
            # The qualified form (`no-cache="Set-Cookie"`) is treated as the plain one.
            if directive == "no-cache" and facts.has_validator:
                continue
            return Decision(False, directive)
    if "*" in facts.vary:
        return Decision(False, "vary-star")
    if body_size > max_entry_bytes:
        return Decision(False, "too-large")
    return ALLOWED


def storable_decision(
    status: int,
    lines: Sequence[tuple[str, str]],
    *,
    statuses: frozenset[int],
    body_size: int,
    max_entry_bytes: int,
) -> Decision:
    """`storable` for raw header lines."""
    facts = response_facts(status, lines)
    return storable(facts, statuses=statuses, body_size=body_size, max_entry_bytes=max_entry_bytes)


#: Statuses whose caching rules cachekit implements (RFC 9111 §5.2.2.3 must-understand).
UNDERSTOOD_STATUSES: Final = DEFAULT_STATUSES


def _explicitly_fresh(facts: ResponseFacts) -> bool:
    # A final status, not a partial or a validation answer (cachekit stores neither).
    if facts.status < 200 or facts.status in (206, 304):
        return False
    cache_control = facts.cache_control
    return bool(facts.expires) or any(
        delta_seconds(cache_control.get(name)) is not None for name in ("s-maxage", "max-age")
    )


def _understood_despite_no_store(facts: ResponseFacts) -> bool:
    return "must-understand" in facts.cache_control and facts.status in UNDERSTOOD_STATUSES


def declared_ttl(facts: ResponseFacts, now: float) -> float | None:
    """Freshness lifetime the response itself declares (RFC 9111 §4.2.1), if any."""
    cache_control = facts.cache_control
    for directive in ("s-maxage", "max-age"):
        if directive in cache_control:
            seconds = delta_seconds(cache_control[directive])
            if seconds is not None:
                return float(seconds)
    if facts.expires:
        # An invalid Expires (e.g. "0", another format, two lines) means already expired
        # (RFC 9111 §5.3).
        expires_at = parse_http_date(facts.expires[0], now) if len(facts.expires) == 1 else None
        if expires_at is None:
            return 0.0
        date = parse_http_date(facts.date, now)
        if date is None:
            date = now
        return max(0.0, expires_at - date)
    return None


def response_ttl(lines: Sequence[tuple[str, str]], now: float) -> float | None:
    """`declared_ttl` for raw header lines."""
    return declared_ttl(response_facts(0, lines), now)


def resolve_ttl(
    override: float | None,
    decorator_ttl: float | None,
    declared_ttl: float | None,
    default_ttl: float,
) -> float:
    """TTL precedence: operator override > decorator > response headers > default."""
    for candidate in (override, decorator_ttl, declared_ttl):
        if candidate is not None:
            return max(0.0, candidate)
    return max(0.0, default_ttl)


def revalidation_required(lines: Sequence[tuple[str, str]]) -> bool:
    """must-revalidate, proxy-revalidate or s-maxage: a shared cache may not serve the
    response stale (RFC 9111 §4.2.4, §5.2.2.2, §5.2.2.8, §5.2.2.10)."""
    return _no_stale_serving(response_facts(0, lines))


def _no_stale_serving(facts: ResponseFacts) -> bool:
    return not facts.cache_control.keys().isdisjoint(
        {"must-revalidate", "proxy-revalidate", "s-maxage"}
    )


def received_age(lines: Sequence[tuple[str, str]]) -> float:
    """The Age the response already had when the handler returned it (RFC 9111 §4.2.3)."""
    return _received_age(response_facts(0, lines))


def _received_age(facts: ResponseFacts) -> float:
    # A list (`Age: 7200, 0`) or several lines: the first value counts (RFC 9111 §5.1).
    first = facts.age.split(",", 1)[0].strip() if facts.age is not None else None
    seconds = delta_seconds(first)
    return float(seconds) if seconds is not None else 0.0


def response_stale_windows(lines: Sequence[tuple[str, str]]) -> tuple[float | None, float | None]:
    """`stale-while-revalidate` and `stale-if-error` the response declares (RFC 5861)."""
    return _stale_windows(response_facts(0, lines))


def _stale_windows(facts: ResponseFacts) -> tuple[float | None, float | None]:
    windows = []
    for directive in ("stale-while-revalidate", "stale-if-error"):
        seconds = delta_seconds(facts.cache_control.get(directive))
        windows.append(None if seconds is None else float(seconds))
    return windows[0], windows[1]


@dataclass(frozen=True, slots=True)
class Configured:
    """The lifetimes the operator (`override`s, defaults) and the decorator set; None where
    they leave it to the response's headers or to the next default."""

    ttl_override: float | None
    ttl: float | None
    default_ttl: float
    stale_ttl_override: float | None
    stale_ttl: float | None
    default_stale_ttl: float
    stale_if_error: float | None
    default_stale_if_error: float
    #: Longest heuristic freshness; None: no heuristic (RFC 9111 §4.2.2).
    heuristic_max_ttl: float | None = None


@dataclass(frozen=True, slots=True)
class Lifetime:
    """When a response counts as stored, how long it is fresh, and its stale windows."""

    stored_at: float
    ttl: float
    grace: float
    stale_if_error: float
    #: Never fresh: `ttl` is then how long the entry is kept for revalidation.
    no_cache: bool = False


#: How long a `no-cache` entry is kept for revalidation when nothing else gives it a
#: lifetime (e.g. `default_ttl=0` in front of an origin): every reuse asks the handler
#: anyway, so keeping it longer only saves renders; the store's own bound still applies.
NO_CACHE_KEEP_SECONDS: Final = 3600.0


def lifetime(facts: ResponseFacts, configured: Configured, now: float) -> Lifetime:
    """How long a storable response stays fresh and servable stale (precedence in
    `resolve_ttl`); an Age it arrived with counts towards its freshness."""
    declared_grace, declared_if_error = _stale_windows(facts)
    grace = resolve_ttl(
        configured.stale_ttl_override,
        configured.stale_ttl,
        declared_grace,
        configured.default_stale_ttl,
    )
    if_error = resolve_ttl(
        None, configured.stale_if_error, declared_if_error, configured.default_stale_if_error
    )
    no_cache = "no-cache" in facts.cache_control
    if no_cache or _no_stale_serving(facts):
        grace = if_error = 0.0
    declared = declared_ttl(facts, now)
    if declared is None and configured.heuristic_max_ttl is not None:
        declared = heuristic_ttl(facts, configured.heuristic_max_ttl, now)
    ttl = resolve_ttl(configured.ttl_override, configured.ttl, declared, configured.default_ttl)
    if no_cache:
        return Lifetime(now, ttl if ttl > 0 else NO_CACHE_KEEP_SECONDS, 0.0, 0.0, True)
    return Lifetime(now - _received_age(facts), ttl, grace, if_error)


def heuristic_ttl(facts: ResponseFacts, max_ttl: float, now: float) -> float | None:
    """10 % of `Date - Last-Modified`, at most `max_ttl`, for a response without explicit
    freshness whose status is cacheable by default or which is marked `public` (RFC 9111
    §4.2.2); None when it has no valid Last-Modified."""
    if facts.status not in DEFAULT_STATUSES and "public" not in facts.cache_control:
        return None
    modified = parse_http_date(facts.last_modified, now)
    if modified is None:
        return None
    date = parse_http_date(facts.date, now)
    elapsed = (now if date is None else date) - modified
    return min(max(0.0, 0.1 * elapsed), max_ttl)


class Freshness(enum.Enum):
    """What a stored entry is good for right now."""

    FRESH = "fresh"  # answer from it
    STALE = "stale"  # answer from it while one refresh runs (stale-while-revalidate)
    MISS = "miss"  # ask the handler (the entry may still stand in for an error)


#: The members as plain module constants: reading `Freshness.FRESH` goes through the enum
#: class's attribute lookup, several times the cost of a global.
_FRESH: Final = Freshness.FRESH
_STALE: Final = Freshness.STALE
_MISS: Final = Freshness.MISS


def freshness(entry: CachedResponse | None, now: float, directives: RequestDirectives) -> Freshness:
    """Whether `entry` answers a request with these Cache-Control `directives` at `now`
    (RFC 9111 §4.2, §5.2.1). A Vary stub is no answer."""
    if entry is None or entry.vary_stub or directives.no_cache:
        return _MISS
    max_age = directives.max_age
    if now < entry.fresh_until:
        if max_age is None or entry.age(now) <= max_age:
            return _FRESH
        return _MISS
    if now < entry.stale_until and max_age is None:
        return _STALE
    return _MISS
