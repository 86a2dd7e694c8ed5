"""The stored bytes of an entry: a compact, versioned binary encoding (never pickle).

`encode` writes a `CachedResponse`; `decode` reads one back and raises `CorruptEntry` for
anything unexpected. Decoded heads are remembered (`HEADS_MAX_BYTES`), so that a Redis hit
on a head seen before parses only its body.
"""

from __future__ import annotations

import math
import struct
from operator import attrgetter
from sys import getsizeof
from typing import Final, cast

from cachekit import stored_codings
from cachekit.entry import (
    _POINTER_BYTES,
    _TUPLE_BYTES,
    CachedResponse,
    CorruptEntry,
    header_name,
    lines_size,
    strings_size,
)
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
            entry.size = len(data)
            if data[3] & FLAG_ENCODED:
                try:
                    entry.encoded, entry.body = stored_codings.split(data, body_at)
                except (struct.error, ValueError, UnicodeDecodeError) as exc:
                    raise CorruptEntry(str(exc)) from None
            else:
                entry.body = data[body_at:]
                entry.encoded = ()
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
    encoded: tuple[tuple[str, bytes], ...] = ()
    if flags & FLAG_ENCODED:
        encoded, body = stored_codings.split(data, end)
    else:
        body = data[end:]
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
