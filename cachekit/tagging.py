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
