"""Tags a handler attaches at run time: `cachekit.tag(request, ...)` or a Cache-Tag header."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from aiohttp import web

from cachekit.directives import header_values

RUNTIME_TAGS: Final = web.RequestKey("cachekit_runtime_tags", list[str])


def tag(request: web.Request, *tags: str) -> None:
    """Record tags for the response this handler is producing (e.g. `"product:7"`)."""
    for name in tags:
        if not isinstance(name, str) or not name:
            raise ValueError(f"invalid cache tag {name!r}")
    request.setdefault(RUNTIME_TAGS, []).extend(tags)


def runtime_tags(request: web.Request, lines: Sequence[tuple[str, str]]) -> list[str]:
    """Tags named with `tag()` plus those of the response's `Cache-Tag` header lines."""
    from_header = [
        name.strip() for value in header_values(lines, "Cache-Tag") for name in value.split(",")
    ]
    return [*request.get(RUNTIME_TAGS, ()), *(name for name in from_header if name)]


#: Characters a tag keeps in a surrogate-key header; the others (separators, whitespace,
#: `%`, quotes, control and non-ASCII characters) are percent-encoded as UTF-8, so that
#: every tag is one token in every CDN's list syntax and distinct tags stay distinct.
_HEADER_SAFE: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$&'()*+-./:;<=>?@[]^_`{|}~"
)
#: Fastly's Surrogate-Key separates keys by spaces; Cloudflare's Cache-Tag and Akamai's
#: Edge-Cache-Tag by commas (the default for any other header name).
_SPACE_SEPARATED: Final = frozenset({"surrogate-key"})


def surrogate_key(tag: str) -> str:
    """`tag` as it appears in a surrogate-key header: what a purge hook must send the CDN."""
    if all(char in _HEADER_SAFE for char in tag):
        return tag
    return "".join(
        char
        if char in _HEADER_SAFE
        else "".join(f"%{b:02X}" for b in char.encode("utf-8", "surrogatepass"))
        for char in tag
    )


def surrogate_keys_line(header: str, tags: Sequence[str]) -> tuple[str, str]:
    """The header line carrying `tags` to a CDN, with that CDN's separator."""
    separator = " " if header.lower() in _SPACE_SEPARATED else ","
    return header, separator.join(dict.fromkeys(map(surrogate_key, tags)))
