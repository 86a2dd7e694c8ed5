"""The stored response and its compact, versioned binary encoding (never pickle)."""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass, field
from operator import attrgetter, itemgetter
from sys import getsizeof
from typing import Final, cast

from multidict import istr

from cachekit import stored_codings
from cachekit.memo import BoundedMemo

MAGIC: Final = b"CK"
# 2: keys are taken from what aiohttp hands the handler and escaped anew. An entry written
# under the earlier keys (version 1) may sit under a key that now names another request,
# so it is never read: a version-1 entry is a miss and is replaced.
# 3: entries record the version of each of their tags (`tag_versions`), checked on read, so
# a purge holds even where Redis evicted a tag index (backends/tag_versions.py).
VERSION: Final = 3
FLAG_COMPRESS: Final = 0x01
# A stub stored at a key whose handler turned out to vary on more request headers: its
# `Vary` line names them, so other processes learn where the real entry lives.
FLAG_VARY_STUB: Final = 0x02
# The tag block holds each tag's recorded version after the names.
FLAG_TAG_VERSIONS: Final = 0x04
# The entry's ETag is the handler's own (else cachekit's body hash): only the handler's
# validators are sent to it on revalidation. Entries without the flag are never asked with
# their ETag, which is safe for entries written before the flag existed.
FLAG_HANDLER_ETAG: Final = 0x08
# Stored from a `no-cache` response: never fresh, kept only to be revalidated with the
# handler before every reuse (RFC 9111 §5.2.2.4).
FLAG_NO_CACHE: Final = 0x10
# The body region holds content codings of the body (`stored_codings`), the identity body
# itself only when kept.
FLAG_ENCODED: Final = 0x20
_KNOWN_FLAGS: Final = (
    FLAG_COMPRESS
    | FLAG_VARY_STUB
    | FLAG_TAG_VERSIONS
    | FLAG_HANDLER_ETAG
    | FLAG_NO_CACHE
    | FLAG_ENCODED
)
# magic, version, flags, status, stored_at, ttl, grace, stale_if_error, generation,
# and the byte lengths of the etag, header block, tag block and body that follow.
_HEAD: Final = struct.Struct("<2sBBHddddQHIII")
_SEPARATOR: Final = "\x00"


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


def _join(values: list[str], *, allow_empty: bool = True) -> bytes:
    for value in values:
        if _SEPARATOR in value:
            raise ValueError("NUL byte in a stored header or tag")
        if not value and not allow_empty:
            raise ValueError("empty tag")
    return _SEPARATOR.join(values).encode("utf-8", "surrogateescape")


def encode(entry: CachedResponse, tag_versions: tuple[str, ...] = ()) -> bytes:
    """Serialise an entry, recording `tag_versions` (one per tag, or none) instead of the
    entry's own; raises ValueError for data that cannot be stored faithfully."""
    flat = [part for line in entry.headers for part in line]
    headers = _join(flat)
    if tag_versions and len(tag_versions) != len(entry.tags):
        raise ValueError("one version per tag")
    tags = _join([*entry.tags, *tag_versions], allow_empty=False)
    etag = entry.etag.encode("utf-8", "surrogateescape")
    body = stored_codings.pack(entry.encoded, entry.body) if entry.encoded else entry.body
    try:
        head = _pack_head(entry, etag, headers, tags, bool(tag_versions), body_len=len(body))
    except struct.error as exc:
        raise ValueError(f"entry does not fit the format: {exc}") from None
    return b"".join((head, etag, headers, tags, body))


def _pack_head(
    entry: CachedResponse,
    etag: bytes,
    headers: bytes,
    tags: bytes,
    versioned: bool,
    *,
    body_len: int,
) -> bytes:
    return _HEAD.pack(
        MAGIC,
        VERSION,
        (FLAG_COMPRESS if entry.compress else 0)
        | (FLAG_VARY_STUB if entry.vary_stub else 0)
        | (FLAG_TAG_VERSIONS if versioned else 0)
        | (FLAG_HANDLER_ETAG if entry.handler_etag else 0)
        | (FLAG_NO_CACHE if entry.no_cache else 0)
        | (FLAG_ENCODED if entry.encoded else 0),
        entry.status,
        entry.stored_at,
        entry.ttl,
        entry.grace,
        entry.stale_if_error,
        entry.generation,
        len(etag),
        len(headers),
        len(tags),
        body_len,
    )


def decode(data: bytes) -> CachedResponse:
    """Parse stored bytes; anything unexpected raises `CorruptEntry`, nothing else."""
    if len(data) >= _HEAD_SIZE:
        # A head seen before (each Redis lookup returns a new copy of the same bytes):
        # everything but the body is taken from the memo, already parsed and validated.
        etag_len, headers_len, tags_len, body_len = _LENGTHS.unpack_from(data, _LENGTHS_AT)
        body_at = _HEAD_SIZE + etag_len + headers_len + tags_len
        known = _HEADS.get(data[:body_at])
        if known is not None and len(data) - body_at == body_len:
            # Not through the constructor (its argument handling and `__post_init__` cost
            # more than the rest of this path): the remembered fields, including the
            # derived deadlines, in the order of HEAD_FIELDS.
            entry = _new_entry(CachedResponse)
            (
                entry.status,
                entry.headers,
                entry.stored_at,
                entry.ttl,
                entry.grace,
                entry.stale_if_error,
                entry.etag,
                entry.tags,
                entry.generation,
                entry.compress,
                entry.vary_stub,
                entry.fresh_until,
                entry.stale_until,
                entry.drop_at,
                entry.tag_versions,
                entry.handler_etag,
                entry.no_cache,
            ) = known
            entry.body = data[body_at:]
            entry.encoded = ()
            entry.size = len(data)
            if data[3] & FLAG_ENCODED:
                try:
                    entry.encoded, entry.body = stored_codings.split(entry.body)
                except (struct.error, ValueError, UnicodeDecodeError) as exc:
                    raise CorruptEntry(str(exc)) from None
            return entry
    try:
        entry = _decode(data)
    except CorruptEntry:
        raise
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise CorruptEntry(str(exc)) from None
    _remember_head(data, entry)
    return entry


#: Decoded heads (every field but the body) by their stored bytes: the bytes before the
#: body determine every other field, so a head seen before needs neither parsing nor
#: checks again (the body's length, part of those bytes, is checked against the data).
HEADS_MAX_BYTES: Final = 4 << 20
_HEAD_SIZE: Final = _HEAD.size
# The four lengths that end the fixed head: etag, header block, tag block, body.
_LENGTHS: Final = struct.Struct("<HIII")
_LENGTHS_AT: Final = _HEAD.size - _LENGTHS.size
#: Every field of an entry but `body` and `size`, as a remembered head holds them.
HEAD_FIELDS: Final = (
    "status",
    "headers",
    "stored_at",
    "ttl",
    "grace",
    "stale_if_error",
    "etag",
    "tags",
    "generation",
    "compress",
    "vary_stub",
    "fresh_until",
    "stale_until",
    "drop_at",
    "tag_versions",
    "handler_etag",
    "no_cache",
)
_Lines = tuple[tuple[str, str], ...]
_Head = tuple[
    int,
    _Lines,
    float,
    float,
    float,
    float,
    str,
    tuple[str, ...],
    int,
    bool,
    bool,
    float,
    float,
    float,
    tuple[str, ...],
    bool,
    bool,
]
_HEADS: Final[BoundedMemo[bytes, _Head]] = BoundedMemo("entry heads", HEADS_MAX_BYTES)
_head_of: Final = attrgetter(*HEAD_FIELDS)
_new_entry: Final = object.__new__


def _remember_head(data: bytes, entry: CachedResponse) -> None:
    etag_len, headers_len, tags_len, _ = _LENGTHS.unpack_from(data, _LENGTHS_AT)
    head = data[: _HEAD_SIZE + etag_len + headers_len + tags_len]
    fields = cast(_Head, _head_of(entry))
    _HEADS.put(head, fields, getsizeof(head) + _head_size(fields))


# Per remembered head: its tuple of fields, the seven floats and two ints in it.
_HEAD_FIXED: Final = getsizeof(tuple(HEAD_FIELDS)) + 7 * getsizeof(0.0) + 2 * getsizeof(1 << 40)


def _head_size(fields: _Head) -> int:
    etag, tags, versions = fields[6], fields[7], fields[14]
    text = (
        strings_size((etag, *tags, *versions))
        + 2 * _TUPLE_BYTES
        + (len(tags) + len(versions)) * _POINTER_BYTES
    )
    return _HEAD_FIXED + lines_size(fields[1]) + text


def _header_lines(block: bytes) -> tuple[tuple[str, str], ...]:
    if not block:
        return ()
    flat = block.decode("utf-8", "surrogateescape").split(_SEPARATOR)
    if len(flat) % 2:
        raise CorruptEntry("odd header block")
    return tuple(zip(map(header_name, flat[::2]), flat[1::2], strict=True))


def _decode(data: bytes) -> CachedResponse:
    if len(data) < _HEAD.size:
        raise CorruptEntry("truncated header")
    (
        magic,
        version,
        flags,
        status,
        stored_at,
        ttl,
        grace,
        stale_if_error,
        generation,
        etag_len,
        headers_len,
        tags_len,
        body_len,
    ) = _HEAD.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise CorruptEntry(f"unknown format {magic!r} v{version}")
    if flags & ~_KNOWN_FLAGS or not 100 <= status <= 999:
        raise CorruptEntry("invalid flags or status")
    if len(data) != _HEAD.size + etag_len + headers_len + tags_len + body_len:
        raise CorruptEntry("length mismatch")
    isfinite = math.isfinite
    if (
        not (isfinite(stored_at) and isfinite(ttl) and isfinite(grace) and isfinite(stale_if_error))
        or min(stored_at, ttl, grace, stale_if_error) < 0
    ):
        raise CorruptEntry("invalid timing")
    offset = _HEAD.size
    end = offset + etag_len
    etag = data[offset:end].decode("utf-8", "surrogateescape")
    offset, end = end, end + headers_len
    lines = _header_lines(data[offset:end])
    offset, end = end, end + tags_len
    tags = data[offset:end].decode("utf-8", "surrogateescape").split(_SEPARATOR) if tags_len else []
    versions: list[str] = []
    if flags & FLAG_TAG_VERSIONS:
        if len(tags) % 2:
            raise CorruptEntry("tag block without one version per tag")
        tags, versions = tags[: len(tags) // 2], tags[len(tags) // 2 :]
    body = data[end:]
    encoded: tuple[tuple[str, bytes], ...] = ()
    if flags & FLAG_ENCODED:
        encoded, body = stored_codings.split(body)
    return CachedResponse(
        status,
        lines,
        body,
        stored_at,
        ttl,
        grace,
        stale_if_error,
        etag,
        tuple(tags),
        generation,
        bool(flags & FLAG_COMPRESS),
        bool(flags & FLAG_VARY_STUB),
        len(data),
        tuple(versions),
        bool(flags & FLAG_HANDLER_ETAG),
        bool(flags & FLAG_NO_CACHE),
        encoded,
    )
