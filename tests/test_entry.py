"""The stored entry: binary round trip, rejection of damaged data, ETags and timing helpers."""

from __future__ import annotations

import hashlib
import math
import pickle
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cachekit.entry import CachedResponse, CorruptEntry, body_etag
from cachekit.entry_format import MAGIC, VERSION, decode, encode

# The documented wire layout: magic, version, flags, status, stored_at, ttl, grace,
# stale_if_error, generation, then the byte lengths of etag, headers, tags and body.
HEAD = struct.Struct("<2sBBHddddQHIII")

no_nul_text = st.text(
    st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=12
)
seconds = st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False)

entries = st.builds(
    CachedResponse,
    status=st.integers(100, 599),
    headers=st.lists(st.tuples(no_nul_text, no_nul_text), max_size=6).map(tuple),
    body=st.binary(max_size=200),
    stored_at=seconds,
    ttl=seconds,
    grace=seconds,
    stale_if_error=seconds,
    etag=st.text(max_size=40),
    tags=st.lists(no_nul_text.filter(bool), max_size=4).map(tuple),
    generation=st.integers(0, 2**64 - 1),
    compress=st.booleans(),
    vary_stub=st.booleans(),
    handler_etag=st.booleans(),
    no_cache=st.booleans(),
    encoded=st.lists(
        st.tuples(st.sampled_from(["gzip", "br", "zstd"]), st.binary(max_size=60)), max_size=3
    ).map(tuple),
)

SAMPLE = CachedResponse(
    status=200,
    headers=(
        ("Content-Type", "text/html; charset=utf-8"),
        ("Link", "</a.css>; rel=preload"),
        ("Link", "</b.js>; rel=preload"),
        ("X-Name", "Zoë ☃ 日本"),
        ("X-Empty", ""),
    ),
    body=b"<p>hello</p>\x00\xff",
    stored_at=1_700_000_000.25,
    ttl=60.0,
    grace=30.0,
    stale_if_error=300.0,
    etag='"abc"',
    tags=("product:1", "catalogue", "ünï"),
    generation=7,
    compress=True,
)
SAMPLE_BYTES = encode(SAMPLE)


def repack(data: bytes, **changes: object) -> bytes:
    """The same entry bytes with some head fields replaced."""
    fields = dict(
        zip(
            [
                "magic",
                "version",
                "flags",
                "status",
                "stored_at",
                "ttl",
                "grace",
                "stale_if_error",
                "generation",
                "etag_len",
                "headers_len",
                "tags_len",
                "body_len",
            ],
            HEAD.unpack_from(data),
            strict=True,
        )
    )
    fields.update(changes)
    return HEAD.pack(*fields.values()) + data[HEAD.size :]


# ------------------------------------------------------------------ round trip


class TestRoundTrip:
    def test_sample(self) -> None:
        decoded = decode(SAMPLE_BYTES)
        assert decoded == SAMPLE
        assert decoded.headers == SAMPLE.headers  # repeats and order kept
        assert decoded.size == len(SAMPLE_BYTES)

    def test_layout_starts_with_magic_and_version(self) -> None:
        assert SAMPLE_BYTES[:2] == MAGIC == b"CK"
        assert SAMPLE_BYTES[2] == VERSION
        assert len(SAMPLE_BYTES) == HEAD.size + 5 + sum(
            len(part)
            for part in (
                "\x00".join(p for line in SAMPLE.headers for p in line).encode(),
                "\x00".join(SAMPLE.tags).encode(),
                SAMPLE.body,
            )
        )

    def test_minimal_entry(self) -> None:
        minimal = CachedResponse(status=204, headers=(), body=b"", stored_at=0.0, ttl=0.0)
        assert decode(encode(minimal)) == minimal

    def test_flags(self) -> None:
        for compress in (False, True):
            for vary_stub in (False, True):
                entry = CachedResponse(
                    200, (), b"", 0.0, 1.0, compress=compress, vary_stub=vary_stub
                )
                data = encode(entry)
                assert data[3] == (0x01 if compress else 0) | (0x02 if vary_stub else 0)
                decoded = decode(data)
                assert (decoded.compress, decoded.vary_stub) == (compress, vary_stub)

    @pytest.mark.parametrize(("handler_etag", "no_cache"), [(a, b) for a in (0, 1) for b in (0, 1)])
    def test_revalidation_flags(self, handler_etag: int, no_cache: int) -> None:
        entry = CachedResponse(
            200, (), b"", 10.0, 60.0, 5.0, handler_etag=bool(handler_etag), no_cache=bool(no_cache)
        )
        data = encode(entry)
        assert data[3] == (0x08 if handler_etag else 0) | (0x10 if no_cache else 0)
        for decoded in (decode(data), decode(data)):  # parsed, then from the memo
            assert (decoded.handler_etag, decoded.no_cache) == (handler_etag, no_cache)
            assert decoded == entry

    def test_a_no_cache_entry_is_kept_but_never_fresh(self) -> None:
        entry = CachedResponse(200, (), b"", 10.0, 60.0, 5.0, 30.0, no_cache=True)
        assert not entry.is_fresh(10.0) and not entry.is_servable_stale(10.0)
        assert not entry.can_replace_error(10.0)
        assert entry.drop_at == 10.0 + 60.0 + 30.0 and entry.keep_for() == 90.0

    def test_undecodable_request_bytes_survive(self) -> None:
        # aiohttp decodes header bytes with surrogateescape; an echoed value keeps its bytes.
        entry = CachedResponse(200, (("X-Echo", "a\udcffb"),), b"", 0.0, 1.0, tags=("\udc80",))
        decoded = decode(encode(entry))
        assert decoded.headers == (("X-Echo", "a\udcffb"),)
        assert decoded.tags == ("\udc80",)

    def test_unencodable_surrogate_is_a_value_error(self) -> None:
        with pytest.raises(ValueError):
            encode(CachedResponse(200, (("X", "\ud800"),), b"", 0.0, 1.0))

    def test_empty_header_name_and_value(self) -> None:
        entry = CachedResponse(200, (("", ""),), b"", 1.0, 1.0)
        assert decode(encode(entry)).headers == (("", ""),)

    @given(entries)
    def test_any_entry_round_trips(self, entry: CachedResponse) -> None:
        data = encode(entry)
        decoded = decode(data)
        assert decoded == entry
        assert decoded.size == len(data)
        assert encode(decoded) == data

    @given(st.floats(min_value=0, allow_nan=False, allow_infinity=False))
    def test_floats_are_exact(self, value: float) -> None:
        entry = CachedResponse(200, (), b"", value, value, value, value)
        decoded = decode(encode(entry))
        assert (decoded.stored_at, decoded.ttl, decoded.grace, decoded.stale_if_error) == (
            value,
            value,
            value,
            value,
        )

    @pytest.mark.parametrize(
        "entry",
        [
            CachedResponse(200, (("X-A", "a\x00b"),), b"", 0.0, 1.0),
            CachedResponse(200, (("X\x00", "v"),), b"", 0.0, 1.0),
            CachedResponse(200, (), b"", 0.0, 1.0, tags=("a\x00b",)),
        ],
    )
    def test_nul_in_header_or_tag_is_refused(self, entry: CachedResponse) -> None:
        with pytest.raises(ValueError, match="NUL"):
            encode(entry)

    @pytest.mark.parametrize("tags", [("",)])
    def test_empty_tag_round_trips_or_is_refused(self, tags: tuple[str, ...]) -> None:
        entry = CachedResponse(200, (), b"", 0.0, 1.0, tags=tags)
        try:
            data = encode(entry)
        except ValueError:
            return
        assert decode(data).tags == tags

    @pytest.mark.parametrize(
        "entry",
        [
            CachedResponse(200, (), b"", 0.0, 1.0, etag='"' + "e" * 70_000 + '"'),
            CachedResponse(200, (), b"", 0.0, 1.0, generation=2**64),
            CachedResponse(200, (), b"", 0.0, 1.0, generation=-1),
        ],
    )
    def test_unencodable_values_raise_value_error(self, entry: CachedResponse) -> None:
        with pytest.raises(ValueError):
            encode(entry)


# ------------------------------------------------------------------ damaged data


class TestDamage:
    def test_every_truncation_is_corrupt(self) -> None:
        for length in range(len(SAMPLE_BYTES)):
            with pytest.raises(CorruptEntry):
                decode(SAMPLE_BYTES[:length])

    def test_extra_bytes_are_corrupt(self) -> None:
        for tail in (b"\x00", b"x", SAMPLE_BYTES):
            with pytest.raises(CorruptEntry, match="length mismatch"):
                decode(SAMPLE_BYTES + tail)

    @given(st.binary(max_size=200))
    def test_random_bytes_are_corrupt(self, data: bytes) -> None:
        with pytest.raises(CorruptEntry):
            decode(data)

    @given(st.binary(max_size=120))
    def test_random_bytes_after_valid_magic_never_raise_anything_else(self, tail: bytes) -> None:
        data = MAGIC + bytes([VERSION]) + tail
        try:
            decoded = decode(data)
        except CorruptEntry:
            return
        assert isinstance(decoded, CachedResponse)
        assert decoded.size == len(data)

    @given(st.integers(0, len(SAMPLE_BYTES) - 1), st.integers(0, 255))
    def test_any_single_byte_change_decodes_or_is_corrupt(self, position: int, value: int) -> None:
        damaged = bytearray(SAMPLE_BYTES)
        damaged[position] = value
        try:
            decoded = decode(bytes(damaged))
        except CorruptEntry:
            return
        assert isinstance(decoded, CachedResponse)

    @pytest.mark.parametrize("magic", [b"XX", b"ck", b"KC", b"\x00\x00"])
    def test_wrong_magic(self, magic: bytes) -> None:
        with pytest.raises(CorruptEntry, match="unknown format"):
            decode(repack(SAMPLE_BYTES, magic=magic))

    # 1: entries stored under the keys of before key parity (`/a%252Fb`'s old key is
    # `/a%2Fb`'s new one) must be a miss after an upgrade, never a hit. 2: entries without
    # tag versions, which a purge could not void once Redis evicted their tag index.
    @pytest.mark.parametrize("version", [0, 1, 2, 4, 255])
    def test_wrong_version(self, version: int) -> None:
        with pytest.raises(CorruptEntry, match="unknown format"):
            decode(repack(SAMPLE_BYTES, version=version))

    @pytest.mark.parametrize("flags", [0x20, 0x80, 0xFF])
    def test_unknown_flags(self, flags: int) -> None:
        with pytest.raises(CorruptEntry):
            decode(repack(SAMPLE_BYTES, flags=flags))

    @pytest.mark.parametrize("status", [0, 99, 1000, 65535])
    def test_impossible_status(self, status: int) -> None:
        with pytest.raises(CorruptEntry):
            decode(repack(SAMPLE_BYTES, status=status))

    @pytest.mark.parametrize("field", ["stored_at", "ttl", "grace", "stale_if_error"])
    @pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -1.0])
    def test_invalid_timing(self, field: str, value: float) -> None:
        with pytest.raises(CorruptEntry, match="invalid timing"):
            decode(repack(SAMPLE_BYTES, **{field: value}))

    @pytest.mark.parametrize("field", ["etag_len", "headers_len", "tags_len", "body_len"])
    @pytest.mark.parametrize("delta", [-1, 1, 60_000])
    def test_length_fields_must_add_up(self, field: str, delta: int) -> None:
        current = dict(
            zip(
                ["etag_len", "headers_len", "tags_len", "body_len"],
                HEAD.unpack_from(SAMPLE_BYTES)[-4:],
                strict=True,
            )
        )
        with pytest.raises(CorruptEntry, match="length mismatch"):
            decode(repack(SAMPLE_BYTES, **{field: current[field] + delta}))

    def test_odd_header_block(self) -> None:
        entry = CachedResponse(200, (("a", "b"),), b"body", 0.0, 1.0)
        data = encode(entry)
        # Shift the block boundary: headers "a" (one field, no value), tags "\x00b".
        damaged = repack(data, headers_len=1, tags_len=2)
        with pytest.raises(CorruptEntry, match="odd header block"):
            decode(damaged)

    def test_pickle_is_rejected(self) -> None:
        for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):  # 0-1 cannot pickle slots
            with pytest.raises(CorruptEntry):
                decode(pickle.dumps(SAMPLE, protocol=protocol))

    def test_pickle_is_never_loaded(self, tmp_path: Path) -> None:
        marker = tmp_path / "unpickled"
        payload = pickle.dumps(_Exploit(str(marker)))
        with pytest.raises(CorruptEntry):
            decode(payload)
        # Even a pickle wearing the magic bytes is not executed.
        with pytest.raises(CorruptEntry):
            decode(MAGIC + bytes([VERSION]) + payload)
        assert not marker.exists()

    def test_corrupt_entry_is_a_value_error(self) -> None:
        assert issubclass(CorruptEntry, ValueError)


class _Exploit:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


# ------------------------------------------------------------------ ETags


class TestBodyEtag:
    def test_strong_and_quoted(self) -> None:
        etag = body_etag(b"hello")
        assert not etag.startswith("W/")
        assert etag.startswith('"') and etag.endswith('"')
        inner = etag[1:-1]
        assert len(inner) == 32
        assert set(inner) <= set("0123456789abcdef")

    def test_deterministic_and_body_only(self) -> None:
        # An unkeyed, unsalted digest of the body: the same in every process and worker.
        assert body_etag(b"hello") == body_etag(b"hel" + b"lo")
        assert (
            body_etag(b"hello") == '"' + hashlib.blake2b(b"hello", digest_size=16).hexdigest() + '"'
        )

    @given(st.binary(max_size=64), st.binary(max_size=64))
    def test_different_bodies_different_etags(self, a: bytes, b: bytes) -> None:
        if a != b:
            assert body_etag(a) != body_etag(b)

    def test_empty_body(self) -> None:
        assert body_etag(b"") == body_etag(b"")
        assert body_etag(b"") != body_etag(b"\x00")


# ------------------------------------------------------------------ timing helpers


class TestTiming:
    ENTRY = CachedResponse(
        200, (), b"", stored_at=1000.0, ttl=60.0, grace=30.0, stale_if_error=120.0
    )

    def test_age(self) -> None:
        assert self.ENTRY.age(1000.0) == 0
        assert self.ENTRY.age(1059.9) == 59
        assert self.ENTRY.age(990.0) == 0  # clock skew never gives a negative Age

    def test_remaining(self) -> None:
        assert self.ENTRY.remaining(1000.0) == 60.0
        assert self.ENTRY.remaining(1070.0) == -10.0

    def test_freshness_boundaries(self) -> None:
        assert self.ENTRY.is_fresh(1059.999)
        assert not self.ENTRY.is_fresh(1060.0)

    def test_stale_while_revalidate_window(self) -> None:
        assert self.ENTRY.is_servable_stale(1089.9)
        assert not self.ENTRY.is_servable_stale(1090.0)

    def test_stale_if_error_window(self) -> None:
        assert self.ENTRY.can_replace_error(1179.9)
        assert not self.ENTRY.can_replace_error(1180.0)

    def test_keep_for_is_ttl_plus_longest_window(self) -> None:
        assert self.ENTRY.keep_for() == 180.0
        assert (
            CachedResponse(200, (), b"", 0.0, 5.0, grace=9.0, stale_if_error=2.0).keep_for() == 14.0
        )
        assert CachedResponse(200, (), b"", 0.0, 5.0).keep_for() == 5.0

    def test_size_is_not_part_of_equality(self) -> None:
        assert CachedResponse(200, (), b"", 0.0, 1.0, size=1) == CachedResponse(
            200, (), b"", 0.0, 1.0, size=2
        )
