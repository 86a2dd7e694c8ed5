"""HTTP caching conformance (RFC 9111, RFC 9110) of cachekit, seen through a caching proxy.

The system under test is a *decorated catch-all proxy handler*: every request to the proxy
app is forwarded (method, path and query, end-to-end request headers, body) to a small
ORIGIN aiohttp app started on a loopback port, and the origin's status, end-to-end headers
and body come back as a `web.Response`. The proxy routes differ only in their `@cached`
options:

    /honor/...  @cached(honor_request_cache_control=True)   request directives obeyed
    /emit/...   @cached(emit_cache_control=True)             freshness told downstream
    /stale/...  @cached(stale_ttl=30, stale_if_error=30)     stale serving allowed
    /...        @cached()                                    plain: no decorator ttl

None has a decorator ttl, so the origin's freshness headers decide; `default_ttl` is
small (5 s) but non-zero. The proxy forwards `If-None-Match` / `If-Modified-Since`: a
client's never reach it (cachekit answers them itself), only cachekit's revalidations do.
The origin counts its hits per (method, path), so each test can tell
whether the cache answered. Time moves through a clock injected into the cache (real time
plus an offset the test advances); only the Age test also sleeps ~1.1 s of real time.

Each test names the RFC section it checks.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from email.utils import formatdate

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDict, CIMultiDictProxy
from pytest_aiohttp import AiohttpClient, AiohttpServer
from yarl import URL

from cachekit import Cache, cached, get_cache
from cachekit.entry import body_etag
from tests.apps import make_app

Client = TestClient[web.Request, web.Application]

DEFAULT_TTL = 5.0

# RFC 9110 §7.6.1 connection-specific fields, never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# The cache answers conditionals itself; Host and framing are the proxy's own.
NOT_FORWARDED_REQUEST = HOP_BY_HOP | {
    "host",
    "content-length",
    "accept-encoding",
    "if-match",
    "if-unmodified-since",
    "if-range",
}
NOT_FORWARDED_RESPONSE = HOP_BY_HOP | {"content-length", "content-encoding", "server"}

HeaderSpec = Mapping[str, str] | Iterable[tuple[str, str]] | None


# ============================================================================ the origin


Behaviour = Callable[[web.Request, int], web.Response]


def respond(
    status: int = 200,
    *,
    headers: HeaderSpec | Callable[[web.Request], HeaderSpec] = None,
    body: bytes | Callable[[web.Request, int], bytes] | None = None,
) -> Behaviour:
    """An origin behaviour: this status and these headers; the body defaults to
    `"<path> #<n>"`, n being the origin's hit count for the path (so each origin
    response is distinguishable from the previous ones)."""

    def behaviour(request: web.Request, n: int) -> web.Response:
        lines = headers(request) if callable(headers) else headers
        out: CIMultiDict[str] = CIMultiDict(lines or ())
        if callable(body):
            payload = body(request, n)
        elif body is not None:
            payload = body
        else:
            payload = f"{request.path} #{n}".encode()
        if "Content-Type" not in out:
            out["Content-Type"] = "text/plain; charset=utf-8"
        return web.Response(status=status, headers=out, body=payload)

    return behaviour


class Origin:
    """The origin app: per-path behaviours set by each test, and a hit counter."""

    def __init__(self) -> None:
        self.hits: Counter[tuple[str, str]] = Counter()
        self.behaviours: dict[str, Behaviour] = {}
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    def on(self, path: str, behaviour: Behaviour) -> None:
        self.behaviours[path] = behaviour

    def count(self, path: str, method: str = "GET") -> int:
        return self.hits[(method, path)]

    async def handle(self, request: web.Request) -> web.Response:
        self.hits[(request.method, request.path)] += 1
        behaviour = self.behaviours.get(request.path)
        if behaviour is None:
            return web.Response(status=418, text=f"no scenario for {request.path}")
        return behaviour(request, self.hits[(request.method, request.path)])


# ============================================================================ the proxy


class Clock:
    """Real time plus an offset the test advances; injected as the cache's clock."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def proxy_routes(origin_base: URL, session: aiohttp.ClientSession) -> web.RouteTableDef:
    """The cached catch-all proxy handlers (see the module docstring)."""

    async def forward(request: web.Request, prefix: str) -> web.Response:
        upstream_path = request.rel_url.raw_path[len(prefix) :] or "/"
        query = request.rel_url.raw_query_string
        url = URL(f"{origin_base}{upstream_path}" + (f"?{query}" if query else ""), encoded=True)
        headers: CIMultiDict[str] = CIMultiDict(
            (name, value)
            for name, value in request.headers.items()
            if name.lower() not in NOT_FORWARDED_REQUEST
        )
        headers["X-Forwarded-Host"] = request.host
        data = await request.read() if request.can_read_body else None
        async with session.request(
            request.method, url, headers=headers, data=data, allow_redirects=False
        ) as upstream:
            payload = await upstream.read()
            out: CIMultiDict[str] = CIMultiDict(
                (name, value)
                for name, value in upstream.headers.items()
                if name.lower() not in NOT_FORWARDED_RESPONSE
            )
            return web.Response(status=upstream.status, headers=out, body=payload)

    routes = web.RouteTableDef()

    @routes.route("*", "/honor/{tail:.*}")
    @cached(name="honoring_proxy", honor_request_cache_control=True)
    async def honoring_proxy(request: web.Request) -> web.Response:
        return await forward(request, "/honor")

    @routes.route("*", "/emit/{tail:.*}")
    @cached(name="emitting_proxy", emit_cache_control=True)
    async def emitting_proxy(request: web.Request) -> web.Response:
        return await forward(request, "/emit")

    @routes.route("*", "/stale/{tail:.*}")
    @cached(name="stale_proxy", stale_ttl=30, stale_if_error=30)
    async def stale_proxy(request: web.Request) -> web.Response:
        return await forward(request, "/stale")

    @routes.route("*", "/{tail:.*}")
    @cached(name="proxy")
    async def proxy(request: web.Request) -> web.Response:
        return await forward(request, "")

    return routes


@dataclass(frozen=True)
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def x_cache(self) -> str:
        return self.headers.get("X-Cache", "")


@dataclass
class Rig:
    origin: Origin
    origin_server: TestServer
    client: Client
    cache: Cache
    clock: Clock

    async def fetch(
        self, path: str, method: str = "GET", headers: HeaderSpec = None, data: bytes | None = None
    ) -> Reply:
        async with self.client.request(
            method,
            path,
            headers=CIMultiDict(headers or ()),
            data=data,
            allow_redirects=False,
        ) as response:
            return Reply(response.status, response.headers, await response.read())

    async def get(self, path: str, headers: HeaderSpec = None) -> Reply:
        return await self.fetch(path, headers=headers)


@pytest.fixture
async def rig(aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient) -> AsyncIterator[Rig]:
    origin = Origin()
    origin_server: TestServer = await aiohttp_server(origin.app)
    session = aiohttp.ClientSession()
    app, cache = make_app(
        proxy_routes(origin_server.make_url(""), session), default_ttl=DEFAULT_TTL
    )

    async def close_session(_: web.Application) -> None:
        # on_cleanup runs after the cache's cleanup_ctx, which finishes background refreshes.
        await session.close()

    app.on_cleanup.append(close_session)
    clock = Clock()
    cache.clock = clock.now
    client: Client = await aiohttp_client(app)
    assert get_cache(app) is cache
    yield Rig(origin, origin_server, client, cache, clock)


def http_date(timestamp: float) -> str:
    return formatdate(timestamp, usegmt=True)


def assert_stored(first: Reply, second: Reply) -> None:
    assert first.x_cache == "MISS"
    assert second.x_cache == "HIT"
    assert second.body == first.body


# ============================================================ RFC 9111 §4.2.1 freshness lifetime


async def test_rfc9111_4_2_1_max_age_sets_the_freshness_lifetime(rig: Rig) -> None:
    """RFC 9111 §4.2.1 / §5.2.2.1: max-age=30 keeps the response fresh for 30 s, well past
    default_ttl, and not longer."""
    rig.origin.on("/f", respond(headers={"Cache-Control": "max-age=30"}))
    first = await rig.get("/f")
    rig.clock.advance(20)
    second = await rig.get("/f")
    assert_stored(first, second)
    assert rig.origin.count("/f") == 1
    rig.clock.advance(11)  # 31 s old: stale
    third = await rig.get("/f")
    assert third.x_cache == "MISS"
    assert third.body == b"/f #2"
    assert rig.origin.count("/f") == 2


@pytest.mark.parametrize(
    ("cache_control", "fresh_at", "stale_at"),
    [
        ("max-age=2, s-maxage=30", 20, 31),  # s-maxage lengthens
        ("s-maxage=3, max-age=30", 2, 10),  # s-maxage shortens too
    ],
)
async def test_rfc9111_4_2_1_s_maxage_overrides_max_age(
    rig: Rig, cache_control: str, fresh_at: float, stale_at: float
) -> None:
    """RFC 9111 §4.2.1 / §5.2.2.10: in a shared cache s-maxage overrides max-age."""
    rig.origin.on("/s", respond(headers={"Cache-Control": cache_control}))
    await rig.get("/s")
    rig.clock.advance(fresh_at)
    assert (await rig.get("/s")).x_cache == "HIT"
    rig.clock.advance(stale_at - fresh_at)
    assert (await rig.get("/s")).x_cache == "MISS"
    assert rig.origin.count("/s") == 2


async def test_rfc9111_4_2_1_expires_minus_date(rig: Rig) -> None:
    """RFC 9111 §4.2.1 / §5.3: without max-age, freshness lifetime = Expires - Date."""

    def headers(_: web.Request) -> list[tuple[str, str]]:
        now = time.time()
        return [("Date", http_date(now)), ("Expires", http_date(now + 30))]

    rig.origin.on("/e", respond(headers=headers))
    first = await rig.get("/e")
    assert "Cache-Control" not in first.headers
    rig.clock.advance(20)
    assert_stored(first, await rig.get("/e"))
    rig.clock.advance(15)  # 35 s old, Expires - Date = 30
    assert (await rig.get("/e")).x_cache == "MISS"
    assert rig.origin.count("/e") == 2


async def test_rfc9111_4_2_1_max_age_takes_precedence_over_expires(rig: Rig) -> None:
    """RFC 9111 §4.2.1 / §5.3: when max-age is present, Expires is ignored."""

    def headers(_: web.Request) -> list[tuple[str, str]]:
        now = time.time()
        return [("Cache-Control", "max-age=30"), ("Expires", http_date(now + 2))]

    rig.origin.on("/me", respond(headers=headers))
    await rig.get("/me")
    rig.clock.advance(10)
    assert (await rig.get("/me")).x_cache == "HIT"
    assert rig.origin.count("/me") == 1


@pytest.mark.parametrize("expires", ["0", "-1", "not a date", "past"])
async def test_rfc9111_5_3_invalid_or_past_expires_means_already_stale(
    rig: Rig, expires: str
) -> None:
    """RFC 9111 §5.3 / §4.2.1: an invalid Expires (especially "0") is a time in the past:
    the response is already stale, so it is not served fresh (cachekit: not stored)."""
    value = http_date(time.time() - 3600) if expires == "past" else expires
    rig.origin.on("/x", respond(headers={"Expires": value}))
    first = await rig.get("/x")
    second = await rig.get("/x")
    assert first.status == second.status == 200
    assert second.x_cache == "MISS"
    assert second.body == b"/x #2"
    assert rig.origin.count("/x") == 2


async def test_rfc9111_4_2_1_duplicate_max_age_uses_first_or_is_stale(rig: Rig) -> None:
    """RFC 9111 §4.2.1: with conflicting duplicate directives, either the first occurrence
    is used or the response is considered stale; never the later, longer lifetime."""
    rig.origin.on(
        "/dup",
        respond(headers=[("Cache-Control", "max-age=2"), ("Cache-Control", "max-age=30")]),
    )
    await rig.get("/dup")
    rig.clock.advance(10)
    assert (await rig.get("/dup")).x_cache == "MISS"
    assert rig.origin.count("/dup") == 2


# ============================================================================ RFC 9111 §5.1 Age


async def test_rfc9111_5_1_age_on_hits_is_an_integer_that_grows(rig: Rig) -> None:
    """RFC 9111 §5.1 / §4.2.3: a response from the cache carries Age, a non-negative
    integer number of seconds since the response was generated, growing with time."""
    rig.origin.on("/age", respond(headers={"Cache-Control": "max-age=60"}))
    await rig.get("/age")
    hit = await rig.get("/age")
    assert hit.x_cache == "HIT"
    assert hit.headers.getall("Age") == ["0"]
    await asyncio.sleep(1.1)  # real time, no clock tricks
    later = await rig.get("/age")
    age = later.headers["Age"]
    assert age.isdigit() and 1 <= int(age) <= 2
    rig.clock.advance(10)
    latest = await rig.get("/age")
    assert latest.headers["Age"].isdigit()
    assert 11 <= int(latest.headers["Age"]) <= 12
    assert rig.origin.count("/age") == 1


async def test_rfc9111_4_2_3_upstream_age_counts_toward_current_age(rig: Rig) -> None:
    """RFC 9111 §4.2.3 / §5.1: current_age includes the received Age (corrected_age_value);
    a response received with Age: 20 and max-age=30 has 10 s of freshness left, and
    the Age sent on hits is at least 20."""
    rig.origin.on("/aged", respond(headers={"Cache-Control": "max-age=30", "Age": "20"}))
    await rig.get("/aged")
    hit = await rig.get("/aged")
    assert hit.x_cache == "HIT"
    assert int(hit.headers["Age"]) >= 20
    rig.clock.advance(15)  # current age 35 > 30
    assert (await rig.get("/aged")).x_cache == "MISS"


# ======================================================= RFC 9111 §5.2.2 response directives


@pytest.mark.parametrize(
    "cache_control",
    [
        pytest.param("no-store", id="5.2.2.5-no-store"),
        pytest.param("max-age=60, no-store", id="5.2.2.5-no-store-with-max-age"),
        pytest.param("private", id="5.2.2.7-private"),
        pytest.param("private, max-age=60", id="5.2.2.7-private-with-max-age"),
        pytest.param("s-maxage=60, private", id="5.2.2.7-private-with-s-maxage"),
        pytest.param("no-cache", id="5.2.2.4-no-cache"),
        pytest.param("no-cache, max-age=60", id="5.2.2.4-no-cache-with-max-age"),
    ],
)
async def test_rfc9111_5_2_2_response_directives_forbid_reuse(rig: Rig, cache_control: str) -> None:
    """RFC 9111 §5.2.2.5 (no-store: never stored), §5.2.2.7 (private: never stored by a
    shared cache), §5.2.2.4 (no-cache: never reused without revalidation; cachekit does
    not store it): every request reaches the origin."""
    rig.origin.on("/d", respond(headers={"Cache-Control": cache_control}))
    first = await rig.get("/d")
    second = await rig.get("/d")
    assert first.x_cache == second.x_cache == "MISS"
    assert (first.body, second.body) == (b"/d #1", b"/d #2")
    assert second.headers["Cache-Control"] == cache_control
    assert rig.origin.count("/d") == 2


# ============================================================ RFC 9111 §3 storing: status codes


@pytest.mark.parametrize(
    ("status", "stored"),
    [
        pytest.param(200, True, id="200-stored"),
        pytest.param(404, True, id="404-heuristically-cacheable"),
        pytest.param(500, False, id="500-not-stored"),
        pytest.param(502, False, id="502-not-stored"),
        pytest.param(503, False, id="503-not-stored"),
        pytest.param(206, False, id="206-not-stored"),
    ],
)
async def test_rfc9111_3_status_codes(rig: Rig, status: int, stored: bool) -> None:
    """RFC 9111 §3 / §4.2.2 (RFC 9110 §15.1 heuristically cacheable codes): without
    explicit freshness, 200 and 404 are stored (default_ttl); 5xx errors are not;
    206 is not stored by default (§3.3/3.4: partial content needs range support)."""
    headers = {"Content-Range": "bytes 0-5/100"} if status == 206 else None
    rig.origin.on("/st", respond(status, headers=headers))
    first = await rig.get("/st")
    second = await rig.get("/st")
    assert first.status == second.status == status
    assert rig.origin.count("/st") == (1 if stored else 2)
    if stored:
        assert_stored(first, second)
    else:
        assert second.x_cache == "MISS"
        assert second.body == b"/st #2"


@pytest.mark.parametrize("status", [302, 307, 400, 503])
async def test_rfc9111_3_any_final_status_with_explicit_freshness_is_stored(
    rig: Rig, status: int
) -> None:
    """RFC 9111 §3: a response of any final status may be stored when it carries explicit
    freshness (here max-age); the allow-list only covers responses without it."""
    rig.origin.on("/fresh-status", respond(status, headers={"Cache-Control": "max-age=60"}))
    first = await rig.get("/fresh-status")
    second = await rig.get("/fresh-status")
    assert first.status == second.status == status
    assert_stored(first, second)
    assert rig.origin.count("/fresh-status") == 1


async def test_rfc9111_5_2_2_3_must_understand_overrides_no_store(rig: Rig) -> None:
    """RFC 9111 §5.2.2.3: a cache that understands the status may store a response with
    must-understand despite no-store."""
    lines = {"Cache-Control": "max-age=60, must-understand, no-store"}
    rig.origin.on("/must-understand", respond(200, headers=lines))
    assert_stored(await rig.get("/must-understand"), await rig.get("/must-understand"))


# ==================================================================== RFC 9111 §3.5 Authorization


async def test_rfc9111_3_5_authorized_requests_are_not_stored(rig: Rig) -> None:
    """RFC 9111 §3.5: a shared cache does not reuse a response to a request carrying
    Authorization (no public/s-maxage/must-revalidate here) for later requests."""
    rig.origin.on("/auth", respond(headers={"Cache-Control": "max-age=60"}))
    first = await rig.get("/auth", {"Authorization": "Bearer one"})
    second = await rig.get("/auth", {"Authorization": "Bearer two"})
    anonymous = await rig.get("/auth")
    assert (first.body, second.body, anonymous.body) == (b"/auth #1", b"/auth #2", b"/auth #3")
    assert anonymous.x_cache == "MISS"
    assert rig.origin.count("/auth") == 3


# ============================================================== RFC 9111 §4 target URI matching


async def test_rfc9111_4_stored_response_reused_only_for_the_same_target_uri(rig: Rig) -> None:
    """RFC 9111 §4: a stored response is reused only when the presented target URI
    (RFC 9110 §7.1, including the authority from Host) matches the stored one's."""
    rig.origin.on(
        "/vhost",
        respond(
            headers={"Cache-Control": "max-age=60"},
            body=lambda request, _: request.headers["X-Forwarded-Host"].encode(),
        ),
    )
    first = await rig.get("/vhost", {"Host": "a.example"})
    other = await rig.get("/vhost", {"Host": "b.example"})
    assert first.body == b"a.example"
    assert other.body == b"b.example"
    assert rig.origin.count("/vhost") == 2


# ============================================================================ RFC 9111 §4.1 Vary


def echo_language(vary: str = "Accept-Language", cache_control: str = "max-age=60") -> Behaviour:
    def body(request: web.Request, n: int) -> bytes:
        value = request.headers.getall("Accept-Language", None)
        shown = "<absent>" if value is None else repr(", ".join(value))
        return f"lang={shown} #{n}".encode()

    return respond(headers={"Vary": vary, "Cache-Control": cache_control}, body=body)


async def test_rfc9111_4_1_vary_selects_the_matching_variant(rig: Rig) -> None:
    """RFC 9111 §4.1: a response with Vary: Accept-Language is reused only for requests
    whose Accept-Language matches; other values get their own response."""
    rig.origin.on("/v", echo_language())
    en = await rig.get("/v", {"Accept-Language": "en"})
    fr = await rig.get("/v", {"Accept-Language": "fr"})
    assert (en.x_cache, fr.x_cache) == ("MISS", "MISS")
    assert (en.body, fr.body) == (b"lang='en' #1", b"lang='fr' #2")
    en_again = await rig.get("/v", {"Accept-Language": "en"})
    fr_again = await rig.get("/v", {"Accept-Language": "fr"})
    assert (en_again.x_cache, fr_again.x_cache) == ("HIT", "HIT")
    assert (en_again.body, fr_again.body) == (en.body, fr.body)
    assert en_again.headers["Vary"] == "Accept-Language"
    assert rig.origin.count("/v") == 2


async def test_rfc9111_4_1_vary_field_name_case_and_whitespace_do_not_matter(rig: Rig) -> None:
    """RFC 9111 §4.1 / RFC 9110 §5.1, §5.6.3: field names are case-insensitive and
    optional whitespace is not significant, in Vary and in the request."""
    rig.origin.on("/vc", echo_language(vary="  ACCEPT-language ,  "))
    first = await rig.get("/vc", {"accept-language": "en"})
    second = await rig.get("/vc", {"ACCEPT-LANGUAGE": "   en  "})
    third = await rig.get("/vc", {"Accept-Language": "en"})
    assert first.body == b"lang='en' #1"
    assert (second.x_cache, third.x_cache) == ("HIT", "HIT")
    assert second.body == third.body == first.body
    other = await rig.get("/vc", {"Accept-Language": "de"})
    assert other.x_cache == "MISS"
    assert rig.origin.count("/vc") == 2


async def test_rfc9111_4_1_vary_combines_repeated_field_lines(rig: Rig) -> None:
    """RFC 9111 §4.1: field lines with the same name may be combined before matching:
    `Accept-Language: en` + `Accept-Language: fr` matches `Accept-Language: en, fr`."""
    rig.origin.on("/vl", echo_language())
    first = await rig.get("/vl", [("Accept-Language", "en"), ("Accept-Language", "fr")])
    second = await rig.get("/vl", {"Accept-Language": "en, fr"})
    assert first.body == b"lang='en, fr' #1"
    assert second.x_cache == "HIT"
    assert second.body == first.body
    assert rig.origin.count("/vl") == 1


async def test_rfc9111_4_1_vary_absent_and_empty_header_differ(rig: Rig) -> None:
    """RFC 9111 §4.1: a header absent from the request matches only a request where it
    is also absent; an empty value is not an absent one."""
    rig.origin.on("/ve", echo_language())
    absent = await rig.get("/ve")
    empty = await rig.get("/ve", {"Accept-Language": ""})
    assert absent.body == b"lang=<absent> #1"
    assert empty.x_cache == "MISS"
    assert empty.body == b"lang='' #2"
    absent_again = await rig.get("/ve")
    empty_again = await rig.get("/ve", {"Accept-Language": ""})
    assert (absent_again.x_cache, empty_again.x_cache) == ("HIT", "HIT")
    assert (absent_again.body, empty_again.body) == (absent.body, empty.body)
    assert rig.origin.count("/ve") == 2


async def test_rfc9111_4_1_vary_star_is_never_stored(rig: Rig) -> None:
    """RFC 9111 §4.1: `Vary: *` always fails to match, so the response is never reused."""
    rig.origin.on("/vs", respond(headers={"Vary": "*", "Cache-Control": "max-age=60"}))
    first = await rig.get("/vs")
    second = await rig.get("/vs")
    assert (first.x_cache, second.x_cache) == ("MISS", "MISS")
    assert second.body == b"/vs #2"
    assert rig.origin.count("/vs") == 2


# ============================================ RFC 9111 §4.3.2 / RFC 9110 §13 conditional requests

CONDITIONAL_BODY = b"conditional representation"
LAST_MODIFIED = time.time() - 86_400


def full_headers(_: web.Request) -> list[tuple[str, str]]:
    now = time.time()
    return [
        ("Cache-Control", "max-age=60"),
        ("Expires", http_date(now + 60)),
        ("Vary", "Accept-Language"),
        ("Content-Location", "/c/canonical"),
        ("Last-Modified", http_date(LAST_MODIFIED)),
        ("X-Origin-Only", "yes"),
    ]


async def stored_conditional(rig: Rig, path: str = "/c") -> Reply:
    rig.origin.on(path, respond(headers=full_headers, body=CONDITIONAL_BODY))
    first = await rig.get(path, {"Accept-Language": "en"})
    assert first.status == 200
    assert first.headers["ETag"] == body_etag(CONDITIONAL_BODY)
    return first


async def test_rfc9111_4_3_2_if_none_match_with_the_etag_gives_304(rig: Rig) -> None:
    """RFC 9111 §4.3.2 / RFC 9110 §13.1.2, §15.4.5: If-None-Match naming the stored
    response's ETag is answered 304 without a body, carrying the ETag, Cache-Control,
    Date, Vary, Expires and Content-Location the 200 would have had."""
    first = await stored_conditional(rig)
    etag = first.headers["ETag"]
    reply = await rig.get("/c", {"Accept-Language": "en", "If-None-Match": etag})
    assert reply.status == 304
    assert reply.body == b""
    for name in ("ETag", "Cache-Control", "Date", "Vary", "Expires", "Content-Location"):
        assert reply.headers.getall(name) == first.headers.getall(name), name
    assert "Content-Type" not in reply.headers  # RFC 9110 §15.4.5: no representation metadata
    assert rig.origin.count("/c") == 1


@pytest.mark.parametrize(
    "template",
    [
        '"nope", {etag}, "other"',
        'W/"nope",{etag}',
        "*",
        "W/{etag}",
        ' {etag} , "x"',
    ],
)
async def test_rfc9110_13_1_2_if_none_match_forms_that_match(rig: Rig, template: str) -> None:
    """RFC 9110 §13.1.2 / §8.8.3.2: If-None-Match matches with a list containing the
    ETag, with `*`, and by weak comparison (W/"x" matches "x")."""
    first = await stored_conditional(rig)
    value = template.format(etag=first.headers["ETag"])
    reply = await rig.get("/c", {"Accept-Language": "en", "If-None-Match": value})
    assert reply.status == 304
    assert reply.body == b""
    assert rig.origin.count("/c") == 1


async def test_rfc9110_8_8_3_2_weak_origin_etag_matches_strong_request_tag(rig: Rig) -> None:
    """RFC 9110 §8.8.3.2 / §13.1.2: weak comparison also matches a stored weak ETag
    (the origin's W/"v1") against a request's "v1"; the origin's ETag is kept."""
    rig.origin.on("/w", respond(headers={"ETag": 'W/"v1"', "Cache-Control": "max-age=60"}))
    first = await rig.get("/w")
    assert first.headers["ETag"] == 'W/"v1"'
    reply = await rig.get("/w", {"If-None-Match": '"v1"'})
    assert reply.status == 304
    assert reply.headers["ETag"] == 'W/"v1"'
    assert rig.origin.count("/w") == 1


async def test_rfc9110_13_1_2_if_none_match_without_the_etag_gives_full_200(rig: Rig) -> None:
    """RFC 9110 §13.1.2: when no listed entity-tag matches, the full 200 is sent."""
    first = await stored_conditional(rig)
    reply = await rig.get("/c", {"Accept-Language": "en", "If-None-Match": '"other", W/"x"'})
    assert reply.status == 200
    assert reply.x_cache == "HIT"
    assert reply.body == CONDITIONAL_BODY
    assert reply.headers["ETag"] == first.headers["ETag"]
    assert rig.origin.count("/c") == 1


@pytest.mark.parametrize(
    ("since", "status"),
    [
        pytest.param(LAST_MODIFIED, 304, id="equal"),
        pytest.param(LAST_MODIFIED + 3600, 304, id="later"),
        pytest.param(LAST_MODIFIED - 3600, 200, id="earlier"),
        pytest.param(None, 200, id="invalid-date"),
    ],
)
async def test_rfc9110_13_1_3_if_modified_since_uses_last_modified(
    rig: Rig, since: float | None, status: int
) -> None:
    """RFC 9111 §4.3.2 / RFC 9110 §13.1.3: If-Modified-Since is evaluated against the
    stored Last-Modified: 304 when not modified since, 200 when modified; an invalid
    date is ignored."""
    await stored_conditional(rig)
    value = "yesterday-ish" if since is None else http_date(since)
    reply = await rig.get("/c", {"Accept-Language": "en", "If-Modified-Since": value})
    assert reply.status == status
    assert reply.body == (b"" if status == 304 else CONDITIONAL_BODY)
    assert rig.origin.count("/c") == 1


async def test_rfc9111_4_3_2_if_modified_since_falls_back_to_date(rig: Rig) -> None:
    """RFC 9111 §4.3.2: when the stored response has no Last-Modified, the cache SHOULD
    evaluate If-Modified-Since against its Date."""
    rig.origin.on("/nolm", respond(headers={"Cache-Control": "max-age=60"}))
    first = await rig.get("/nolm")
    assert "Last-Modified" not in first.headers
    since = http_date(time.time() + 3600)
    reply = await rig.get("/nolm", {"If-Modified-Since": since})
    assert reply.status == 304


@pytest.mark.parametrize(
    ("if_none_match", "since", "status"),
    [
        pytest.param('"other"', LAST_MODIFIED + 3600, 200, id="etag-fails-date-would-match"),
        pytest.param("{etag}", LAST_MODIFIED - 3600, 304, id="etag-matches-date-would-fail"),
    ],
)
async def test_rfc9110_13_2_2_if_none_match_takes_precedence_over_if_modified_since(
    rig: Rig, if_none_match: str, since: float, status: int
) -> None:
    """RFC 9110 §13.1.3 / §13.2.2: If-Modified-Since is ignored when If-None-Match is
    present."""
    first = await stored_conditional(rig)
    headers = {
        "Accept-Language": "en",
        "If-None-Match": if_none_match.format(etag=first.headers["ETag"]),
        "If-Modified-Since": http_date(since),
    }
    reply = await rig.get("/c", headers)
    assert reply.status == status
    assert rig.origin.count("/c") == 1


@pytest.mark.parametrize("tag", ["{etag}", "*"])
async def test_rfc9110_15_4_5_no_304_for_a_stored_404(rig: Rig, tag: str) -> None:
    """RFC 9110 §13.1.2 / §15.4.5: 304 stands for a 200; a stored 404 has no selected
    representation, so conditionals are answered with the 404 itself."""
    rig.origin.on("/gone", respond(404, body=b"not here"))
    first = await rig.get("/gone")
    assert first.status == 404
    value = tag.format(etag=first.headers["ETag"])
    reply = await rig.get("/gone", {"If-None-Match": value})
    assert reply.status == 404
    assert reply.x_cache == "HIT"
    assert reply.body == b"not here"
    modified = await rig.get("/gone", {"If-Modified-Since": http_date(time.time() + 3600)})
    assert modified.status == 404
    assert rig.origin.count("/gone") == 1


async def test_rfc9111_4_3_2_conditional_miss_runs_the_handler_stores_then_304(rig: Rig) -> None:
    """RFC 9111 §4.3.2 / §4.3.1: on a miss the cache does not forward the client's
    validators; it fetches the full response, stores it and evaluates the condition
    itself (304 here). The next plain GET is a hit."""
    body = b"fresh body for a conditional miss"
    rig.origin.on("/cm", respond(headers={"Cache-Control": "max-age=60"}, body=body))
    reply = await rig.get("/cm", {"If-None-Match": body_etag(body)})
    assert reply.status == 304
    assert reply.body == b""
    assert reply.headers["ETag"] == body_etag(body)
    assert rig.origin.count("/cm") == 1
    plain = await rig.get("/cm")
    assert plain.status == 200
    assert plain.x_cache == "HIT"
    assert plain.body == body
    assert rig.origin.count("/cm") == 1


async def test_rfc9110_8_8_3_etags_are_strong_quoted_and_body_derived(rig: Rig) -> None:
    """RFC 9110 §8.8.3: the ETag the cache adds is a strong, quoted entity-tag; equal
    bodies get equal tags (on the miss and on hits), different bodies different tags."""
    same = b"same bytes"
    rig.origin.on("/t1", respond(headers={"Cache-Control": "max-age=60"}, body=same))
    rig.origin.on("/t2", respond(headers={"Cache-Control": "max-age=60"}, body=same))
    rig.origin.on("/t3", respond(headers={"Cache-Control": "max-age=60"}, body=b"other"))
    miss1, miss2, miss3 = await rig.get("/t1"), await rig.get("/t2"), await rig.get("/t3")
    hit1 = await rig.get("/t1")
    assert hit1.x_cache == "HIT"
    expected = body_etag(same)
    assert miss1.headers["ETag"] == miss2.headers["ETag"] == hit1.headers["ETag"] == expected
    assert miss3.headers["ETag"] == body_etag(b"other") != expected
    for tag in (expected, miss3.headers["ETag"]):
        assert not tag.startswith("W/")
        assert len(tag) > 2 and tag[0] == tag[-1] == '"' and '"' not in tag[1:-1]


# ================================================================ RFC 9111 §4.4 invalidation


async def stored_get(rig: Rig, path: str) -> Reply:
    rig.origin.on(path, respond(headers={"Cache-Control": "max-age=60"}))
    first = await rig.get(path)
    assert (await rig.get(path)).x_cache == "HIT"
    return first


@pytest.mark.parametrize(
    ("method", "status"),
    [
        ("POST", 200),
        ("POST", 201),
        ("POST", 204),
        ("POST", 303),
        ("PUT", 200),
        ("PATCH", 200),
        ("DELETE", 204),
    ],
)
async def test_rfc9111_4_4_successful_unsafe_request_invalidates_target(
    rig: Rig, method: str, status: int
) -> None:
    """RFC 9111 §4.4: a non-error (2xx/3xx) response to an unsafe method invalidates the
    target URI: the next GET goes to the origin."""
    await stored_get(rig, "/inv/a")
    rig.origin.behaviours["/inv/a"] = _method_switch(
        rig.origin.behaviours["/inv/a"], {method: respond(status, body=b"")}
    )
    write = await rig.fetch("/inv/a", method, data=b"payload")
    assert write.status == status
    assert rig.origin.count("/inv/a", method) == 1
    after = await rig.get("/inv/a")
    assert after.x_cache == "MISS"
    assert after.body == b"/inv/a #2"
    assert rig.origin.count("/inv/a") == 2


@pytest.mark.parametrize("status", [400, 404, 409, 500, 503])
async def test_rfc9111_4_4_failed_unsafe_request_does_not_invalidate(rig: Rig, status: int) -> None:
    """RFC 9111 §4.4: only non-error responses trigger invalidation; after a 4xx/5xx
    answer to POST the stored GET response is still used."""
    first = await stored_get(rig, "/inv/b")
    rig.origin.behaviours["/inv/b"] = _method_switch(
        rig.origin.behaviours["/inv/b"], {"POST": respond(status)}
    )
    write = await rig.fetch("/inv/b", "POST", data=b"payload")
    assert write.status == status
    after = await rig.get("/inv/b")
    assert after.x_cache == "HIT"
    assert after.body == first.body
    assert rig.origin.count("/inv/b") == 1


def _method_switch(default: Behaviour, by_method: Mapping[str, Behaviour]) -> Behaviour:
    def behaviour(request: web.Request, n: int) -> web.Response:
        return by_method.get(request.method, default)(request, n)

    return behaviour


@pytest.mark.parametrize(
    ("header", "target"),
    [
        ("Location", "/inv/item"),
        ("Content-Location", "/inv/item"),
        ("Location", "http://{host}/inv/item"),
    ],
)
async def test_rfc9111_4_4_location_on_the_same_origin_is_invalidated(
    rig: Rig, header: str, target: str
) -> None:
    """RFC 9111 §4.4: the URIs in Location / Content-Location of a successful unsafe
    response, when on the same origin, may be (and with cachekit are) invalidated."""
    await stored_get(rig, "/inv/item")

    def created(request: web.Request, _: int) -> web.Response:
        value = target.format(host=request.headers["X-Forwarded-Host"])
        return web.Response(status=201, headers={header: value})

    rig.origin.on("/inv/collection", created)
    write = await rig.fetch("/inv/collection", "POST", data=b"new item")
    assert write.status == 201
    after = await rig.get("/inv/item")
    assert after.x_cache == "MISS"
    assert rig.origin.count("/inv/item") == 2


async def test_rfc9111_4_4_location_on_another_host_is_not_invalidated(rig: Rig) -> None:
    """RFC 9111 §4.4: a cache MUST NOT invalidate a Location URI whose origin differs
    from the target URI's (denial-of-service protection)."""
    await stored_get(rig, "/inv/item")
    rig.origin.on(
        "/inv/collection",
        respond(201, headers={"Location": "http://elsewhere.example/inv/item"}),
    )
    assert (await rig.fetch("/inv/collection", "POST", data=b"x")).status == 201
    assert (await rig.get("/inv/item")).x_cache == "HIT"
    assert rig.origin.count("/inv/item") == 1


@pytest.mark.parametrize("form", ["http://{hostname}:1/inv/item", "https://{hostport}/inv/item"])
async def test_rfc9111_4_4_location_on_another_port_or_scheme_is_not_invalidated(
    rig: Rig, form: str
) -> None:
    """RFC 9111 §4.4 / RFC 9110 §4.3.1: an origin is scheme + host + port; a Location on
    the same host name but another port or scheme is another origin, not invalidated."""
    await stored_get(rig, "/inv/item")

    def created(request: web.Request, _: int) -> web.Response:
        host = request.headers["X-Forwarded-Host"]
        value = form.format(hostname=host.rpartition(":")[0], hostport=host)
        return web.Response(status=201, headers={"Location": value})

    rig.origin.on("/inv/collection", created)
    assert (await rig.fetch("/inv/collection", "POST", data=b"x")).status == 201
    assert (await rig.get("/inv/item")).x_cache == "HIT"
    assert rig.origin.count("/inv/item") == 1


@pytest.mark.parametrize("method", ["PROPPATCH", "MOVE"])
async def test_rfc9111_4_4_other_unsafe_methods_invalidate_target(rig: Rig, method: str) -> None:
    """RFC 9111 §4.4 / RFC 9110 §9.2.1: invalidation applies to every unsafe method
    (including methods whose safety is unknown), not only POST/PUT/PATCH/DELETE; only
    GET, HEAD, OPTIONS and TRACE are safe. (aiohttp's parser rejects unregistered method
    names, so registered unsafe WebDAV methods stand in for them.)"""
    await stored_get(rig, "/inv/c")
    rig.origin.behaviours["/inv/c"] = _method_switch(
        rig.origin.behaviours["/inv/c"], {method: respond(200, body=b"done")}
    )
    write = await rig.fetch("/inv/c", method)
    assert write.status == 200
    assert rig.origin.count("/inv/c", method) == 1
    assert (await rig.get("/inv/c")).x_cache == "MISS"


# ============================================================================== HEAD


async def test_rfc9110_9_3_2_head_is_answered_from_the_get_entry(rig: Rig) -> None:
    """RFC 9110 §9.3.2 / RFC 9111 §4.3.5: HEAD is answered from the stored GET response
    with the same header fields and no body; Content-Length is the GET body's length."""
    body = b"a body of some length"
    rig.origin.on("/h", respond(headers={"Cache-Control": "max-age=60"}, body=body))
    got = await rig.get("/h")
    head = await rig.fetch("/h", "HEAD")
    assert head.status == 200
    assert head.x_cache == "HIT"
    assert head.body == b""
    assert head.headers["Content-Length"] == str(len(got.body)) == str(len(body))
    assert head.headers["ETag"] == got.headers["ETag"]
    assert rig.origin.count("/h") == 1
    assert rig.origin.count("/h", "HEAD") == 0


async def test_rfc9110_9_3_2_head_miss_does_not_become_the_get_entry(rig: Rig) -> None:
    """RFC 9110 §9.3.2: a HEAD response has no body; it must not be stored and later
    replayed as the GET response."""
    body = b"the real body"
    rig.origin.on("/hm", respond(headers={"Cache-Control": "max-age=60"}, body=body))
    head = await rig.fetch("/hm", "HEAD")
    assert head.status == 200
    assert head.body == b""
    got = await rig.get("/hm")
    assert got.x_cache == "MISS"
    assert got.body == body
    assert (await rig.fetch("/hm", "HEAD")).x_cache == "HIT"
    assert rig.origin.count("/hm", "HEAD") == 1
    assert rig.origin.count("/hm") == 1


# ======================================================= RFC 9111 §5.2.1 request directives


async def test_rfc9111_5_2_1_4_request_no_cache_refetches_and_stores(rig: Rig) -> None:
    """RFC 9111 §5.2.1.4: request no-cache: the stored response is not used without
    going to the origin; the new response replaces the stored one."""
    rig.origin.on("/r", respond(headers={"Cache-Control": "max-age=60"}))
    await rig.get("/honor/r")
    refetched = await rig.get("/honor/r", {"Cache-Control": "no-cache"})
    assert refetched.x_cache == "MISS"
    assert refetched.body == b"/r #2"
    plain = await rig.get("/honor/r")
    assert plain.x_cache == "HIT"
    assert plain.body == b"/r #2"
    assert rig.origin.count("/r") == 2


async def test_rfc9111_5_2_1_5_request_no_store_does_not_store(rig: Rig) -> None:
    """RFC 9111 §5.2.1.5: request no-store: nothing about the response is stored; with
    nothing stored every such request reaches the origin; an entry that exists is not
    replaced by the response to a no-store request."""
    rig.origin.on("/ns", respond(headers={"Cache-Control": "max-age=60"}))
    one = await rig.get("/honor/ns", {"Cache-Control": "no-store"})
    two = await rig.get("/honor/ns", {"Cache-Control": "no-store"})
    assert (one.body, two.body) == (b"/ns #1", b"/ns #2")
    assert rig.origin.count("/ns") == 2
    plain = await rig.get("/honor/ns")  # nothing was stored
    assert plain.x_cache == "MISS"
    assert plain.body == b"/ns #3"
    bypass = await rig.get("/honor/ns", {"Cache-Control": "no-store, no-cache"})
    assert bypass.body == b"/ns #4"
    await rig.get("/honor/ns", {"Cache-Control": "no-store"})  # may be served from the cache
    after = await rig.get("/honor/ns")
    assert after.x_cache == "HIT"
    assert after.body == b"/ns #3"  # the stored entry was not replaced


async def test_rfc9111_5_2_1_1_request_max_age_rejects_older_entries(rig: Rig) -> None:
    """RFC 9111 §5.2.1.1: request max-age=N: a stored response older than N seconds is
    not used (even though still fresh); the refetched response is stored."""
    rig.origin.on("/ma", respond(headers={"Cache-Control": "max-age=60"}))
    await rig.get("/honor/ma")
    rig.clock.advance(5)
    young_enough = await rig.get("/honor/ma", {"Cache-Control": "max-age=10"})
    assert young_enough.x_cache == "HIT"
    assert young_enough.body == b"/ma #1"
    too_old = await rig.get("/honor/ma", {"Cache-Control": "max-age=2"})
    assert too_old.x_cache == "MISS"
    assert too_old.body == b"/ma #2"
    rig.clock.advance(3)
    again = await rig.get("/honor/ma", {"Cache-Control": "max-age=5"})
    assert again.x_cache == "HIT"
    assert again.body == b"/ma #2"
    assert rig.origin.count("/ma") == 2


async def test_rfc9111_5_2_1_7_only_if_cached(rig: Rig) -> None:
    """RFC 9111 §5.2.1.7: only-if-cached: 504 (Gateway Timeout) when nothing suitable is
    stored, without contacting the origin; the stored response when there is one."""
    rig.origin.on("/oic", respond(headers={"Cache-Control": "max-age=10"}))
    miss = await rig.get("/honor/oic", {"Cache-Control": "only-if-cached"})
    assert miss.status == 504
    assert rig.origin.count("/oic") == 0
    stored = await rig.get("/honor/oic")
    hit = await rig.get("/honor/oic", {"Cache-Control": "only-if-cached"})
    assert hit.status == 200
    assert hit.x_cache == "HIT"
    assert hit.body == stored.body
    rig.clock.advance(11)  # stale now
    stale = await rig.get("/honor/oic", {"Cache-Control": "only-if-cached"})
    assert stale.status == 504
    assert rig.origin.count("/oic") == 1


async def test_rfc9111_5_2_1_request_directives_ignored_unless_honoured(rig: Rig) -> None:
    """RFC 9111 §5.2.1 (directives are advisory to a server-side cache): with
    honor_request_cache_control off (the default) request no-cache, max-age, no-store
    and only-if-cached change nothing."""
    rig.origin.on("/ig", respond(headers={"Cache-Control": "max-age=60"}))
    rig.origin.on("/ig2", respond(headers={"Cache-Control": "max-age=60"}))
    only = await rig.get("/ig", {"Cache-Control": "only-if-cached"})
    assert only.status == 200
    assert only.x_cache == "MISS"
    rig.clock.advance(5)
    for directive in ("no-cache", "max-age=0", "no-store", "only-if-cached"):
        reply = await rig.get("/ig", {"Cache-Control": directive})
        assert reply.x_cache == "HIT", directive
        assert reply.body == b"/ig #1"
    await rig.get("/ig2", {"Cache-Control": "no-store"})
    assert (await rig.get("/ig2")).x_cache == "HIT"
    assert rig.origin.count("/ig") == rig.origin.count("/ig2") == 1


# ===================================================== freshness sent downstream (§5.2.2.1)


async def test_rfc9111_5_2_2_1_emitted_max_age_leaves_the_remaining_lifetime(rig: Rig) -> None:
    """RFC 9111 §5.2.2.1 / §4.2.3: with emit_cache_control, a response that had no
    Cache-Control or Expires carries `public, max-age=<lifetime>`; with `Age` beside it a
    downstream cache computes exactly the remaining freshness (max-age minus Age)."""
    rig.origin.on("/plain", respond())
    miss = await rig.get("/emit/plain")
    assert miss.headers["Cache-Control"] == f"public, max-age={int(DEFAULT_TTL)}"
    rig.clock.advance(2)
    hit = await rig.get("/emit/plain")
    assert hit.x_cache == "HIT"
    (value,) = hit.headers.getall("Cache-Control")
    prefix = "public, max-age="
    assert value.startswith(prefix)
    downstream_remaining = int(value.removeprefix(prefix)) - int(hit.headers["Age"])
    assert DEFAULT_TTL - 2 - 1 <= downstream_remaining <= DEFAULT_TTL - 2


@pytest.mark.parametrize(
    "origin_headers",
    [
        pytest.param({"Cache-Control": "public, max-age=30"}, id="cache-control"),
        pytest.param({"Cache-Control": "max-age=30, stale-if-error=5"}, id="extensions"),
        pytest.param({"Expires": http_date(time.time() + 3600)}, id="expires"),
    ],
)
async def test_rfc9111_5_2_2_emit_never_rewrites_origin_freshness(
    rig: Rig, origin_headers: dict[str, str]
) -> None:
    """RFC 9111 §5.2.2 / §5.3: the origin's own Cache-Control or Expires reaches the
    client unchanged on hits; no competing Cache-Control is added."""
    rig.origin.on("/own", respond(headers=origin_headers))
    await rig.get("/emit/own")
    rig.clock.advance(1)
    hit = await rig.get("/emit/own")
    assert hit.x_cache == "HIT"
    for name in ("Cache-Control", "Expires"):
        expected = [origin_headers[name]] if name in origin_headers else []
        assert hit.headers.getall(name, []) == expected


# ================================== RFC 9111 §4.2.4 / §5.2.2.2 serving stale responses


@pytest.mark.parametrize(
    "cache_control",
    [
        pytest.param("max-age=2, must-revalidate", id="5.2.2.2-must-revalidate"),
        pytest.param("max-age=2, proxy-revalidate", id="5.2.2.8-proxy-revalidate"),
        pytest.param("s-maxage=2", id="5.2.2.10-s-maxage"),
    ],
)
@pytest.mark.parametrize("failure", [False, True], ids=["swr", "stale-if-error"])
async def test_rfc9111_4_2_4_revalidate_directives_forbid_stale_serving(
    rig: Rig, cache_control: str, failure: bool
) -> None:
    """RFC 9111 §4.2.4, §5.2.2.2, §5.2.2.8, §5.2.2.10: once stale, a response carrying
    must-revalidate (proxy-revalidate, or s-maxage in a shared cache) MUST NOT be used
    without validation, even where configuration allows stale serving (here
    stale_ttl=30 / stale_if_error=30); if the origin fails, the error (or a 504) is sent."""
    first_answer = respond(headers={"Cache-Control": cache_control})
    later_answer = respond(503) if failure else first_answer

    def behaviour(request: web.Request, n: int) -> web.Response:
        return (first_answer if n == 1 else later_answer)(request, n)

    rig.origin.on("/mr", behaviour)
    assert (await rig.get("/stale/mr")).body == b"/mr #1"
    rig.clock.advance(5)  # stale, inside both configured stale windows
    reply = await rig.get("/stale/mr")
    assert reply.body != b"/mr #1"
    assert reply.status in ((503, 504) if failure else (200,))


@pytest.mark.parametrize("failure", [False, True], ids=["swr", "stale-if-error"])
async def test_rfc9111_4_2_4_configured_stale_serving_without_revalidate_directives(
    rig: Rig, failure: bool
) -> None:
    """RFC 9111 §4.2.4 (control for the test above): stale serving permitted by
    configuration (an out-of-band contract) applies to a plain max-age response."""
    first_answer = respond(headers={"Cache-Control": "max-age=2"})
    later_answer = respond(503) if failure else first_answer

    def behaviour(request: web.Request, n: int) -> web.Response:
        return (first_answer if n == 1 else later_answer)(request, n)

    rig.origin.on("/ok", behaviour)
    await rig.get("/stale/ok")
    rig.clock.advance(5)
    reply = await rig.get("/stale/ok")
    assert reply.status == 200
    assert reply.x_cache == "STALE"
    assert reply.body == b"/ok #1"
    if not failure:  # the background refresh reaches the origin once
        for _ in range(200):
            if rig.origin.count("/ok") == 2:
                break
            await asyncio.sleep(0.01)
        assert rig.origin.count("/ok") == 2


# ============================================================ RFC 9111 §4.3 validation


def validated(etag: str = '"a"', extra: Mapping[str, str] | None = None) -> Behaviour:
    """An origin behaviour that answers its ETag's If-None-Match with 304 (carrying
    `extra`), else 200; max-age=10 on both."""

    def behaviour(request: web.Request, n: int) -> web.Response:
        headers = {"ETag": etag, "Cache-Control": "max-age=10", **(extra or {})}
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        return web.Response(text=f"{request.path} #{n}", headers=headers)

    return behaviour


async def test_rfc9111_4_3_1_a_stale_entry_is_revalidated_with_its_validator(rig: Rig) -> None:
    """RFC 9111 §4.3.1 / §4.3.3: a stale entry is sent for validation with its ETag; the
    origin's 304 makes it fresh again and the stored body is served."""
    rig.origin.on("/v", validated())
    first = await rig.get("/v")
    rig.clock.advance(11)
    revalidated = await rig.get("/v")
    assert revalidated.status == 200 and revalidated.body == first.body == b"/v #1"
    assert revalidated.x_cache == "REVALIDATED"
    assert revalidated.headers["Cache-Status"].startswith("cachekit; fwd=stale; fwd-status=304")
    rig.clock.advance(9)
    assert (await rig.get("/v")).x_cache == "HIT"
    assert rig.origin.count("/v") == 2


async def test_rfc9111_4_3_1_a_clients_conditionals_are_not_forwarded(rig: Rig) -> None:
    """RFC 9111 §4.3.1: the cache validates with its own stored validators; a client's
    If-None-Match is answered by the cache (here: the stored ETag matches, a 304)."""
    rig.origin.on("/c", validated())
    await rig.get("/c")
    rig.clock.advance(11)
    mine = await rig.get("/c", headers={"If-None-Match": '"a"'})
    assert mine.status == 304 and mine.x_cache == "REVALIDATED"
    rig.clock.advance(11)
    other = await rig.get("/c", headers={"If-None-Match": '"zzz"'})
    assert other.status == 200 and other.body == b"/c #1"


async def test_rfc9111_4_3_4_a_304_updates_the_stored_header_fields(rig: Rig) -> None:
    """RFC 9111 §4.3.4 / §3.2: fields of the 304 replace the stored ones; the body and its
    Content-Length stay."""
    rig.origin.on("/u", validated(extra={"X-Origin-Version": "7"}))
    first = await rig.get("/u")
    rig.origin.on("/u", validated(extra={"X-Origin-Version": "8"}))
    rig.clock.advance(11)
    await rig.get("/u")
    hit = await rig.get("/u")
    assert hit.x_cache == "HIT" and hit.headers["X-Origin-Version"] == "8"
    assert hit.body == first.body and hit.headers["Content-Length"] == str(len(first.body))


async def test_rfc9111_4_3_3_a_200_to_a_revalidation_replaces_the_entry(rig: Rig) -> None:
    """RFC 9111 §4.3.3: a full response to the validation request replaces the stored one."""
    rig.origin.on("/n", validated())
    await rig.get("/n")
    rig.origin.on("/n", validated(etag='"b"'))
    rig.clock.advance(11)
    changed = await rig.get("/n")
    assert changed.x_cache == "MISS" and changed.body == b"/n #2"
    assert (await rig.get("/n")).headers["ETag"] == '"b"'


async def test_rfc9111_5_2_2_4_no_cache_is_stored_and_revalidated_every_time(rig: Rig) -> None:
    """RFC 9111 §5.2.2.4: a no-cache response may be stored, but is never reused without
    successful validation."""
    rig.origin.on("/always", validated(extra={"Cache-Control": "no-cache"}))
    first = await rig.get("/always")
    for _ in range(3):
        again = await rig.get("/always")
        assert again.x_cache == "REVALIDATED" and again.body == first.body
    assert rig.origin.count("/always") == 4


async def test_rfc9110_14_2_a_range_is_answered_from_the_stored_response(rig: Rig) -> None:
    """RFC 9110 §14.2 / §15.3.7: a Range request for a stored 200 gets a 206 with the part;
    the origin is asked once, for the whole."""
    rig.origin.on("/bytes", respond(headers={"Cache-Control": "max-age=60"}, body=b"abcdefgh"))
    part = await rig.get("/bytes", headers={"Range": "bytes=2-4"})
    assert part.status == 206 and part.body == b"cde"
    assert part.headers["Content-Range"] == "bytes 2-4/8"
    none = await rig.get("/bytes", headers={"Range": "bytes=8-"})
    assert none.status == 416 and none.headers["Content-Range"] == "bytes */8"
    assert rig.origin.count("/bytes") == 1


async def test_rfc9111_5_2_2_2_must_revalidate_is_revalidated_not_served_stale(rig: Rig) -> None:
    """RFC 9111 §5.2.2.2: once stale, a must-revalidate response is not served without
    validation (not even from the stale window); validation by its ETag keeps the body."""
    rig.origin.on("/m", validated(extra={"Cache-Control": "max-age=10, must-revalidate"}))
    first = await rig.get("/stale/m")
    rig.clock.advance(11)  # inside /stale/'s 30 s stale window, but must-revalidate
    again = await rig.get("/stale/m")
    assert again.x_cache == "REVALIDATED" and again.body == first.body
    assert rig.origin.count("/m") == 2
