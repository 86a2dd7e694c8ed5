"""Query parameters left out of default keys (`ignore_query_params`): tracking parameters
such as `utm_source` or `fbclid` that would otherwise give every campaign link its own entry.

Dropping a parameter from a key while the handler still reads it would be the classic
unkeyed-parameter cache poisoning (a handler that reflects `utm_source` would have one
visitor's value served to everyone). So a handler on the default key is called with a
request whose query lacks them too (`narrowed_request`), and its key is built from that
same narrowed URL: the key is still derived from exactly what the handler sees
(`tests/test_key_parity.py` generates such parameters).

Names are matched case-sensitively, decoded (as `request.query` holds them), in full;
`*` in a pattern matches any run of characters, nothing else is special. Pure except
`narrowed_request`, which clones an aiohttp request.

Off the hit path: a hit's key comes from the URL memo (`url_memo`), which remembers the
narrowed key of each raw URL; the parameters are matched on the memo's misses, and the
request is cloned only when the handler is about to run.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Final

from aiohttp import web
from yarl import URL

#: Characters a pattern may hold besides `*`: what tracking parameter names are made of.
#: No space, `%`, `,`, `&`, `=`: names are written decoded, one per comma-separated item.
PATTERN_CHARACTERS: Final = re.compile(r"^[A-Za-z0-9_.~\-\[\]:@!$'()+*]+$")
# A parameter name holding a percent escape: its decoded form may contain any literal.
# Splitting at `;` as well as `&` only makes segments shorter, so this never misses one.
_ESCAPED_NAME: Final = r"(?:^|[&;])[^=&;]*%"


def parse_patterns(value: str | Iterable[str]) -> tuple[str, ...]:
    """The patterns of a setting value (comma-separated, or a list); ValueError naming
    the first bad one. Empty: none (the feature is off)."""
    items = value.split(",") if isinstance(value, str) else list(value)
    patterns: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"expected parameter names, got {item!r}")
        pattern = item.strip()
        if not pattern:
            if isinstance(value, str) and not value.strip():
                continue
            raise ValueError("an empty name between commas")
        if PATTERN_CHARACTERS.match(pattern) is None:
            raise ValueError(
                f"{pattern!r} is not a parameter name or pattern (letters, digits and"
                " _.~-[]:@!$'()+, with * matching any characters; names as decoded)"
            )
        if pattern not in patterns:
            patterns.append(pattern)
    return tuple(patterns)


class IgnoredQuery:
    """Compiled `ignore_query_params` patterns: which names match, a cheap test of a raw
    query string that may hold one, and the URL without them."""

    __slots__ = ("_candidate", "_name", "patterns")

    def __init__(self, patterns: tuple[str, ...]) -> None:
        if not patterns:
            raise ValueError("no patterns")
        self.patterns = patterns
        self._name = re.compile(
            "|".join(".*".join(map(re.escape, pattern.split("*"))) for pattern in patterns),
            re.DOTALL,
        )
        literals = [max(pattern.split("*"), key=len) for pattern in patterns]
        # A name matching a pattern holds its longest literal, spelled in the raw query
        # as it is or with an escape in the name (pattern characters never come from `+`).
        alternatives = (
            [_ESCAPED_NAME, *map(re.escape, dict.fromkeys(literals))] if all(literals) else [""]
        )
        self._candidate = re.compile("|".join(alternatives))

    def matches(self, name: str) -> bool:
        """Whether the decoded parameter name `name` is ignored."""
        return self._name.fullmatch(name) is not None

    def may_apply(self, raw_query: str) -> bool:
        """False only when no parameter of `raw_query` (a URL's raw query string) can be
        ignored: one regular-expression search, no parsing."""
        return self._candidate.search(raw_query) is not None

    def apply(self, url: URL) -> URL | None:
        """`narrowed(url)` when its raw query may hold an ignored parameter, else None: the
        one function both the key (`url_memo.memoized_narrowed_component`) and the request
        handed to the handler (`narrowed_request`) are made from."""
        raw = url.raw_query_string
        return self.narrowed(url) if raw and self.may_apply(raw) else None

    def narrowed(self, url: URL) -> URL | None:
        """`url` without the ignored parameters (the others in their order, duplicates
        kept, from the query aiohttp parsed); None when it has none, or when the narrowed
        URL would not parse back to exactly the kept parameters, path and fragment (then
        the request is keyed and served whole)."""
        query = url.query
        kept = [(name, value) for name, value in query.items() if not self.matches(name)]
        if len(kept) == len(query):
            return None
        try:
            narrowed = url.with_query(kept)
        except (ValueError, TypeError, UnicodeError):
            return None
        if (
            narrowed.raw_path != url.raw_path
            or narrowed.raw_fragment != url.raw_fragment
            or list(narrowed.query.items()) != kept
        ):
            return None
        return narrowed


@functools.lru_cache(maxsize=16)
def compiled(patterns: tuple[str, ...]) -> IgnoredQuery | None:
    """The `IgnoredQuery` of `patterns` (None: none), compiled once per distinct setting."""
    return IgnoredQuery(patterns) if patterns else None


def narrowed_request(request: web.Request, url: URL) -> web.Request | None:
    """A clone of `request` whose `rel_url` is `url` (the same path, a narrowed query),
    with the same scheme, host, headers and `match_info`; None when aiohttp cannot clone
    it (a body already read)."""
    try:
        # Scheme and host given explicitly: a relative URL in place of an absolute-form
        # target would otherwise make aiohttp read the host from the Host header.
        return request.clone(rel_url=url, scheme=request.scheme, host=request.host)
    except RuntimeError:
        return None
