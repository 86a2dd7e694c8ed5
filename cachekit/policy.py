"""Pure caching policy: may a request use the cache, may a response be stored, for how long."""

from __future__ import annotations

import email.utils
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

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


def parse_http_date(value: str | None) -> float | None:
    """An HTTP-date as a POSIX timestamp, or None when absent or malformed."""
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed.timestamp()


def request_decision(
    method: str, has_authorization: bool, authorization_is_keyed: bool
) -> Decision:
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


def storable_decision(
    status: int,
    lines: Sequence[tuple[str, str]],
    *,
    statuses: frozenset[int],
    body_size: int,
    max_entry_bytes: int,
) -> Decision:
    """May a response with this status, these header lines and body size be stored?

    A response that varies on named request headers is storable: the cache learns the
    names and keys the entry on their values. `Vary: *` can never match again.
    """
    cache_control = parse_cache_control(", ".join(header_values(lines, "Cache-Control")))
    vary = vary_names(header_values(lines, "Vary"))
    if status not in statuses:
        return Decision(False, "status")
    if header_values(lines, "Set-Cookie"):
        return Decision(False, "set-cookie")
    for directive in ("no-store", "private", "no-cache"):
        if directive in cache_control:
            return Decision(False, directive)
    if "*" in vary:
        return Decision(False, "vary-star")
    if body_size > max_entry_bytes:
        return Decision(False, "too-large")
    return ALLOWED


def response_ttl(lines: Sequence[tuple[str, str]], now: float) -> float | None:
    """Freshness lifetime the response itself declares (RFC 9111 §4.2.1), if any."""
    cache_control = parse_cache_control(", ".join(header_values(lines, "Cache-Control")))
    for directive in ("s-maxage", "max-age"):
        if directive in cache_control:
            seconds = delta_seconds(cache_control[directive])
            if seconds is not None:
                return float(seconds)
    expires = header_values(lines, "Expires")
    if expires:
        expires_at = parse_http_date(expires[0])
        # An invalid Expires (e.g. "0") means already expired (RFC 9111 §5.3).
        if expires_at is None:
            return 0.0
        dates = header_values(lines, "Date")
        date = parse_http_date(dates[0]) if dates else None
        if date is None:
            date = now
        return max(0.0, expires_at - date)
    return None


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
    cache_control = parse_cache_control(", ".join(header_values(lines, "Cache-Control")))
    return not cache_control.keys().isdisjoint({"must-revalidate", "proxy-revalidate", "s-maxage"})


def received_age(lines: Sequence[tuple[str, str]]) -> float:
    """The Age the response already had when the handler returned it (RFC 9111 §4.2.3)."""
    values = header_values(lines, "Age")
    seconds = delta_seconds(values[0].strip()) if values else None
    return float(seconds) if seconds is not None else 0.0


def response_stale_windows(lines: Sequence[tuple[str, str]]) -> tuple[float | None, float | None]:
    """`stale-while-revalidate` and `stale-if-error` the response declares (RFC 5861)."""
    cache_control = parse_cache_control(", ".join(header_values(lines, "Cache-Control")))
    windows = []
    for directive in ("stale-while-revalidate", "stale-if-error"):
        seconds = delta_seconds(cache_control.get(directive))
        windows.append(None if seconds is None else float(seconds))
    return windows[0], windows[1]
