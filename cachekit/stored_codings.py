"""The body region of an entry stored in content codings (`entry.FLAG_ENCODED`): a small
table, then each coding's bytes, then the identity body if kept (often not: any coding
gives it back). Kept apart from `entry.py` so that the head's format stays readable."""

from __future__ import annotations

import struct
from typing import Final

_COUNT: Final = struct.Struct("<B")
_ITEM: Final = struct.Struct("<BI")  # name length, data length; the name follows

Encoded = tuple[tuple[str, bytes], ...]


def pack(encoded: Encoded, body: bytes) -> bytes:
    """The body region for `encoded` codings and the identity `body` (may be empty)."""
    if len(encoded) > 255:
        raise ValueError("too many codings")
    parts = [_COUNT.pack(len(encoded))]
    for name, data in encoded:
        raw = name.encode("ascii")
        parts.append(_ITEM.pack(len(raw), len(data)) + raw)
    parts.extend(data for _, data in encoded)
    parts.append(body)
    return b"".join(parts)


def split(data: bytes, start: int = 0) -> tuple[Encoded, bytes]:
    """The codings and identity body of the body region that begins at `start` of `data`
    and runs to its end; ValueError (or `struct.error`, `UnicodeDecodeError`) when
    malformed. Read in place: slicing the region out first would copy the whole body once
    more on every Redis hit."""
    (count,) = _COUNT.unpack_from(data, start)
    offset = start + _COUNT.size
    if count == 1:  # one configured coding, the usual case: no lists, no loops
        name_len, data_len = _ITEM.unpack_from(data, offset)
        offset += _ITEM.size
        name = _name(data[offset : offset + name_len], name_len)
        offset += name_len
        end = offset + data_len
        if end > len(data):
            raise ValueError("truncated coding data")
        return ((name, data[offset:end]),), data[end:]
    items = []
    for _ in range(count):
        name_len, data_len = _ITEM.unpack_from(data, offset)
        offset += _ITEM.size
        items.append((_name(data[offset : offset + name_len], name_len), data_len))
        offset += name_len
    encoded = []
    for name, data_len in items:
        end = offset + data_len
        if end > len(data):
            raise ValueError("truncated coding data")
        encoded.append((name, data[offset:end]))
        offset = end
    return tuple(encoded), data[offset:]


def _name(raw: bytes, length: int) -> str:
    if len(raw) != length or not raw:
        raise ValueError("truncated coding name")
    return _KNOWN_NAMES.get(raw) or raw.decode("ascii")


#: The codings cachekit writes, by their stored names: each hit reads one of these, and a
#: dict lookup costs less than decoding the bytes again (other names are decoded).
_KNOWN_NAMES: Final = {name.encode("ascii"): name for name in ("gzip", "br", "zstd", "deflate")}
