"""A hit-path shortcut: the URL part of default keys, remembered per distinct URL.

What it relies on: `keys.url_component(url)` reads only `url.raw_path`, `url.raw_query_string`
(and `url.query`, which yarl parses from it alone) and `url.raw_fragment`, so the three raw
strings determine the component. The memo is keyed by exactly those three strings, as a
tuple: never by the URL object (equal URLs may differ in spelling where yarl normalizes) nor
by its text (a raw path may hold a literal `#` that aiohttp left in it, so
`path + "#" + fragment` is ambiguous). `tests/test_url_memo.py` checks, over hostile raw
request targets parsed by aiohttp, that the memo's answer always equals the plain function's,
including for targets that share a memo slot in sequence; `tests/test_key_parity.py` runs
every store through it end to end.

Bounded: one `BoundedMemo` of `URL_COMPONENTS_MAX_BYTES` (README, "Memory budget"); the
cost counted per value is the memory of the key's strings, the tuple and the component.
What it buys (bench/README.md): the escaping and sorting of the path and query on a hit,
and with `ignore_query_params`, matching the query's names against the patterns.
"""

from __future__ import annotations

from sys import getsizeof
from typing import Final

from aiohttp import web
from yarl import URL

from cachekit.ignored_query import IgnoredQuery
from cachekit.keys import url_component
from cachekit.memo import BoundedMemo

URL_COMPONENTS_MAX_BYTES: Final = 1 << 20

#: By the raw path, query and fragment; with ignored query parameters, by those and the
#: `IgnoredQuery` (one object per distinct setting, compared by identity).
_COMPONENTS: Final[BoundedMemo[tuple[str, str, str] | tuple[str, str, str, IgnoredQuery], str]] = (
    BoundedMemo("default-key URLs", URL_COMPONENTS_MAX_BYTES)
)
_TUPLE_SIZE: Final = getsizeof((1, 2, 3))
_LONGER_TUPLE_SIZE: Final = getsizeof((1, 2, 3, 4))


def memoized_url_component(url: URL) -> str:
    """`keys.url_component(url)`, from the memo when this URL's raw parts were seen."""
    parts = (url.raw_path, url.raw_query_string, url.raw_fragment)
    component = _COMPONENTS.get(parts)
    if component is None:
        component = url_component(url)
        cost = _TUPLE_SIZE + sum(map(getsizeof, parts)) + getsizeof(component)
        _COMPONENTS.put(parts, component, cost)
    return component


def memoized_narrowed_component(url: URL, ignored: IgnoredQuery) -> str:
    """`keys.url_component` of `url` less the query parameters `ignored` leaves out
    (`IgnoredQuery.apply`, which reads only the same three raw strings), from the memo
    when this URL's raw parts were seen with the same `ignored`."""
    parts = (url.raw_path, url.raw_query_string, url.raw_fragment, ignored)
    component = _COMPONENTS.get(parts)
    if component is None:
        component = url_component(ignored.apply(url) or url)
        cost = _LONGER_TUPLE_SIZE + sum(map(getsizeof, parts[:3])) + getsizeof(component)
        _COMPONENTS.put(parts, component, cost)
    return component


def default_key(prefix: str, request: web.Request) -> str:
    """A default key: `prefix` (the handler's) plus the memoized component of the URL the
    handler is handed. One call on a hit: the memo is read here, inline."""
    url = request.rel_url
    component = _COMPONENTS.get((url.raw_path, url.raw_query_string, url.raw_fragment))
    return prefix + (component if component is not None else memoized_url_component(url))


def narrowed_default_key(prefix: str, ignored: IgnoredQuery, request: web.Request) -> str:
    """`default_key` less the query parameters `ignored` leaves out."""
    url = request.rel_url
    component = _COMPONENTS.get((url.raw_path, url.raw_query_string, url.raw_fragment, ignored))
    if component is None:
        component = memoized_narrowed_component(url, ignored)
    return prefix + component
