"""entry.py's memos: remembered heads decide exactly what a full parse decides, shared `istr`
header names, and what both hold in memory against what they count."""

from __future__ import annotations

import gc
import time
import tracemalloc
from typing import Any

import pytest
from multidict import istr

from cachekit import entry as entry_module
from cachekit import entry_format, memo, responses
from cachekit.entry import CachedResponse


def entry(**overrides: Any) -> CachedResponse:
    values: dict[str, Any] = {
        "status": 200,
        "headers": (("Content-Type", "application/json"), ("ETag", '"e1"'), ("X-Multi", "a")),
        "body": b'{"ok": true}',
        "stored_at": time.time(),
        "ttl": 60.0,
        "etag": '"e1"',
    }
    values.update(overrides)
    return CachedResponse(**values)


@pytest.fixture(autouse=True)
def _empty_memos() -> None:
    for kept in memo.registered():
        kept.clear()


# ---------------------------------------------------------------- remembered heads


def test_decoded_copies_of_an_entry_share_their_header_lines() -> None:
    raw = entry_format.encode(entry(stored_at=1000.0))
    first, second = entry_format.decode(raw), entry_format.decode(bytes(raw))
    assert first is not second and first.headers is second.headers
    assert first == second == entry(stored_at=1000.0)


def test_a_head_seen_before_is_not_parsed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    stored = entry(stored_at=1000.0, tags=("t1", "t2"), grace=5.0, generation=3)
    raw = entry_format.encode(stored)
    entry_format.decode(raw)  # remembered

    def parse(data: bytes) -> CachedResponse:
        raise AssertionError("parsed again")

    monkeypatch.setattr(entry_format, "_decode", parse)
    again = entry_format.decode(bytes(raw))
    assert again == stored and again.size == len(raw)
    # Same head, another body of the same length: the body is always the data's own.
    other = raw[: -len(stored.body)] + b"x" * len(stored.body)
    assert entry_format.decode(other).body == b"x" * len(stored.body)


def test_a_remembered_head_builds_every_field_the_constructor_would() -> None:
    assert set(entry_format.HEAD_FIELDS) | {"body", "size", "encoded"} == set(
        CachedResponse.__slots__
    )
    stored = entry(stored_at=1000.5, grace=3.0, stale_if_error=9.0, tags=("a",), compress=True)
    raw = entry_format.encode(stored)
    parsed = entry_format.decode(raw)
    remembered = entry_format.decode(raw)
    for name in CachedResponse.__slots__:
        assert getattr(remembered, name) == getattr(parsed, name), name
    assert remembered.size == len(raw) and remembered.drop_at == 1000.5 + 60 + 9


def _decoded_or_error(data: bytes) -> object:
    try:
        return entry_format.decode(data)
    except entry_format.CorruptEntry:
        return entry_format.CorruptEntry


@pytest.mark.parametrize("encoded", [(), (("gzip", b"gz-bytes"),), (("br", b"b"), ("gzip", b"gz"))])
@pytest.mark.parametrize("body", [b'{"ok": true}', b""])
def test_a_remembered_head_decides_nothing_the_full_parse_would_not(
    encoded: tuple[tuple[str, bytes], ...], body: bytes
) -> None:
    # Every truncation, extension and single-byte change of an entry decodes exactly as it
    # does with the memo empty (where it must be parsed and checked in full), with and
    # without content codings in its body region.
    raw = entry_format.encode(entry(stored_at=1000.0, tags=("t",), encoded=encoded, body=body))
    changed = [raw[:cut] for cut in range(len(raw))] + [raw + b"x", raw + raw]
    for at in range(len(raw)):
        changed += [raw[:at] + bytes([value]) + raw[at + 1 :] for value in (0, 255)]
    for data in changed:
        entry_format._HEADS.clear()
        cold = _decoded_or_error(data)
        entry_format.decode(raw)  # the original head remembered
        assert _decoded_or_error(data) == cold, data


def test_the_head_memo_stays_within_its_budget() -> None:
    heads = entry_format._HEADS
    for n in range(6000):
        item = entry(stored_at=1000.0 + n)
        assert entry_format.decode(entry_format.encode(item)) == item
        assert heads.used_bytes <= heads.max_bytes
    heads.clear()
    big = entry(headers=(("X-Big", "v" * (heads.max_bytes // 8)),))
    assert entry_format.decode(entry_format.encode(big)) == big
    assert len(heads) == 0  # over its share of the budget: not kept


# ---------------------------------------------------------------- shared istr header names


def test_decoded_and_stored_entries_name_their_lines_with_shared_istr() -> None:
    lines = [("X-Custom", "1"), ("content-type", "text/plain")]
    made = responses.to_entry(
        200, lines, b"b", stored_at=1.0, ttl=60.0, grace=0.0, stale_if_error=0.0,
        tags=(), generation=0, compress=False,
    )  # fmt: skip
    entry_format._HEADS.clear()
    decoded = entry_format.decode(entry_format.encode(made))
    for stored in (made, decoded):
        assert all(type(name) is istr for name, _ in stored.headers)
    assert [name for name, _ in made.headers] == [name for name, _ in decoded.headers]
    assert all(a is b for (a, _), (b, _) in zip(made.headers, decoded.headers, strict=True))
    assert decoded == made  # istr names compare equal to the plain strings they came from


def test_the_header_name_memo_stays_within_its_budget() -> None:
    names = entry_module._HEADER_NAMES
    for n in range(10_000):
        assert entry_module.header_name(f"X-Name-{n}") == f"X-Name-{n}"
        assert names.used_bytes <= names.max_bytes
    long_name = "X-" + "n" * names.max_bytes
    assert entry_module.header_name(long_name) == long_name  # an istr all the same
    assert names.get(long_name) is None


# ---------------------------------------------------------------- real size against the count

LATIN = "caf\xe9 cr\xe8me"
WIDE = "\u2603 \U0001f600 \u65e5\u672c"


@pytest.mark.parametrize(
    "make_lines",
    [
        lambda n: (("Content-Type", "application/json"), ("ETag", f'"{n:032x}"')),
        lambda n: tuple((f"X-Header-{i}", f"value {n} {i}" * 3) for i in range(20)),
        lambda n: ((f"X-Latin-{n % 50}", LATIN * 5), ("X-Wide", WIDE), (f"X-\xe9-{n}", "v")),
        lambda n: (("Link", "</a.css>; rel=preload" * 40), (f"X-{n}", WIDE * 30)),
    ],
    ids=["usual", "many lines", "non-ascii", "long"],
)
def test_decoding_holds_no_more_than_the_memos_count(make_lines: Any) -> None:
    # Decode new entries (as many Redis replies) until the head memo is nearly full; what
    # stays alive, traced by tracemalloc, must be within what the memos count (the heads
    # and the header names), and not wildly below it.
    heads = entry_format._HEADS
    raws = [
        entry_format.encode(entry(headers=make_lines(n), stored_at=1000.0 + n))
        for n in range(20_000)
    ]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for raw in raws:
            if heads.used_bytes >= heads.max_bytes * 0.9:
                break
            entry_format.decode(raw)
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    accounted = sum(each.used_bytes for each in memo.registered())
    assert heads.used_bytes >= heads.max_bytes * 0.9
    assert traced <= accounted, traced / accounted
    assert traced >= accounted * 0.45, traced / accounted
