"""`stored_codings`: the body region of an entry with content codings."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from cachekit import stored_codings

CODINGS = st.lists(
    st.tuples(
        st.sampled_from(["gzip", "br", "zstd", "deflate", "x-custom", "compress"]),
        st.binary(max_size=40),
    ),
    max_size=4,
).map(tuple)


def reference_split(region: bytes) -> tuple[stored_codings.Encoded, bytes]:
    """The plain parse `split` must equal: a loop over the table, then over the data."""
    (count,) = struct.unpack_from("<B", region, 0)
    offset = 1
    items = []
    for _ in range(count):
        name_len, data_len = struct.unpack_from("<BI", region, offset)
        offset += 5
        name = region[offset : offset + name_len].decode("ascii")
        if len(name) != name_len or not name:
            raise ValueError("truncated coding name")
        offset += name_len
        items.append((name, data_len))
    encoded = []
    for name, data_len in items:
        data = region[offset : offset + data_len]
        if len(data) != data_len:
            raise ValueError("truncated coding data")
        encoded.append((name, data))
        offset += data_len
    return tuple(encoded), region[offset:]


def outcome(parse: object, *args: object) -> object:
    try:
        return parse(*args)  # type: ignore[operator]
    except (struct.error, ValueError):  # UnicodeDecodeError is a ValueError
        return "malformed"


@given(CODINGS, st.binary(max_size=60))
def test_what_pack_writes_split_reads_back(codings: stored_codings.Encoded, body: bytes) -> None:
    region = stored_codings.pack(codings, body)
    assert stored_codings.split(region) == (codings, body)


@given(CODINGS, st.binary(max_size=60), st.binary(max_size=8))
def test_split_reads_in_place_at_any_offset(
    codings: stored_codings.Encoded, body: bytes, before: bytes
) -> None:
    region = stored_codings.pack(codings, body)
    assert stored_codings.split(before + region, len(before)) == (codings, body)


@given(CODINGS, st.binary(max_size=30), st.data())
def test_damaged_regions_read_as_the_plain_parse_reads_them(
    codings: stored_codings.Encoded, body: bytes, data: st.DataObject
) -> None:
    # Truncations and single-byte changes (counts, lengths, names) of valid regions.
    region = stored_codings.pack(codings, body)
    cut = data.draw(st.integers(0, len(region)))
    at = data.draw(st.integers(0, max(0, len(region) - 1)))
    value = data.draw(st.integers(0, 255))
    changed = bytearray(region)
    if changed:
        changed[at] = value
    for damaged in (region[:cut], bytes(changed)):
        assert outcome(stored_codings.split, damaged) == outcome(reference_split, damaged)


@given(st.binary(max_size=80))
def test_arbitrary_bytes_read_as_the_plain_parse_reads_them(region: bytes) -> None:
    assert outcome(stored_codings.split, region) == outcome(reference_split, region)


REGIONS = [
    stored_codings.pack((("gzip", b"gz-bytes"),), b'{"ok": true}'),
    stored_codings.pack((("gzip", b"gz"),), b""),
    stored_codings.pack((("br", b"b"), ("gzip", b"gz"), ("zstd", b"")), b"body"),
    stored_codings.pack((("x-custom", b"c"),), b"b"),
    stored_codings.pack((), b"identity only"),
]


def test_every_truncation_and_byte_change_reads_as_the_plain_parse_reads_it() -> None:
    for region in REGIONS:
        damaged = [region[:cut] for cut in range(len(region))] + [region + b"x"]
        for at, original in enumerate(region):
            for value in {0, 1, 127, 128, 255, (original + 1) % 256, (original - 1) % 256}:
                damaged.append(region[:at] + bytes([value]) + region[at + 1 :])
        for data in damaged:
            assert outcome(stored_codings.split, data) == outcome(reference_split, data), data
            shifted = b"head" + data
            assert outcome(stored_codings.split, shifted, 4) == outcome(reference_split, data)
