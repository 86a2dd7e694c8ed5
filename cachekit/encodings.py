"""Content codings stored with an entry (compress once, serve every encoding): which
responses are compressed, into what, at which level, and which coding a request gets.

`negotiate` is RFC 9110 §12.5.3 over `Accept-Encoding`; it is pure, and its answers are
memoized by header value in a memo bounded in bytes (`NEGOTIATED_MAX_BYTES`, counted in
the README's memory budget): the header is client input, one of a handful of strings in
practice. `tests/test_encodings.py` proves the memo gives what the plain parse gives.
"""

from __future__ import annotations

import importlib
import logging
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from sys import getsizeof
from typing import Any, Final

from cachekit.directives import header_values, parse_cache_control
from cachekit.memo import BoundedMemo

log = logging.getLogger("cachekit")

#: The codings cachekit can store, best first when a request accepts several equally.
SUPPORTED: Final = ("zstd", "br", "gzip")
#: Levels that compress the benchmark's 13 KB JSON page in well under 1 ms each (figures
#: in bench/README.md): gzip 6 (zlib's default), Brotli 5, Zstandard 3 (its default).
GZIP_LEVEL: Final = 6
BROTLI_QUALITY: Final = 5
ZSTD_LEVEL: Final = 3


@dataclass(frozen=True, slots=True)
class Codec:
    """One content coding: its name and how to apply and undo it."""

    name: str
    compress: Callable[[bytes], bytes]
    decompress: Callable[[bytes], bytes]


def _gzip(data: bytes) -> bytes:
    packer = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # 31: the gzip container
    return packer.compress(data) + packer.flush()


def _gunzip(data: bytes) -> bytes:
    return zlib.decompress(data, 47)  # 47: gzip or zlib container, detected


def _optional(module: str) -> Any:
    """An optional package (the `brotli` and `zstd` extras), or None when not installed."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def _codecs() -> dict[str, Codec]:
    codecs = {"gzip": Codec("gzip", _gzip, _gunzip)}
    brotli = _optional("brotli")
    if brotli is not None:
        codecs["br"] = Codec(
            "br",
            lambda data: bytes(brotli.compress(data, quality=BROTLI_QUALITY)),
            lambda data: bytes(brotli.decompress(data)),
        )
    zstandard = _optional("zstandard")
    if zstandard is not None:
        compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        codecs["zstd"] = Codec(
            "zstd",
            lambda data: bytes(compressor.compress(data)),
            lambda data: bytes(zstandard.ZstdDecompressor().decompress(data)),
        )
    return codecs


#: The codecs this process has (gzip always; br and zstd with their optional packages).
CODECS: Final = _codecs()
_warned: set[str] = set()


def usable(names: Iterable[str]) -> tuple[str, ...]:
    """`names` that this process can produce, in order; the others are skipped, each with
    one log line per process (`pip install cachekit[brotli]` / `[zstd]` adds them)."""
    kept = []
    for name in names:
        if name in CODECS:
            kept.append(name)
        elif name not in _warned:
            _warned.add(name)
            extra = {"br": "brotli", "zstd": "zstd"}.get(name, name)
            log.warning(
                "content coding %r is not available (pip install 'cachekit[%s]'); "
                "entries are stored without it",
                name,
                extra,
            )
    return tuple(kept)


def parse_codings(value: str | Sequence[str]) -> tuple[str, ...]:
    """A `compress` setting (`"br,gzip"`, or a list) as coding names; ValueError for an
    unknown or repeated name. Empty: compression off."""
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [item.strip().lower() for item in items if item.strip()]
    for name in names:
        if name not in SUPPORTED:
            raise ValueError(f"unknown content coding {name!r} (known: {', '.join(SUPPORTED)})")
    if len(set(names)) != len(names):
        raise ValueError("a content coding is named twice")
    return tuple(names)


# Media types worth compressing besides text/*: structured text under application/ and
# image/svg+xml; everything else (images, archives, fonts, video) is left as it is.
_TEXTUAL_SUFFIXES: Final = ("+json", "+xml", "+text")
_TEXTUAL_TYPES: Final = frozenset(
    {
        "application/json",
        "application/javascript",
        "application/ecmascript",
        "application/xml",
        "application/xhtml+xml",
        "application/rss+xml",
        "application/atom+xml",
        "application/ld+json",
        "application/manifest+json",
        "application/x-javascript",
        "application/graphql-response+json",
        "application/x-ndjson",
        "image/svg+xml",
    }
)


def textual(content_type: str | None) -> bool:
    """Whether a `Content-Type` names a type that compresses well."""
    if not content_type:
        return False
    media = content_type.partition(";")[0].strip().lower()
    return media.startswith("text/") or media in _TEXTUAL_TYPES or media.endswith(_TEXTUAL_SUFFIXES)


def compressible(status: int, lines: Sequence[tuple[str, str]], size: int, min_bytes: int) -> bool:
    """Whether cachekit may store this response in its own content codings: a textual
    type, at least `min_bytes`, not encoded already, not `no-transform` (RFC 9110 §7.7),
    not a part (`Content-Range`), not a 206 / 304."""
    if size < max(1, min_bytes) or status in (206, 304):
        return False
    content_types = header_values(lines, "Content-Type")
    if len(content_types) != 1 or not textual(content_types[0]):
        return False
    if header_values(lines, "Content-Encoding") or header_values(lines, "Content-Range"):
        return False
    cache_control = parse_cache_control(", ".join(header_values(lines, "Cache-Control")))
    return "no-transform" not in cache_control


def compress_all(body: bytes, names: Iterable[str]) -> tuple[tuple[str, bytes], ...]:
    """`body` in each of the coding `names` (those that do not make it smaller left out)."""
    encoded = []
    for name in names:
        data = CODECS[name].compress(body)
        if len(data) < len(body):
            encoded.append((name, data))
    return tuple(encoded)


def _q(parameters: str) -> float | None:
    for parameter in parameters.split(";"):
        key, _, value = parameter.partition("=")
        if key.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return None
            return q if 0.0 <= q <= 1.0 else None
    return 1.0


def parse_accept_encoding(value: str) -> dict[str, float] | None:
    """The codings of an `Accept-Encoding` value with their weights; None when malformed
    (then it is ignored: identity is always safe). `x-gzip` counts as `gzip`."""
    weights: dict[str, float] = {}
    for item in value.split(","):
        name, _, parameters = item.strip().partition(";")
        name = name.strip().lower()
        if not name:
            continue
        q = _q(parameters)
        if q is None:
            return None
        name = "gzip" if name == "x-gzip" else name
        weights[name] = max(q, weights.get(name, 0.0))
    return weights


def negotiate_plain(accept_encoding: str | None, available: tuple[str, ...]) -> str | None:
    """The coding of `available` (in order of preference) a request gets, by RFC 9110
    §12.5.3: the highest weight wins, ties go to the earlier in `available`, `*` stands for
    any coding not named, q=0 refuses. None: identity (also for an absent or empty header:
    clients that send none, like curl without --compressed, get what they can read)."""
    if not accept_encoding or not available:
        return None
    weights = parse_accept_encoding(accept_encoding)
    if weights is None:
        return None
    star = weights.get("*")
    best: str | None = None
    best_q = 0.0
    for name in available:
        q = weights.get(name, star if star is not None else 0.0)
        if q > best_q:
            best, best_q = name, q
    if best is None:
        return None
    identity = weights.get("identity", star if star is not None else None)
    # identity beats a coding only when the client says it prefers it.
    if identity is not None and identity > best_q:
        return None
    return best


#: Negotiated codings by (Accept-Encoding value, available codings); "" for identity.
NEGOTIATED_MAX_BYTES: Final = 256 << 10
_NEGOTIATED: Final[BoundedMemo[tuple[str, tuple[str, ...]], str]] = BoundedMemo(
    "negotiated codings", NEGOTIATED_MAX_BYTES
)
# The (value, available) tuple and its slot; `available` and the coding names are shared.
_MEMO_FIXED: Final = getsizeof(("", ()))


def negotiate(accept_encoding: str | None, available: tuple[str, ...]) -> str | None:
    """`negotiate_plain`, memoized by header value (see the module docstring)."""
    if not accept_encoding or not available:
        return None
    memo_key = (accept_encoding, available)
    found = _NEGOTIATED.get(memo_key)
    if found is None:
        found = negotiate_plain(accept_encoding, available) or ""
        _NEGOTIATED.put(memo_key, found, _MEMO_FIXED + getsizeof(accept_encoding))
    return found or None


def encoded_etag(etag: str, coding: str) -> str:
    """The entity-tag of a coding of the representation whose tag is `etag`: it must differ
    (RFC 9110 §8.8.3), so `"abc"` becomes `"abc-gzip"` (weakness kept)."""
    if etag.endswith('"') and len(etag) >= 2:
        return f'{etag[:-1]}-{coding}"'
    return etag
