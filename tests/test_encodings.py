"""Compress once, serve every encoding: negotiation (RFC 9110 §12.5.3) as decision tables
and a differential property test of its memo, what is compressed, and through aiohttp on
the embedded store, fakeredis and a real Redis server."""

from __future__ import annotations

import gzip
import json
import logging
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from cachekit import CacheSettings, cached, encodings
from cachekit.encodings import (
    compressible,
    encoded_etag,
    negotiate,
    negotiate_plain,
    parse_codings,
    textual,
)
from cachekit.testing import assert_cache
from tests.apps import make_app, store_for

# ============================================================ negotiation


class TestNegotiate:
    @pytest.mark.parametrize(
        ("accept", "available", "chosen"),
        [
            (None, ("gzip",), None),  # absent: identity, what every client reads
            ("", ("gzip",), None),
            ("gzip", ("gzip",), "gzip"),
            ("GZIP", ("gzip",), "gzip"),
            ("x-gzip", ("gzip",), "gzip"),
            ("gzip, deflate, br", ("br", "gzip"), "br"),  # equal q: the setting's order
            ("gzip, deflate, br", ("gzip", "br"), "gzip"),
            ("br;q=0.5, gzip", ("br", "gzip"), "gzip"),  # q-values first
            ("br;q=0.5, gzip;q=0.4", ("br", "gzip"), "br"),
            ("gzip;q=0", ("gzip",), None),
            ("*", ("gzip",), "gzip"),
            ("*;q=0.1, gzip;q=0", ("br", "gzip"), "br"),
            ("deflate", ("gzip",), None),
            ("identity", ("gzip",), None),
            ("gzip;q=0.5, identity", ("gzip",), None),  # identity preferred by the client
            ("gzip, identity;q=0", ("gzip",), "gzip"),
            ("identity;q=0", ("gzip",), None),  # nothing acceptable: identity anyway
            ("gzip;q=2", ("gzip",), None),  # malformed: ignored
            ("gzip;q=abc", ("gzip",), None),
            ("gzip ; q=0.8 , br ; q=0.9", ("gzip", "br"), "br"),
            (",,gzip,,", ("gzip",), "gzip"),
            ("gzip", (), None),
        ],
    )
    def test_rfc9110_12_5_3(
        self, accept: str | None, available: tuple[str, ...], chosen: str | None
    ) -> None:
        assert negotiate_plain(accept, available) == chosen
        assert negotiate(accept, available) == chosen

    @given(
        accept=st.one_of(
            st.none(),
            st.text(max_size=60),
            st.lists(
                st.tuples(
                    st.sampled_from(["gzip", "br", "zstd", "*", "identity", "x-gzip", "GZip"]),
                    st.one_of(st.none(), st.sampled_from(["0", "0.5", "1", "1.0", "2", "x"])),
                ),
                max_size=5,
            ).map(lambda items: ", ".join(n + (f";q={q}" if q else "") for n, q in items)),
        ),
        available=st.sampled_from([("gzip",), ("br", "gzip"), ("zstd", "br", "gzip"), ()]),
    )
    def test_the_memo_answers_what_the_plain_parse_answers(
        self, accept: str | None, available: tuple[str, ...]
    ) -> None:
        expected = negotiate_plain(accept, available)
        assert negotiate(accept, available) == expected
        assert negotiate(accept, available) == expected  # now from the memo

    def test_the_memo_stays_within_its_budget(self) -> None:
        for n in range(20_000):
            negotiate(f"gzip, x-{n}-" + "y" * 200, ("gzip",))
        assert encodings._NEGOTIATED.used_bytes <= encodings.NEGOTIATED_MAX_BYTES


class TestWhatIsCompressed:
    @pytest.mark.parametrize(
        ("content_type", "expected"),
        [
            ("text/html; charset=utf-8", True),
            ("application/json", True),
            ("application/problem+json", True),
            ("application/javascript", True),
            ("image/svg+xml", True),
            ("application/atom+xml", True),
            ("image/png", False),
            ("application/zip", False),
            ("application/octet-stream", False),
            ("font/woff2", False),
            (None, False),
        ],
    )
    def test_textual_types(self, content_type: str | None, expected: bool) -> None:
        assert textual(content_type) is expected

    JSON = (("Content-Type", "application/json"),)

    @pytest.mark.parametrize(
        ("status", "extra", "size", "expected"),
        [
            (200, (), 2000, True),
            (404, (), 2000, True),
            (200, (), 1023, False),  # under compress_min_bytes
            (200, (("Content-Encoding", "gzip"),), 2000, False),  # encoded already
            (200, (("Cache-Control", "public, no-transform"),), 2000, False),
            (200, (("Content-Range", "bytes 0-9/99"),), 2000, False),
            (206, (), 2000, False),
            (200, (("Content-Type", "text/plain"),), 2000, False),  # two types: unclear
        ],
    )
    def test_decision_table(
        self, status: int, extra: tuple[tuple[str, str], ...], size: int, expected: bool
    ) -> None:
        assert compressible(status, self.JSON + extra, size, 1024) is expected

    def test_settings_parse_and_reject(self) -> None:
        assert parse_codings("br, GZIP") == ("br", "gzip")
        assert parse_codings("") == ()
        with pytest.raises(ValueError, match="unknown content coding"):
            parse_codings("lzma")
        with pytest.raises(ValueError, match="twice"):
            parse_codings("gzip,gzip")

    def test_encoded_etags_differ(self) -> None:
        assert encoded_etag('"abc"', "gzip") == '"abc-gzip"'
        assert encoded_etag('W/"abc"', "br") == 'W/"abc-br"'

    def test_an_unavailable_coding_is_skipped_with_one_log_line(
        self, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(encodings, "CODECS", {"gzip": encodings.CODECS["gzip"]})
        monkeypatch.setattr(encodings, "_warned", set())
        with caplog.at_level(logging.WARNING, "cachekit"):
            assert encodings.usable(("br", "gzip")) == ("gzip",)
            assert encodings.usable(("br", "gzip")) == ("gzip",)
        assert [r.getMessage() for r in caplog.records].count(
            "content coding 'br' is not available (pip install 'cachekit[brotli]'); "
            "entries are stored without it"
        ) == 1


# ============================================================ through aiohttp

PAGE = json.dumps([{"id": n, "name": f"Product {n}", "tags": ["a", "b"]} for n in range(200)])


@pytest.fixture
async def site(aiohttp_client: Any, request: pytest.FixtureRequest, store_kind: str) -> Any:
    routes = web.RouteTableDef()
    calls: list[str] = []

    @routes.get("/page")
    @cached(ttl=60)
    async def page(request: web.Request) -> web.Response:
        calls.append("page")
        return web.Response(text=PAGE, content_type="application/json")

    @routes.get("/self-compressed")
    @cached(ttl=60)
    async def self_compressed(request: web.Request) -> web.Response:
        response = web.Response(text=PAGE, content_type="application/json")
        response.enable_compression()
        return response

    @routes.get("/no-transform")
    @cached(ttl=60)
    async def no_transform(request: web.Request) -> web.Response:
        return web.Response(
            text=PAGE, content_type="application/json", headers={"Cache-Control": "no-transform"}
        )

    @routes.get("/png")
    @cached(ttl=60)
    async def png(request: web.Request) -> web.Response:
        return web.Response(body=b"\x89PNG" + b"\x00" * 5000, content_type="image/png")

    @routes.get("/off")
    @cached(ttl=60, compress=[])
    async def off(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="application/json")

    app, cache = make_app(routes, store=store_for(request, store_kind))
    client = await aiohttp_client(app, auto_decompress=False)
    client.calls, client.cache = calls, cache
    return client


GZIP = {"Accept-Encoding": "gzip, deflate, br"}


async def test_a_hit_sends_the_stored_gzip_bytes(site: Any) -> None:
    miss = await site.get("/page", headers=GZIP)
    hit = await site.get("/page", headers=GZIP)
    assert_cache(hit, "HIT")
    for answer in (miss, hit):
        assert answer.headers["Content-Encoding"] == "gzip"
        assert "Accept-Encoding" in answer.headers["Vary"]
        raw = await answer.read()
        assert int(answer.headers["Content-Length"]) == len(raw) < len(PAGE) / 4
        assert gzip.decompress(raw).decode() == PAGE
    assert site.calls == ["page"]


@pytest.mark.parametrize("accept", [None, "identity", "deflate", "gzip;q=0"])
async def test_other_clients_get_the_identity_body(site: Any, accept: str | None) -> None:
    await site.get("/page", headers=GZIP)
    headers = {"Accept-Encoding": accept} if accept is not None else {"Accept-Encoding": ""}
    answer = await site.get("/page", headers=headers)
    assert "Content-Encoding" not in answer.headers
    assert "Accept-Encoding" in answer.headers["Vary"]
    assert await answer.text() == PAGE


async def test_each_encoding_has_its_own_etag_and_304(site: Any) -> None:
    gzipped = await site.get("/page", headers=GZIP)
    plain = await site.get("/page", headers={"Accept-Encoding": "identity"})
    assert gzipped.headers["ETag"] != plain.headers["ETag"]
    assert gzipped.headers["ETag"] == encoded_etag(plain.headers["ETag"], "gzip")
    again = await site.get("/page", headers={**GZIP, "If-None-Match": gzipped.headers["ETag"]})
    assert again.status == 304 and again.headers["ETag"] == gzipped.headers["ETag"]
    other = await site.get(
        "/page", headers={"Accept-Encoding": "identity", "If-None-Match": gzipped.headers["ETag"]}
    )
    # Another representation: the gzip ETag does not match the identity one.
    assert other.status == 200 and await other.text() == PAGE
    mine = await site.get(
        "/page", headers={"Accept-Encoding": "identity", "If-None-Match": plain.headers["ETag"]}
    )
    assert mine.status == 304 and mine.headers["ETag"] == plain.headers["ETag"]


async def test_head_and_ranges_refer_to_the_representation_sent(site: Any) -> None:
    full = await (await site.get("/page", headers=GZIP)).read()
    head = await site.head("/page", headers=GZIP)
    assert head.headers["Content-Encoding"] == "gzip"
    assert head.headers["Content-Length"] == str(len(full))
    part = await site.get("/page", headers={**GZIP, "Range": "bytes=0-9"})
    assert part.status == 206 and await part.read() == full[:10]
    assert part.headers["Content-Range"] == f"bytes 0-9/{len(full)}"


@pytest.mark.parametrize("path", ["/no-transform", "/png", "/off"])
async def test_never_compressed(site: Any, path: str) -> None:
    await site.get(path, headers=GZIP)
    hit = await site.get(path, headers=GZIP)
    assert_cache(hit, "HIT")
    assert "Content-Encoding" not in hit.headers


async def test_a_handler_that_compresses_itself_is_not_compressed_twice(site: Any) -> None:
    await site.get("/self-compressed", headers=GZIP)
    hit = await site.get("/self-compressed", headers=GZIP)
    assert hit.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(await hit.read()).decode() == PAGE
    plain = await site.get("/self-compressed", headers={"Accept-Encoding": "identity"})
    assert await plain.text() == PAGE


async def test_off_by_setting(aiohttp_client: Any) -> None:
    routes = web.RouteTableDef()

    @routes.get("/page")
    @cached(ttl=60)
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="application/json")

    app, _ = make_app(routes, compress=())
    client = await aiohttp_client(app, auto_decompress=False)
    await client.get("/page", headers=GZIP)
    assert "Content-Encoding" not in (await client.get("/page", headers=GZIP)).headers


def test_the_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHEKIT_COMPRESS", "zstd, gzip")
    assert CacheSettings().compress == ("zstd", "gzip")
    monkeypatch.setenv("CACHEKIT_COMPRESS", "")
    assert CacheSettings().compress == ()


@pytest.mark.parametrize(
    ("accept", "coding"), [("br", "br"), ("zstd, br", "zstd"), ("gzip", "gzip")]
)
async def test_brotli_and_zstandard_when_installed(
    aiohttp_client: Any, accept: str, coding: str
) -> None:
    brotli = pytest.importorskip("brotli")
    zstandard = pytest.importorskip("zstandard")
    routes = web.RouteTableDef()

    @routes.get("/page")
    @cached(ttl=60, compress="zstd,br,gzip")
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="application/json")

    client = await aiohttp_client(make_app(routes)[0], auto_decompress=False)
    await client.get("/page")
    hit = await client.get("/page", headers={"Accept-Encoding": accept})
    assert hit.headers["Content-Encoding"] == coding
    raw = await hit.read()
    decode = {
        "br": brotli.decompress,
        "zstd": lambda data: zstandard.ZstdDecompressor().decompress(data),
        "gzip": gzip.decompress,
    }[coding]
    assert decode(raw).decode() == PAGE
