"""Responses from entries: the shared header block of a second, and what it costs in memory."""

from __future__ import annotations

import gc
import time
import tracemalloc
from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDict

from cachekit import aiohttp_internals, memo, responses
from cachekit.entry import CachedResponse, header_name


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


def _block_of(stored: CachedResponse) -> Any:
    known = responses._BLOCKS.get(stored.headers)
    assert known is not None
    return known[1]


@pytest.mark.parametrize("status", [200, 203, 404, 410, 299])
def test_a_hit_is_what_the_constructor_builds(status: int) -> None:
    stored = entry(status=status)
    fast = responses.from_entry(stored, time.time(), "hit", "HIT")
    slow = web.Response(status=status, body=stored.body, headers=fast.headers)
    assert type(fast) is aiohttp_internals.HitResponse and isinstance(fast, web.Response)
    assert vars(fast).keys() - {"_wire", "_wire_version"} == vars(slow).keys()
    assert (fast.status, fast.reason, fast.body) == (slow.status, slow.reason, slow.body)
    assert list(fast.headers.items()) == list(slow.headers.items())


def test_hits_within_a_second_share_one_header_block_but_not_one_multidict() -> None:
    stored = entry(stored_at=1000.0)
    first = responses.from_entry(stored, 1000.2, "hit", "HIT")
    block = _block_of(stored)
    second = responses.from_entry(stored, 1000.7, "hit", "HIT")
    assert _block_of(stored) is block
    first.headers["X-Changed-By-Middleware"] = "yes"
    assert "X-Changed-By-Middleware" not in second.headers
    assert "X-Changed-By-Middleware" not in block
    assert second.headers["Age"] == "0"
    assert second.headers["Cache-Status"] == "cachekit; hit; ttl=59"
    later = responses.from_entry(stored, 1001.3, "hit", "HIT")
    assert _block_of(stored) is not block
    assert later.headers["Age"] == "1"
    assert later.headers["Cache-Status"] == "cachekit; hit; ttl=58"
    assert later.headers.getall("X-Multi") == ["a"]


def test_a_different_label_never_reuses_the_block() -> None:
    stored = entry(stored_at=1000.0)
    hit = responses.from_entry(stored, 1000.1, "hit", "HIT")
    stale = responses.from_entry(stored, 1000.1, "hit; fwd=stale", "STALE")
    emitted = responses.from_entry(stored, 1000.1, "hit", "HIT", emit_cache_control=True)
    assert hit.headers["X-Cache"] == "HIT" and "Cache-Control" not in hit.headers
    assert stale.headers["X-Cache"] == "STALE"
    assert emitted.headers["Cache-Control"] == "public, max-age=60"


def test_entries_with_equal_lines_share_one_block() -> None:
    # A Redis entry is a new object for every lookup batch: the block is found by the
    # stored lines, not by the entry object.
    lines = (("Content-Type", "application/json"), ("ETag", '"e1"'))
    first = entry(stored_at=1000.0, headers=lines)
    second = entry(stored_at=1000.0, headers=tuple(tuple(line) for line in lines))
    assert first.headers is not second.headers
    responses.from_entry(first, 1000.2, "hit", "HIT")
    block = _block_of(first)
    answered = responses.from_entry(second, 1000.3, "hit", "HIT")
    assert _block_of(second) is block
    assert answered.headers == block and answered.headers is not block


def test_equal_lines_with_other_lifetimes_never_share_a_block() -> None:
    # Same lines, same Age (0) and same whole seconds left (59) at 1000.5, but the
    # Cache-Control line states the whole lifetime: 60 vs 59.
    lines = (("Content-Type", "text/plain"),)
    longer = entry(stored_at=1000.0, ttl=60.2, headers=lines)
    shorter = entry(stored_at=1000.0, ttl=59.9, headers=lines)
    for stored, expected in ((longer, "60"), (shorter, "59"), (longer, "60")):
        answered = responses.from_entry(stored, 1000.5, "hit", "HIT", emit_cache_control=True)
        assert answered.headers["Age"] == "0"
        assert answered.headers["Cache-Status"] == "cachekit; hit; ttl=59"
        assert answered.headers["Cache-Control"] == f"public, max-age={expected}"


def test_a_new_entry_at_a_dead_entry_s_address_gets_its_own_block() -> None:
    old = entry(stored_at=1000.0, headers=(("X-Which", "old"),))
    responses.from_entry(old, 1000.1, "hit", "HIT")
    address = id(old)
    del old
    for _ in range(1000):  # CPython reuses freed addresses quickly
        new = entry(stored_at=1000.0, headers=(("X-Which", "new"),))
        if id(new) == address:
            break
    answered = responses.from_entry(new, 1000.1, "hit", "HIT")
    assert answered.headers["X-Which"] == "new"


def test_header_blocks_stay_within_their_budget_and_leave_entries_untouched() -> None:
    stored = [entry(stored_at=1000.0, headers=(("X-N", str(n)),)) for n in range(5000)]
    for item in stored:
        responses.from_entry(item, 1000.1, "hit", "HIT")
        assert responses._BLOCKS.used_bytes <= responses.BLOCKS_MAX_BYTES
    huge = entry(headers=(("Content-Security-Policy", "x" * (responses.BLOCKS_MAX_BYTES // 8)),))
    answered = responses.from_entry(huge, time.time(), "hit", "HIT")
    assert responses._BLOCKS.get(huge.headers) is None  # over its share: not kept
    assert answered.headers["Content-Security-Policy"] == huge.headers[0][1]
    assert stored[0] == entry(stored_at=1000.0, headers=(("X-N", "0"),))
    assert not hasattr(stored[0], "__dict__")


LATIN = "caf\xe9 cr\xe8me"
WIDE = "\u2603 \U0001f600 \u65e5\u672c"


@pytest.mark.parametrize(
    "make_lines",
    [
        lambda n: (("Content-Type", "application/json"), ("ETag", f'"{n:032x}"')),
        lambda n: tuple((f"X-Header-{i}", f"value {n} {i}" * 3) for i in range(20)),
        lambda n: (("Content-Type", "a/b"), ("X-Latin", LATIN * 5), ("X-Wide", f"{n}{WIDE}")),
        lambda n: (("Link", "</a.css>; rel=preload" * 40), (f"X-{n}", WIDE * 30)),
    ],
    ids=["usual", "many lines", "non-ascii", "long"],
)
def test_the_block_memo_holds_no_more_than_it_counts(make_lines: Any) -> None:
    # A full memo's real size (every object only it keeps alive, as tracemalloc traces
    # them) within its accounting: the estimates are upper bounds, and not wildly so.
    date = ("Date", "Tue, 24 Nov 2026 07:00:00 GMT")
    kept = responses._BLOCKS
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        n = 0
        while kept.used_bytes < kept.max_bytes * 0.9 and n < 50_000:
            lines = tuple((header_name(name), value) for name, value in (*make_lines(n), date))
            responses.from_entry(entry(headers=lines, stored_at=1000.0), 1000.5, "hit", "HIT")
            n += 1
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    accounted = sum(each.used_bytes for each in memo.registered())  # header names too
    assert len(kept) == n
    assert traced <= accounted, traced / accounted
    assert traced >= accounted * 0.45, traced / accounted


def test_a_block_s_wire_is_kept_with_it() -> None:
    lines = (("Content-Type", "a/b"), ("Date", "Tue, 24 Nov 2026 07:00:00 GMT"))
    stored = entry(headers=lines, stored_at=1000.0)
    answered = responses.from_entry(stored, 1000.5, "hit", "HIT")
    known = responses._BLOCKS.get(lines)
    assert known is not None and known[2] is not None
    assert answered._wire is known[2]  # type: ignore[attr-defined]
    assert isinstance(known[1], CIMultiDict)
