"""The stored response (`CachedResponse`), its lifetimes, and the sizes of what it holds.

Its bytes in a shared store are `entry_format`'s (a compact, versioned binary encoding,
never pickle)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from operator import itemgetter
from sys import getsizeof
from typing import Final

from multidict import istr

from cachekit.memo import BoundedMemo

#: Header names as `istr` (aiohttp turns every plain-str name into a new `istr` each time
#: it iterates a response's headers), one object per distinct name, so that entries share
#: them. Names come from stored responses, not from clients.
HEADER_NAMES_MAX_BYTES: Final = 256 << 10
_HEADER_NAMES: Final[BoundedMemo[str, istr]] = BoundedMemo("header names", HEADER_NAMES_MAX_BYTES)


def header_name(name: str) -> istr:
    """`name` as a shared `istr`."""
    found = _HEADER_NAMES.get(name)
    if found is None:
        found = istr(name)
        _HEADER_NAMES.put(name, found, strings_size((name,)) + _names_size((found,)))
    return found


# Resident bytes beyond the characters, as tracemalloc counts them on CPython 3.11: a str of
# ASCII characters, a tuple, a pointer, and what an istr holds besides its characters and
# its lower-case copy of them. (Other strings are sized one by one, exactly.) The tests of
# the memos that use these check the estimates against tracemalloc.
_STR_BYTES: Final = getsizeof("")
_TUPLE_BYTES: Final = getsizeof(())
_POINTER_BYTES: Final = 8
_ISTR_EXTRA: Final = 48


def strings_size(strings: tuple[str, ...]) -> int:
    """Estimated bytes of `strings` (plain str, one object each)."""
    text = "".join(strings)
    if text.isascii():
        return len(strings) * _STR_BYTES + len(text)
    return sum(map(getsizeof, strings))


def lines_size(lines: tuple[tuple[str, str], ...]) -> int:
    """Estimated bytes a tuple of header lines keeps alive: the tuples, the values, and each
    name as an `istr`. (Names are shared between entries and memos: each holder counts
    them, so this errs high.)"""
    values = strings_size(tuple(map(_value, lines)))
    return _TUPLE_BYTES + len(lines) * _LINE_BYTES + values + _names_size(tuple(map(_name, lines)))


def _names_size(names: tuple[str, ...]) -> int:
    text = "".join(names)
    if text.isascii():
        return len(names) * (2 * _STR_BYTES + _ISTR_EXTRA) + 2 * len(text)
    return sum(2 * getsizeof(str(name)) + _ISTR_EXTRA for name in names)


# Per line besides its strings: its slot in the outer tuple and the (name, value) tuple.
_LINE_BYTES: Final = _POINTER_BYTES + _TUPLE_BYTES + 2 * _POINTER_BYTES
_name: Final = itemgetter(0)
_value: Final = itemgetter(1)


class CorruptEntry(ValueError):
    """Stored bytes that are not a valid entry of a version this code understands."""


@dataclass(slots=True)
class CachedResponse:
    """A stored response: everything needed to answer a request without the handler.

    `ttl` is the fresh lifetime from `stored_at`; `grace` the stale-while-revalidate window
    after it, `stale_if_error` how long past freshness it may stand in for an error.
    Treat it as immutable: one entry is shared by every request it answers. (It is not a
    frozen dataclass only because frozen construction costs several microseconds per hit
    on the Redis path.)
    """

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    stored_at: float
    ttl: float
    grace: float = 0.0
    stale_if_error: float = 0.0
    etag: str = ""
    tags: tuple[str, ...] = ()
    generation: int = 0
    compress: bool = False
    vary_stub: bool = False
    size: int = field(default=0, compare=False)
    #: The version of each of `tags` when the store wrote the entry (empty where the store
    #: checks purges otherwise, as the embedded store does): see backends/tag_versions.py.
    tag_versions: tuple[str, ...] = ()
    #: The ETag is the handler's (see FLAG_HANDLER_ETAG); else cachekit's body hash.
    handler_etag: bool = False
    #: Never fresh: revalidated with the handler before every reuse (see FLAG_NO_CACHE).
    no_cache: bool = False
    #: The body in content codings (name, bytes), best first; `body` is then empty unless
    #: the identity body is kept too (`identity()` gives it back either way).
    encoded: tuple[tuple[str, bytes], ...] = ()
    # Deadlines derived once, since every hit compares against them.
    fresh_until: float = field(init=False, compare=False, repr=False)
    stale_until: float = field(init=False, compare=False, repr=False)
    drop_at: float = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        kept_until = self.stored_at + self.ttl
        # A no-cache entry is kept for its lifetime but is never fresh, nor servable stale.
        fresh_until = self.stored_at if self.no_cache else kept_until
        self.fresh_until = fresh_until
        self.stale_until = fresh_until if self.no_cache else fresh_until + self.grace
        window = max(self.grace, self.stale_if_error)
        if not self.no_cache and self.revalidatable():
            # Kept one lifetime past its freshness, so that it can be revalidated with the
            # handler (a 304) instead of rendered anew; the store's bound still applies.
            window = max(window, self.ttl)
        self.drop_at = kept_until + window

    def age(self, now: float) -> int:
        """Whole seconds since the response was stored (the `Age` header)."""
        return max(0, int(now - self.stored_at))

    def remaining(self, now: float) -> float:
        """Seconds of freshness left; negative once stale."""
        return self.stored_at + self.ttl - now

    def is_fresh(self, now: float) -> bool:
        """Still within its TTL (never, for a no-cache entry)."""
        return now < self.fresh_until

    def is_servable_stale(self, now: float) -> bool:
        """Past its TTL but inside the stale-while-revalidate window."""
        return now < self.stale_until

    def can_replace_error(self, now: float) -> bool:
        """Inside the stale-if-error window."""
        return not self.no_cache and now < self.fresh_until + self.stale_if_error

    def keep_for(self) -> float:
        """How long the store must keep the entry: fresh, then the longest stale window, or
        one more lifetime when it can be revalidated (`revalidatable`)."""
        return self.drop_at - self.stored_at

    def revalidatable(self) -> bool:
        """Whether the handler can be asked if it changed: it carries the handler's ETag or
        a Last-Modified (see `revalidation.validators`)."""
        return self.handler_etag or any(name.lower() == "last-modified" for name, _ in self.headers)


def body_etag(body: bytes) -> str:
    """A strong, quoted ETag derived from the body alone: equal in every process."""
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'
