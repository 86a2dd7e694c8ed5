"""Byte ranges from stored responses (RFC 9110 §14, §13.1.5, §15.3.7, §15.5.17): decision
tables and a property test for `cachekit.ranges`, then 206 / 416 / If-Range through aiohttp
on the embedded store, fakeredis and a real Redis server."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from cachekit import cached
from cachekit.ranges import ByteRange, Unsatisfiable, if_range_holds, select_range
from cachekit.testing import assert_cache
from tests.apps import make_app, store_for

LAST_MODIFIED = "Sun, 06 Nov 1994 08:49:37 GMT"


class TestSelectRange:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("bytes=0-4", ByteRange(0, 4, 10)),
            ("bytes=5-", ByteRange(5, 9, 10)),
            ("bytes=-3", ByteRange(7, 9, 10)),
            ("bytes=-30", ByteRange(0, 9, 10)),  # longer than the body: all of it
            ("bytes=8-100", ByteRange(8, 9, 10)),  # past the end: up to the end
            ("bytes=9-9", ByteRange(9, 9, 10)),
            ("BYTES=1-2", ByteRange(1, 2, 10)),  # the unit is case-insensitive
            ("bytes= 1 - 2 ", ByteRange(1, 2, 10)),
            ("bytes=1-2,", ByteRange(1, 2, 10)),  # empty list elements are allowed
        ],
    )
    def test_a_single_range(self, value: str, expected: ByteRange) -> None:
        assert select_range(value, 10) == expected

    @pytest.mark.parametrize("value", ["bytes=10-", "bytes=10-20", "bytes=-0"])
    def test_unsatisfiable(self, value: str) -> None:
        answer = select_range(value, 10)
        assert answer == Unsatisfiable(10) and answer.content_range == "bytes */10"

    @pytest.mark.parametrize(
        "value",
        [
            "bytes=0-1,3-4",  # several: the full 200
            "bytes=5-2",  # last before first: invalid
            "bytes=a-b",
            "bytes=1",
            "bytes=",
            "bytes=-",
            "bytes=--1",
            "bytes=+1-2",
            "bytes=1-+2",
            "items=0-1",
            "0-1",
            "bytes=99999999999999999999-",
            "bytes=0x1-2",
            "bytes=\uff11-2",  # a non-ASCII digit
        ],
    )
    def test_ignored_means_the_full_response(self, value: str) -> None:
        assert select_range(value, 10) is None

    def test_an_empty_body_is_sent_whole(self) -> None:
        assert select_range("bytes=0-", 0) is None

    @given(
        length=st.integers(1, 2000),
        first=st.one_of(st.none(), st.integers(0, 3000)),
        last=st.one_of(st.none(), st.integers(0, 3000)),
    )
    def test_the_part_is_the_slice_rfc_9110_describes(
        self, length: int, first: int | None, last: int | None
    ) -> None:
        value = f"bytes={'' if first is None else first}-{'' if last is None else last}"
        answer = select_range(value, length)
        body = bytes(range(256)) * 8
        body = body[:length]
        if first is None and last is None:
            assert answer is None
        elif first is None:
            assert last is not None
            if last == 0:
                assert answer == Unsatisfiable(length)
            else:
                assert isinstance(answer, ByteRange)
                assert body[answer.first : answer.last + 1] == body[-last:]
        elif last is not None and last < first:
            assert answer is None
        elif first >= length:
            assert answer == Unsatisfiable(length)
        else:
            assert isinstance(answer, ByteRange)
            end = length if last is None else last + 1
            assert body[answer.first : answer.last + 1] == body[first:end]
            assert answer.content_range == f"bytes {answer.first}-{answer.last}/{length}"


class TestIfRange:
    LINES = (("ETag", '"v1"'), ("Last-Modified", LAST_MODIFIED))

    @pytest.mark.parametrize(
        ("if_range", "etag", "holds"),
        [
            (None, '"v1"', True),
            ('"v1"', '"v1"', True),
            ('"v2"', '"v1"', False),
            ('W/"v1"', '"v1"', False),  # weak tags never match (strong comparison)
            ('"v1"', 'W/"v1"', False),
            (LAST_MODIFIED, '"v1"', True),
            ("Sun, 06 Nov 1994 08:49:38 GMT", '"v1"', False),
            ("not a date", '"v1"', False),
        ],
    )
    def test_strong_validators_only(self, if_range: str | None, etag: str, holds: bool) -> None:
        assert if_range_holds(if_range, etag, self.LINES) is holds

    def test_a_date_without_last_modified_does_not_hold(self) -> None:
        assert not if_range_holds(LAST_MODIFIED, '"v1"', (("ETag", '"v1"'),))


# ============================================================ through aiohttp

BODY = b"0123456789abcdefghij"


@pytest.fixture
async def ranged(aiohttp_client: Any, request: pytest.FixtureRequest, store_kind: str) -> Any:
    seen: list[dict[str, str]] = []
    routes = web.RouteTableDef()

    @routes.get("/file")
    @cached(ttl=60)
    async def file(request: web.Request) -> web.Response:
        seen.append({k: v for k, v in request.headers.items() if "range" in k.lower()})
        return web.Response(
            body=BODY,
            content_type="text/plain",
            headers={"ETag": '"v1"', "Last-Modified": LAST_MODIFIED},
        )

    @routes.get("/missing")
    @cached(ttl=60)
    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404, text="nothing here")

    app, _ = make_app(routes, store=store_for(request, store_kind))
    client = await aiohttp_client(app)
    client.seen = seen
    return client


async def test_a_miss_asks_for_the_whole_body_and_answers_the_range(ranged: Any) -> None:
    part = await ranged.get("/file", headers={"Range": "bytes=2-5", "If-Range": '"v1"'})
    assert part.status == 206 and await part.read() == b"2345"
    assert part.headers["Content-Range"] == "bytes 2-5/20"
    assert part.headers["Content-Length"] == "4" and part.headers["ETag"] == '"v1"'
    assert_cache(part, "MISS")
    assert ranged.seen == [{}]  # the handler saw neither Range nor If-Range
    whole = await ranged.get("/file")
    assert_cache(whole, "HIT")
    assert whole.status == 200 and await whole.read() == BODY


@pytest.mark.parametrize(
    ("value", "status", "body", "content_range"),
    [
        ("bytes=0-0", 206, b"0", "bytes 0-0/20"),
        ("bytes=15-", 206, b"fghij", "bytes 15-19/20"),
        ("bytes=-3", 206, b"hij", "bytes 17-19/20"),
        ("bytes=10-999", 206, b"abcdefghij", "bytes 10-19/20"),
        ("bytes=20-", 416, b"", "bytes */20"),
        ("bytes=0-1,4-5", 200, BODY, None),
        ("bytes=5-1", 200, BODY, None),
        ("lines=1-2", 200, BODY, None),
    ],
)
async def test_hits_answer_ranges(
    ranged: Any, value: str, status: int, body: bytes, content_range: str | None
) -> None:
    await ranged.get("/file")
    answer = await ranged.get("/file", headers={"Range": value})
    assert answer.status == status and await answer.read() == body
    assert answer.headers.get("Content-Range") == content_range
    assert answer.headers["X-Cache"] == "HIT"


@pytest.mark.parametrize(
    ("if_range", "status"),
    [('"v1"', 206), ('"v0"', 200), ('W/"v1"', 200), (LAST_MODIFIED, 206), ("junk", 200)],
)
async def test_if_range_decides_between_the_part_and_the_whole(
    ranged: Any, if_range: str, status: int
) -> None:
    await ranged.get("/file")
    answer = await ranged.get("/file", headers={"Range": "bytes=0-3", "If-Range": if_range})
    assert answer.status == status
    assert await answer.read() == (b"0123" if status == 206 else BODY)


async def test_a_matching_if_none_match_wins_over_range(ranged: Any) -> None:
    await ranged.get("/file")
    answer = await ranged.get("/file", headers={"Range": "bytes=0-3", "If-None-Match": '"v1"'})
    assert answer.status == 304


async def test_head_and_stored_errors_ignore_range(ranged: Any) -> None:
    await ranged.get("/file")
    head = await ranged.head("/file", headers={"Range": "bytes=0-3"})
    assert head.status == 200 and "Content-Range" not in head.headers
    await ranged.get("/missing")
    missing = await ranged.get("/missing", headers={"Range": "bytes=0-3"})
    assert missing.status == 404 and await missing.text() == "nothing here"
