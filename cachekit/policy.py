"""Pure caching policy: may a request use the cache (`admit`), is a stored entry fresh
(`freshness`), may a response be stored (`storable`) and for how long (`lifetime`).

Plain functions over request and response facts, with `now` passed in: no I/O, no clock,
no aiohttp. `serving.py` executes what they decide.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from cachekit.entry import CachedResponse
from cachekit.http_dates import parse_http_date

CACHEABLE_METHODS: Final = frozenset({"GET", "HEAD"})
#: RFC 9110 §9.2.1: every other method is unsafe and invalidates (RFC 9111 §4.4).
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
DEFAULT_STATUSES: Final = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})

# RFC 9110 §7.6.1: connection-specific fields, never forwarded and so never stored.
HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Recomputed or added per response by aiohttp or by the cache itself.
NOT_STORED: Final = frozenset({"content-length", "age", "x-cache"})


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


def parse_cache_control(value: str | None) -> dict[str, str | None]:
    """Parse a Cache-Control header into lower-case directive names and optional values."""
    directives: dict[str, str | None] = {}
    if not value:
        return directives
    for part in _split_commas(value):
        name, sep, argument = part.partition("=")
        name = name.strip().lower()
        if not name:
            continue
        # A repeated directive keeps its first value (RFC 9111 §4.2.1: duplicates are invalid;
        # the first is the conservative reading used by most caches).
        directives.setdefault(name, argument.strip().strip('"') if sep else None)
    return directives


def _split_commas(value: str) -> list[str]:
    # Commas inside quoted strings (e.g. no-cache="a, b") do not separate directives; with
    # an unclosed quote every comma does, so a malformed value cannot hide a no-store.
    if value.count('"') % 2:
        return [part.strip() for part in value.split(",") if part.strip()]
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def delta_seconds(value: str | None) -> int | None:
    """A non-negative integer directive argument (RFC 9111 §1.2.2), or None when malformed."""
    if value is None or not value.isascii() or not value.isdigit():
        return None
    return int(value)


def admit(method: str, has_authorization: bool, authorization_is_keyed: bool) -> Decision:
    """May this request be answered from (and fill) the cache?"""
    if method not in CACHEABLE_METHODS:
        return Decision(False, "method")
    if has_authorization and not authorization_is_keyed:
        # RFC 9111 §3.5: a shared cache must not reuse a response to an authenticated request
        # unless the handler keyed on the credentials itself.
        return Decision(False, "authorization")
    return ALLOWED


def vary_names(vary_values: Iterable[str]) -> list[str]:
    """The lower-cased field names listed by one or more Vary header values."""
    names: list[str] = []
    for value in vary_values:
        for part in value.split(","):
            name = part.strip().lower()
            if name and name not in names:
                names.append(name)
    return names


def header_values(lines: Iterable[tuple[str, str]], name: str) -> list[str]:
    """Every value of one header (case-insensitive name), in order."""
    wanted = name.lower()
    return [value for line_name, value in lines if line_name.lower() == wanted]


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


def response_facts(status: int, lines: Sequence[tuple[str, str]]) -> ResponseFacts:
    """Parse a response's caching headers once, for `storable` and `lifetime`."""
    dates, ages = header_values(lines, "Date"), header_values(lines, "Age")
    return ResponseFacts(
        status=status,
        cache_control=parse_cache_control(", ".join(header_values(lines, "Cache-Control"))),
        vary=tuple(vary_names(header_values(lines, "Vary"))),
        set_cookie=bool(header_values(lines, "Set-Cookie")),
        expires=tuple(header_values(lines, "Expires")),
        date=dates[0] if dates else None,
        age=ages[0] if ages else None,
    )


def storable(
    facts: ResponseFacts, *, statuses: frozenset[int], body_size: int, max_entry_bytes: int
) -> Decision:
    """May this response be stored?

    A response that varies on named request headers is storable: the cache learns the
    names and keys the entry on their values. `Vary: *` can never match again.
    """
    if facts.status not in statuses:
        return Decision(False, "status")
    if facts.set_cookie:
        return Decision(False, "set-cookie")
    for directive in ("no-store", "private", "no-cache"):
        if directive in facts.cache_control:
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


def connection_listed(connection_values: Iterable[str]) -> frozenset[str]:
    """Header names that a Connection header marks as hop-by-hop for this message."""
    return frozenset(vary_names(connection_values))


def storable_headers(lines: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The header lines worth storing: end-to-end ones, in order, repeats kept."""
    materialised = list(lines)
    dropped = (
        HOP_BY_HOP
        | NOT_STORED
        | connection_listed(value for name, value in materialised if name.lower() == "connection")
    )
    return [(name, value) for name, value in materialised if name.lower() not in dropped]


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


@dataclass(frozen=True, slots=True)
class Lifetime:
    """When a response counts as stored, how long it is fresh, and its stale windows."""

    stored_at: float
    ttl: float
    grace: float
    stale_if_error: float


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
    if _no_stale_serving(facts):
        grace = if_error = 0.0
    ttl = resolve_ttl(
        configured.ttl_override, configured.ttl, declared_ttl(facts, now), configured.default_ttl
    )
    return Lifetime(now - _received_age(facts), ttl, grace, if_error)


class Freshness(enum.Enum):
    """What a stored entry is good for right now."""

    FRESH = "fresh"  # answer from it
    STALE = "stale"  # answer from it while one refresh runs (stale-while-revalidate)
    MISS = "miss"  # ask the handler (the entry may still stand in for an error)


def freshness(entry: CachedResponse | None, now: float, directives: RequestDirectives) -> Freshness:
    """Whether `entry` answers a request with these Cache-Control `directives` at `now`
    (RFC 9111 §4.2, §5.2.1). A Vary stub is no answer."""
    if entry is None or entry.vary_stub or directives.no_cache:
        return Freshness.MISS
    max_age = directives.max_age
    if now < entry.fresh_until:
        if max_age is None or entry.age(now) <= max_age:
            return Freshness.FRESH
        return Freshness.MISS
    if now < entry.stale_until and max_age is None:
        return Freshness.STALE
    return Freshness.MISS
