"""Parsing of the header fields caching decisions read: Cache-Control (and its targeted
variants, RFC 9213), Vary, Connection, delta-seconds. Pure functions over header lines."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Final

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


_SF_KEY: Final = re.compile(r"[a-z*][a-z0-9_.*-]*")


_SF_VALUE: Final = re.compile(
    r'-?\d{1,15}(\.\d{1,3})?|[A-Za-z*][A-Za-z0-9:/!#$%&\'*+.^_`|~-]*|"[^"\\]*"|\?[01]'
)


def targeted_directives(
    lines: Sequence[tuple[str, str]], field: str
) -> dict[str, str | None] | None:
    """The directives of a targeted Cache-Control field (RFC 9213), or None when the
    response has none or it is not a valid Structured Fields Dictionary (then ignored)."""
    values = header_values(lines, field)
    if not values:
        return None
    directives: dict[str, str | None] = {}
    for member in ",".join(values).split(","):
        name, sep, value = member.strip(" \t").partition("=")
        if not _SF_KEY.fullmatch(name) or (sep and not _SF_VALUE.fullmatch(value)):
            return None
        if value == "?1" or not sep:
            directives.setdefault(name, None)
        elif value != "?0":
            directives.setdefault(name, value.strip('"'))
    return directives or None


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
