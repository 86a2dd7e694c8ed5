"""Conditional requests (RFC 9110 §13): validators, If-None-Match, If-Modified-Since, 304."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from cachekit.directives import header_values
from cachekit.http_dates import parse_http_date

# RFC 9110 §15.4.5: the fields a 304 carries over from the response it stands for.
NOT_MODIFIED_FIELDS: Final = frozenset(
    {"cache-control", "content-location", "date", "etag", "expires", "vary"}
)


def parse_etags(value: str) -> list[str] | None:
    """The entity-tags of an If-None-Match value; None means `*` (any current entity)."""
    if value.strip() == "*":
        return None
    tags: list[str] = []
    rest = value.strip()
    while rest:
        weak = rest.startswith("W/")
        body = rest[2:] if weak else rest
        if not body.startswith('"'):
            # Not an entity-tag: skip to the next comma (lenient, as browsers send junk).
            _, _, rest = rest.partition(",")
            rest = rest.strip()
            continue
        end = body.find('"', 1)
        if end < 0:
            break
        tags.append(("W/" if weak else "") + body[: end + 1])
        rest = body[end + 1 :].lstrip().removeprefix(",").lstrip()
    return tags


def opaque(tag: str) -> str:
    """The opaque part of an entity-tag, used for weak comparison."""
    return tag.removeprefix("W/")


def none_match(if_none_match: str, etag: str) -> bool:
    """True when If-None-Match fails, i.e. the client already has `etag` (weak compare)."""
    tags = parse_etags(if_none_match)
    if tags is None:
        return True
    return opaque(etag) in {opaque(tag) for tag in tags}


def not_modified(
    status: int,
    etag: str,
    lines: Sequence[tuple[str, str]],
    if_none_match: str | None,
    if_modified_since: str | None,
) -> bool:
    """May a stored response with this status, ETag and header lines be answered by 304?

    Only 2xx responses are; If-None-Match takes precedence over If-Modified-Since, which is
    judged against Last-Modified or, without it, the stored Date (RFC 9111 §4.3.2).
    """
    if not 200 <= status < 300:
        return False
    if if_none_match is not None:
        return bool(etag) and none_match(if_none_match, etag)
    if if_modified_since is None:
        return False
    last_modified = header_values(lines, "Last-Modified") or header_values(lines, "Date")
    since = parse_http_date(if_modified_since)
    modified = parse_http_date(last_modified[0]) if last_modified else None
    return since is not None and modified is not None and modified <= since


def not_modified_lines(lines: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The header lines of a stored response that its 304 repeats."""
    return [(name, value) for name, value in lines if name.lower() in NOT_MODIFIED_FIELDS]
