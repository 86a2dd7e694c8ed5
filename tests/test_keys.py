"""Cache keys: canonical queries, escaping, templates, length bounding.

The central property: two requests that aiohttp hands the handler differently never share
a key. The query is compared as the handler sees it (`request.query`: parameters grouped by
name, the order of repeated parameters kept); the raw path and fragment are compared as
sent, so any two spellings of a path have different keys. tests/test_key_parity.py checks
the same over real sockets against aiohttp's own parsers.
"""

from __future__ import annotations

import hashlib
import itertools
import string
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

import pytest
from aiohttp.test_utils import make_mocked_request
from hypothesis import assume, given
from hypothesis import strategies as st
from multidict import CIMultiDict
from yarl import URL

from cachekit.keys import (
    ABSENT,
    HASHED_MARKER,
    KeyTemplate,
    bound_length,
    canonical_query,
    compose,
    default_key,
    escape_bytes,
    escape_host,
    escape_light,
    escape_path,
    escape_text,
    header_component,
    host_component,
    normalise_header_names,
    path_tag,
    request_key,
    vary_suffix,
)
from cachekit.settings import CacheSettings

ALNUM = set(string.ascii_letters + string.digits)


def url(target: str) -> URL:
    """`request.rel_url` as aiohttp's Python parser builds it from an origin-form target."""
    path, _, fragment = target.partition("#")
    path, _, query = path.partition("?")
    return URL.build(path=path, query_string=query, fragment=fragment, encoded=True)


def cq(raw_query: str) -> str:
    """The canonical query of a raw query string, as parsed for the handler."""
    return canonical_query(url("/?" + raw_query).query)


def dk(name: str, target: str) -> str:
    return default_key(name, url(target))


@dataclass
class FakeRequest:
    """Just the `KeyedRequest` surface; cheaper than a mocked aiohttp request."""

    target: str = "/"
    host: str = "example.com"
    match_info: dict[str, str] = field(default_factory=dict)
    headers: CIMultiDict[str] = field(default_factory=CIMultiDict)
    scheme: str = "http"

    @property
    def rel_url(self) -> URL:
        return url(self.target)


def request(target: str, headers: list[tuple[str, str]] | None = None, **match_info: str):  # type: ignore[no-untyped-def]
    return make_mocked_request(
        "GET",
        target,
        headers=CIMultiDict(headers or [("Host", "example.com")]),
        match_info=match_info,
    )


# ------------------------------------------------------------------ semantic oracles


def query_meaning(raw_query: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The query the handler sees: values by name (repeated ones in order), names sorted."""
    grouped: dict[str, list[str]] = {}
    for name, value in url("/?" + raw_query).query.items():
        grouped.setdefault(name, []).append(value)
    return tuple(sorted((name, tuple(values)) for name, values in grouped.items()))


def header_meaning(values: list[str] | None) -> str | None:
    # Repeated header lines are equivalent to one comma-joined line (RFC 9110 §5.3).
    return None if values is None else ", ".join(values)


# Tokens chosen to sit right on every boundary: separators, their escapes in both cases,
# `+` versus `%20`/`%2B`, broken escapes, non-UTF-8 bytes, non-ASCII text, the ABSENT marker.
QUERY_TOKENS = [
    "a", "b", "A", "1", "=", "&", "+", " ", "%20", "%2B", "%2b", "%3D", "%26", "%23", "#",
    "%", "%2", "%25", "%FF", "%ff", "%FE", "é", "%C3%A9", ":", "%3A", "?", "~", "%7E", ",",
    "%2C", "{", "}", ";",
]  # fmt: skip
PATH_TOKENS = [
    "/", "a", "b", "%2F", "%2f", ":", "%3A", "~", "%7E", "%", "%25", "%2", "%FF", "%FE",
    "é", "%C3%A9", ";", "=", "&", "@", "{", "}", "%7B", " ", "%20", "+", ".", "..",
]  # fmt: skip

raw_queries = st.lists(st.sampled_from(QUERY_TOKENS), max_size=8).map("".join)
raw_paths = st.lists(st.sampled_from(PATH_TOKENS), max_size=8).map(lambda ts: "/" + "".join(ts))
header_values = st.none() | st.lists(
    st.text(alphabet=st.sampled_from(list("ab ,~%:=&#é\udcff")), max_size=4), max_size=3
)
hostile_text = st.text(alphabet=st.sampled_from(list("ab1 ,~%:?&=#{}/é\udcff\x00")), max_size=6)


# ------------------------------------------------------------------ escaping


class TestEscaping:
    def test_escape_bytes_keeps_only_alnum(self) -> None:
        assert escape_bytes(b"aZ09") == "aZ09"
        assert escape_bytes(b"a b") == "a%20b"
        assert escape_bytes(b"\x00\xff~%") == "%00%FF%7E%25"

    @given(st.binary(max_size=20))
    def test_escape_bytes_alphabet(self, data: bytes) -> None:
        escaped = escape_bytes(data)
        assert set(escaped) <= ALNUM | set("%ABCDEF")
        assert unquote_to_bytes(escaped) == data

    @given(st.binary(max_size=12), st.binary(max_size=12))
    def test_escape_bytes_is_injective(self, a: bytes, b: bytes) -> None:
        assume(a != b)
        assert escape_bytes(a) != escape_bytes(b)

    @given(st.text(max_size=12), st.text(max_size=12))
    def test_escape_text_is_injective(self, a: str, b: str) -> None:
        assume(a != b)
        assert escape_text(a) != escape_text(b)

    def test_lone_surrogates_stay_distinct(self) -> None:
        variants = ["\udcff", "\udcfe", "\ufffd", "\xff", "%FF"]
        assert len({escape_text(v) for v in variants}) == len(variants)

    def test_escape_path_keeps_path_characters(self) -> None:
        assert escape_path("/a/b-c_d.e~f") == "/a/b-c_d.e%7Ef"
        assert escape_path("/x%2Fy:z@w") == "/x%252Fy:z@w"  # "%" is escaped too
        assert escape_path("/é") == "/%C3%A9"
        assert escape_path("/a?b") == "/a%3Fb"
        assert escape_path("/a#b") == "/a%23b"

    @given(st.text(max_size=12), st.text(max_size=12))
    def test_escape_path_is_injective(self, a: str, b: str) -> None:
        assume(a != b)
        assert escape_path(a) != escape_path(b)

    @given(st.text(max_size=12))
    def test_escape_path_never_emits_key_separators(self, raw: str) -> None:
        escaped = escape_path(raw)
        assert not set(escaped) & set("?#~{} \t\r\n")

    def test_escape_light_keeps_readable_keys(self) -> None:
        for text in ["get_product:42", "ProductView.get", "user/7?page=2&x=y", "a=b:c"]:
            assert escape_light(text) == text

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("a b", "a%20b"),
            ("50%", "50%25"),
            ("{x}", "%7Bx%7D"),
            ("#", "%23"),
            ("~", "%7E"),
            ("é", "%C3%A9"),
            ("a\nb", "a%0Ab"),
            ("\x7f", "%7F"),
        ],
    )
    def test_escape_light_escapes_structure(self, text: str, expected: str) -> None:
        assert escape_light(text) == expected

    @given(
        st.text(st.characters(codec=None, categories=None), max_size=10),
        st.text(st.characters(codec=None, categories=None), max_size=10),
    )
    def test_escape_light_is_injective(self, a: str, b: str) -> None:
        assume(a != b)
        assert escape_light(a) != escape_light(b)

    @given(st.text(st.characters(codec=None, categories=None), max_size=10))
    def test_escape_light_output_is_safe(self, text: str) -> None:
        escaped = escape_light(text)
        assert escaped.isascii() and escaped.isprintable()
        assert not set(escaped) & set("{}#~ ")


# ------------------------------------------------------------------ queries


class TestCanonicalQuery:
    @pytest.mark.parametrize(
        ("a", "b"),
        [
            ("a=1&b=2", "b=2&a=1"),
            ("q=x+y", "q=x%20y"),
            ("a=1&b=2&a=2", "a=1&a=2&b=2"),
            ("a=1&&b=2&", "a=1&b=2"),
            ("x=é", "x=%C3%A9"),
            ("a", "a="),  # request.query: {"a": ""} either way
            ("a=~", "a=%7E"),
            ("", "&&"),
        ],
    )
    def test_same_handler_query_same_key(self, a: str, b: str) -> None:
        assert query_meaning(a) == query_meaning(b)
        assert cq(a) == cq(b)

    @pytest.mark.parametrize(
        ("a", "b"),
        [
            ("a=1&a=2", "a=2&a=1"),
            ("q=+", "q=%2B"),
            ("a=1&b=2", "a=1%26b%3D2"),
            ("a=1&b=2", "a=1%26b=2"),
            ("a=b=c", "a%3Db=c"),
            ("a=1;b=2", "a=1&b=2"),
            ("k=v%23x", "k=v"),
            ("a=1,2", "a=1&a=2"),
            ("a:b=1", "a=b:1"),
            ("", "a"),
            ("a&a", "a"),
            ("x=%25ff", "x=%ff"),
        ],
    )
    def test_different_handler_query_different_key(self, a: str, b: str) -> None:
        assert query_meaning(a) != query_meaning(b)
        assert cq(a) != cq(b), (a, b)

    def test_canonical_form(self) -> None:
        assert cq("b=2&a=x+y&a=%2F") == "a=x%20y&a=%2F&b=2"
        assert cq("flag&v=") == "flag=&v="

    @given(raw_queries, raw_queries)
    def test_keys_equal_exactly_when_the_handler_query_is_equal(self, a: str, b: str) -> None:
        assume("#" not in a + b)
        assert (cq(a) == cq(b)) == (query_meaning(a) == query_meaning(b))

    @given(raw_queries)
    def test_reordering_distinct_names_keeps_the_key(self, raw: str) -> None:
        assume("#" not in raw)
        by_name: dict[str, list[tuple[str, str]]] = {}
        for name, value in url("/?" + raw).query.items():
            by_name.setdefault(name, []).append((name, value))
        # Reverse the order of the names; keep each name's own values in order.
        shuffled = [pair for name in reversed(list(by_name)) for pair in by_name[name]]
        assert canonical_query(URL("/").with_query(shuffled).query) == cq(raw)


# ------------------------------------------------------------------ default keys


class TestDefaultKey:
    def test_shape(self) -> None:
        assert dk("get_product", "/p/1?b=2&a=1") == "get_product:/p/1?a=1&b=2"
        assert dk("get_product", "/p/1") == "get_product:/p/1?"
        assert dk("get_product", "/p/1?a#frag") == "get_product:/p/1?a=~frag"

    def test_handler_name_is_lightly_escaped(self) -> None:
        assert dk("a b", "/") == "a%20b:/?"
        assert dk("ProductView.get", "/") == "ProductView.get:/?"

    @pytest.mark.parametrize(
        ("a", "b"),
        [
            ("/a%2Fb", "/a/b"),
            ("/a%2fb", "/a%2Fb"),
            ("/a%3Fb=1", "/a?b=1"),
            ("/a?b=1", "/a%3Fb%3D1"),
            ("/p/%FF", "/p/%FE"),
            ("/p?x", "/p%3Fx"),
            ("/p~", "/p?"),
            ("/p%25", "/p%"),
            ("/p%2523", "/p%23"),
            ("/p/", "/p"),
            ("/p/~", "/p/%7E"),
            ("/p?a=1&a=2", "/p?a=2&a=1"),
            ("/p?q=1#frag", "/p?q=1"),
            ("/p?q=1#a", "/p?q=1#b"),
            ("/p#a", "/p%23a"),
            ("/p?#a", "/p?%7Ea"),
            ("/a/../b", "/b"),
            ("//a", "/a"),
            ("/a;p=1", "/a"),
        ],
    )
    def test_different_targets_different_keys(self, a: str, b: str) -> None:
        assert dk("h", a) != dk("h", b)

    @pytest.mark.parametrize(
        ("a", "b"),
        [
            ("/p?a=1&b=2", "/p?b=2&a=1"),
            ("/p?q=a+b", "/p?q=a%20b"),
            ("/p?q", "/p?q="),
            ("/p?", "/p"),
        ],
    )
    def test_targets_the_handler_sees_alike_share_a_key(self, a: str, b: str) -> None:
        assert dk("h", a) == dk("h", b)

    def test_handlers_do_not_share_keys(self) -> None:
        assert dk("one", "/x") != dk("two", "/x")

    @given(raw_paths, raw_paths)
    def test_different_raw_paths_never_collide(self, a: str, b: str) -> None:
        assume(url(a).raw_path != url(b).raw_path)
        assert dk("h", a) != dk("h", b)

    @given(raw_paths, raw_queries, raw_paths, raw_queries)
    def test_targets_the_handler_sees_differently_never_collide(
        self, path_a: str, query_a: str, path_b: str, query_b: str
    ) -> None:
        url_a, url_b = url(f"{path_a}?{query_a}"), url(f"{path_b}?{query_b}")
        seen_a = (url_a.raw_path, query_meaning(url_a.raw_query_string), url_a.raw_fragment)
        seen_b = (url_b.raw_path, query_meaning(url_b.raw_query_string), url_b.raw_fragment)
        if seen_a != seen_b:
            assert default_key("h", url_a) != default_key("h", url_b)

    @pytest.mark.parametrize(("a", "b"), [("/a#x", "/a%23x"), ("/a#x?y=1", "/a%23x?y=1")])
    def test_fragment_cannot_forge_an_escaped_hash(self, a: str, b: str) -> None:
        assert dk("h", a) != dk("h", b)

    def test_the_key_follows_the_url_aiohttp_parsed(self) -> None:
        # aiohttp's C parser hands the handler path "/item/1#x" and the query after it;
        # its Python parser a fragment. Neither may share the key of "/item/1".
        c_parsed = URL.build(path="/item/1#x", query_string="evil=%3C", encoded=True)
        py_parsed = URL.build(path="/item/1", fragment="x?evil=%3C", encoded=True)
        plain = default_key("h", url("/item/1"))
        assert plain not in {default_key("h", c_parsed), default_key("h", py_parsed)}


# ------------------------------------------------------------------ headers and vary


class TestHeaders:
    def test_absent_differs_from_empty(self) -> None:
        assert header_component(CIMultiDict(), "X-A") == ABSENT
        assert header_component(CIMultiDict([("X-A", "")]), "X-A") == ""

    def test_repeated_lines_are_joined(self) -> None:
        headers = CIMultiDict([("X-A", "1"), ("x-a", "2")])
        assert header_component(headers, "x-A") == escape_text("1, 2")
        assert header_component(headers, "X-A") == header_component(
            CIMultiDict([("X-A", "1, 2")]), "X-A"
        )

    def test_literal_tilde_is_not_absence(self) -> None:
        assert header_component(CIMultiDict([("X-A", "~")]), "X-A") != ABSENT

    @given(header_values, header_values)
    def test_header_values_with_different_meaning_never_collide(
        self, a: list[str] | None, b: list[str] | None
    ) -> None:
        def as_headers(values: list[str] | None) -> CIMultiDict[str]:
            return CIMultiDict([("X-A", v) for v in values or []])

        # No header line at all (None or []) is an absent header.
        if header_meaning(a or None) != header_meaning(b or None):
            assert header_component(as_headers(a), "X-A") != header_component(as_headers(b), "X-A")

    def test_vary_suffix(self) -> None:
        req = FakeRequest(headers=CIMultiDict([("Accept-Language", "en-GB"), ("X-Empty", "")]))
        assert vary_suffix(req, ()) == ""
        assert vary_suffix(req, ("accept-language",)) == "#accept-language=en%2DGB"
        assert vary_suffix(req, ("accept-language", "x-empty", "x-none")) == (
            "#accept-language=en%2DGB&x-empty=&x-none=~"
        )

    def test_host_is_the_host_the_handler_sees(self) -> None:
        # Not the raw Host header: an absolute-form target or a proxy middleware's
        # clone(host=...) gives the handler another request.host.
        req = FakeRequest(host="Example.com:80", headers=CIMultiDict(Host="other"))
        assert vary_suffix(req, ("host",)) == "#host=Example.com:80"

    @pytest.mark.parametrize(
        ("a", "b"),
        [
            (("http", "example.com"), ("http", "Example.com")),
            (("http", "example.com"), ("http", "example.com:80")),
            (("http", "example.com"), ("https", "example.com")),
            (("http", "https~example.com"), ("https", "example.com")),
            (("http", ""), ("https", "")),
        ],
    )
    def test_hosts_and_schemes_the_handler_sees_differently_never_collide(
        self, a: tuple[str, str], b: tuple[str, str]
    ) -> None:
        key_a = request_key("b", FakeRequest(scheme=a[0], host=a[1]), ("host",), 250)
        key_b = request_key("b", FakeRequest(scheme=b[0], host=b[1]), ("host",), 250)
        assert key_a != key_b

    @given(st.text(max_size=12), st.text(max_size=12))
    def test_escape_host_is_injective_and_keeps_separators_out(self, a: str, b: str) -> None:
        assert not set(escape_host(a)) & set("?#~&={} \t\r\n/")
        if a != b:
            assert escape_host(a) != escape_host(b)

    @pytest.mark.parametrize(
        ("host", "escaped"),
        [
            ("example.com", "example.com"),
            ("my-app.example.com:8080", "my-app.example.com:8080"),
            ("[::1]:80", "[::1]:80"),
            ("a%2Eb", "a%252Eb"),
            ("a b", "a%20b"),
            ("é", "%C3%A9"),
        ],
    )
    def test_escape_host_keeps_hosts_readable(self, host: str, escaped: str) -> None:
        assert escape_host(host) == escaped

    @given(st.text(max_size=6), st.text(max_size=6), st.text(max_size=6), st.text(max_size=6))
    def test_host_components_are_injective(self, s1: str, h1: str, s2: str, h2: str) -> None:
        assume((s1, h1) != (s2, h2))
        assert host_component(FakeRequest(scheme=s1, host=h1)) != host_component(
            FakeRequest(scheme=s2, host=h2)
        )

    @given(header_values, header_values, header_values, header_values)
    def test_vary_suffix_distinguishes_every_header(
        self,
        a1: list[str] | None,
        b1: list[str] | None,
        a2: list[str] | None,
        b2: list[str] | None,
    ) -> None:
        def headers(a: list[str] | None, b: list[str] | None) -> CIMultiDict[str]:
            return CIMultiDict([("A", v) for v in a or []] + [("B", v) for v in b or []])

        def meaning(values: list[str] | None) -> str | None:
            return header_meaning(values or None)

        names = ("a", "b")
        if (meaning(a1), meaning(b1)) != (meaning(a2), meaning(b2)):
            assert vary_suffix(FakeRequest(headers=headers(a1, b1)), names) != vary_suffix(
                FakeRequest(headers=headers(a2, b2)), names
            )

    def test_normalise_header_names(self) -> None:
        assert normalise_header_names([" Accept-Language", "ACCEPT-LANGUAGE", "X-A"]) == (
            "accept-language",
            "x-a",
        )

    @pytest.mark.parametrize("bad", ["", "  "])
    def test_normalise_header_names_rejects_empty(self, bad: str) -> None:
        with pytest.raises(ValueError, match="empty header name"):
            normalise_header_names(["x", bad])


# ------------------------------------------------------------------ templates


class TestKeyTemplateValidation:
    @pytest.mark.parametrize(
        "template",
        ["{foo}", "{}", "{0}", "{path.x}", "{query[a]b}", "{Path}", "x:{request}"],
    )
    def test_unknown_field(self, template: str) -> None:
        with pytest.raises(ValueError, match="unknown field"):
            KeyTemplate(template)

    @pytest.mark.parametrize(
        "template",
        ["{query}", "{headers}", "{match_info}", "{query[]}", "{path[x]}", "{host[x]}"],
    )
    def test_malformed_field(self, template: str) -> None:
        with pytest.raises(ValueError, match="malformed"):
            KeyTemplate(template)

    @pytest.mark.parametrize(
        "template",
        [
            "{path}{host}",
            "{match_info[a]}{match_info[b]}",
            "{match_info[a]}x{match_info[b]}",
            "{query[a]}42{query[b]}",
            "{path}%{host}",
            "p:{headers[a]}AB%{headers[b]}",
        ],
    )
    def test_adjacent_fields_need_a_separator(self, template: str) -> None:
        with pytest.raises(ValueError, match="separator"):
            KeyTemplate(template)

    @pytest.mark.parametrize("template", ["{path:>10}", "{path!r}", "{host!s:5}", "{query[a]:x}"])
    def test_format_specs_and_conversions_are_rejected(self, template: str) -> None:
        with pytest.raises(ValueError, match="no format specs or conversions"):
            KeyTemplate(template)

    def test_error_names_the_template(self) -> None:
        with pytest.raises(ValueError, match=r"'p:\{nope\}'"):
            KeyTemplate("p:{nope}")

    @pytest.mark.parametrize(
        "template",
        [
            "static",
            "{path}",
            "{path}:{host}",
            "p:{match_info[id]}",
            "{path}/{query[page]}",
            "{headers[X-Api-Version]}-{query[q]}",
            "{{lit}}:{path}",
        ],
    )
    def test_valid_templates(self, template: str) -> None:
        assert KeyTemplate(template).template == template


class TestKeyTemplateRendering:
    def test_path(self) -> None:
        assert KeyTemplate("{path}").render(request("/items/%2Fa/b?x=1")) == "/items/%252Fa/b"

    def test_host_is_escaped_as_the_handler_sees_it(self) -> None:
        req = request("/", [("Host", "Example.COM:8080")])
        assert KeyTemplate("{host}").render(req) == "Example%2ECOM%3A8080"

    def test_match_info(self) -> None:
        template = KeyTemplate("product:{match_info[id]}")
        assert template.render(request("/p/42", id="42")) == "product:42"
        assert template.render(request("/p/a b", id="a b")) == "product:a%20b"
        assert template.render(request("/p")) == "product:~"
        assert template.render(request("/p", id="")) == "product:"
        assert template.render(request("/p", id="~")) == "product:%7E"

    @given(
        st.none() | hostile_text | st.text(max_size=8) | st.sampled_from(["42", "٣", "Ⅻ", "aB9"])
    )
    def test_a_compiled_match_info_key_renders_as_the_template(self, value: str | None) -> None:
        template = KeyTemplate("product:{match_info[id]}:v2")
        req = FakeRequest(match_info={} if value is None else {"id": value})
        expected = "product:" + ("~" if value is None else escape_text(value)) + ":v2"
        assert template.compiled()(req) == template.render(req) == expected

    def test_query(self) -> None:
        template = KeyTemplate("q={query[q]}")
        assert template.render(request("/s?q=a&x=1&q=b")) == "q=a,b"
        assert template.render(request("/s?q=a%2Cb")) == "q=a%2Cb"
        assert template.render(request("/s?q=x+y")) == template.render(request("/s?q=x%20y"))
        assert template.render(request("/s?q=")) == "q="
        assert template.render(request("/s?q")) == "q="  # request.query: {"q": ""} either way
        assert template.render(request("/s?x=1")) == "q=~"
        assert template.render(request("/s?q=%25FF")) != template.render(request("/s?q=%FF"))

    def test_query_name_is_matched_after_decoding(self) -> None:
        template = KeyTemplate("{query[a b]}")
        assert template.render(request("/s?a+b=1")) == "1"
        assert template.render(request("/s?a%20b=2")) == "2"

    def test_headers(self) -> None:
        template = KeyTemplate("v:{headers[X-Api]}")
        assert template.render(request("/", [("x-api", "2")])) == "v:2"
        assert template.render(request("/", [("X-Api", "1"), ("X-API", "2")])) == "v:1%2C%202"
        assert template.render(request("/", [("X-Api", "")])) == "v:"
        assert template.render(request("/", [("Host", "h")])) == "v:~"

    def test_literal_braces(self) -> None:
        assert KeyTemplate("{{lit}}:{path}").render(request("/x")) == "{lit}:/x"

    def test_everything_together(self) -> None:
        template = KeyTemplate(
            "{path}:{host}:{match_info[id]}:{query[q]}:{headers[X-A]}:{headers[X-None]}"
        )
        req = request("/p/1?q=z", [("Host", "h"), ("X-A", "v")], id="1")
        assert template.render(req) == "/p/1:h:1:z:v:~"

    @given(
        st.none() | hostile_text,
        st.none() | hostile_text,
        st.none() | hostile_text,
        st.none() | hostile_text,
    )
    def test_match_info_values_cannot_collide(
        self, a1: str | None, b1: str | None, a2: str | None, b2: str | None
    ) -> None:
        assume((a1, b1) != (a2, b2))
        template = KeyTemplate("k:{match_info[a]}:{match_info[b]}")

        def req(a: str | None, b: str | None) -> FakeRequest:
            info = {name: v for name, v in (("a", a), ("b", b)) if v is not None}
            return FakeRequest(match_info=info)

        assert template.render(req(a1, b1)) != template.render(req(a2, b2))

    @given(raw_paths, raw_queries, st.text(max_size=4), raw_paths, raw_queries, st.text(max_size=4))
    def test_all_fields_cannot_collide(
        self, path1: str, query1: str, host1: str, path2: str, query2: str, host2: str
    ) -> None:
        template = KeyTemplate("{query[a]}:{host}:{query[b]}:{path}")

        def req(path: str, query: str, host: str) -> FakeRequest:
            return FakeRequest(target=f"{path}?{query}", host=host)

        def meaning(path: str, query: str, host: str) -> object:
            target = url(f"{path}?{query}")
            params = dict(query_meaning(target.raw_query_string))
            return (target.raw_path, host, params.get("a"), params.get("b"))

        if meaning(path1, query1, host1) != meaning(path2, query2, host2):
            assert template.render(req(path1, query1, host1)) != template.render(
                req(path2, query2, host2)
            )

    @pytest.mark.parametrize(("a", "b"), [("/s?v", "/s"), ("/s?v", "/s?w=1")])
    def test_valueless_query_parameter_is_not_absent(self, a: str, b: str) -> None:
        # aiohttp gives the handler different query parameters for the two targets.
        assert list(request(a).query.items()) != list(request(b).query.items())
        template = KeyTemplate("{query[v]}")
        assert template.render(request(a)) != template.render(request(b))

    @pytest.mark.parametrize(
        "separator",
        [
            ":",
            "?",
            "&",
            "=",
            "#",
            "{{",
            "}}",
            "%",
            ",",
            "/",
            "-",
            "~",
        ],
    )
    def test_separator_cannot_be_forged(self, separator: str) -> None:
        """Either the template is refused, or no two hostile inputs share a key."""
        try:
            template = KeyTemplate("{query[a]}" + separator + "{query[b]}")
        except ValueError:
            return
        literal = separator.replace("{{", "{").replace("}}", "}")
        values = ["", "x", "~", "%", "%7E", ",", literal, "x" + literal, literal + "x"]
        seen: dict[str, tuple[str | None, str | None]] = {}
        for a, b in itertools.product([None, *values], repeat=2):
            params = [(n, v) for n, v in (("a", a), ("b", b)) if v is not None]
            query = "&".join(f"{n}={escape_bytes(v.encode())}" for n, v in params)
            key = template.render(FakeRequest(target=f"/?{query}"))
            assert seen.setdefault(key, (a, b)) == (a, b), (key, seen[key], (a, b))


# ------------------------------------------------------------------ length bounding


class TestBoundLength:
    def test_short_keys_are_unchanged(self) -> None:
        assert bound_length("abc", 250) == "abc"
        assert bound_length("x" * 250, 250) == "x" * 250

    def test_long_keys_are_hashed(self) -> None:
        key = "p:" + "x" * 300
        bounded = bound_length(key, 250)
        digest = hashlib.sha256(key.encode()).hexdigest()
        assert len(bounded) == 250
        assert bounded == key[: 250 - len(HASHED_MARKER) - 64] + HASHED_MARKER + digest

    def test_hashing_is_deterministic(self) -> None:
        key = "k" * 1000
        assert bound_length(key, 100) == bound_length(key, 100) == bound_length(key[:], 100)

    def test_surrogates_can_be_hashed(self) -> None:
        assert bound_length("\udcff" * 300, 100) != bound_length("\udcfe" * 300, 100)

    def test_common_prefix_does_not_merge_keys(self) -> None:
        prefix = "x" * 500
        assert bound_length(prefix + "a", 200) != bound_length(prefix + "b", 200)

    @given(
        st.text(max_size=400),
        st.text(max_size=400),
        st.integers(min_value=len(HASHED_MARKER) + 64, max_value=300),
    )
    def test_distinct_keys_stay_distinct_and_bounded(self, a: str, b: str, limit: int) -> None:
        assume(a != b)
        bounded_a, bounded_b = bound_length(a, limit), bound_length(b, limit)
        assert len(bounded_a) <= limit
        assert bounded_a != bounded_b

    @pytest.mark.parametrize("limit", [128, 129])
    def test_bound_holds_at_the_smallest_allowed_setting(self, limit: int) -> None:
        assert len(bound_length("k" * 500, limit)) <= limit

    def test_settings_refuse_a_bound_too_small_for_the_digest(self) -> None:
        with pytest.raises(ValueError, match="max_key_length"):
            CacheSettings(max_key_length=71)


class TestCompose:
    def test_short_parts_are_concatenated(self) -> None:
        assert compose("h:/p?", "#accept-language=en", 250) == "h:/p?#accept-language=en"
        assert compose("h:/p?", "", 250) == "h:/p?"

    def test_long_base_is_bounded_and_suffix_kept(self) -> None:
        base = "h:/" + "x" * 500
        key = compose(base, "#a=1", 100)
        assert key == bound_length(base, 100) + "#a=1"

    def test_long_suffix_is_hashed(self) -> None:
        suffix = "#x-long=" + "v" * 300
        key = compose("h:/p?", suffix, 100)
        assert key == "h:/p?#" + hashlib.sha256(suffix.encode()).hexdigest()

    def test_variants_of_one_base_share_the_bounded_prefix(self) -> None:
        base = "h:/" + "x" * 500
        a, b = compose(base, "#l=en", 100), compose(base, "#l=fr", 100)
        assert a != b
        assert a[:100] == b[:100] == bound_length(base, 100)

    @given(
        st.text(max_size=150),
        st.sampled_from(["", "#a=1", "#a=~", "#a=", "#a=" + "z" * 120, "#a=" + "y" * 120]),
        st.text(max_size=150),
        st.sampled_from(["", "#a=1", "#a=~", "#a=", "#a=" + "z" * 120, "#a=" + "y" * 120]),
    )
    def test_distinct_parts_give_distinct_keys(
        self, base1: str, suffix1: str, base2: str, suffix2: str
    ) -> None:
        # Bases never contain '#' of their own: every escaper escapes it.
        assume("#" not in base1 + base2)
        assume((base1, suffix1) != (base2, suffix2))
        assert compose(base1, suffix1, 100) != compose(base2, suffix2, 100)


class TestPathTag:
    def test_query_and_fragment_are_ignored(self) -> None:
        tags = {path_tag(url(t)) for t in ["/a/b?x=1", "/a/b", "/a/b?y=2#f"]}
        assert tags == {"path:/a/b"}

    def test_every_spelling_of_a_path_shares_its_tag(self) -> None:
        # A purge reaches more spellings of a path, never fewer.
        assert path_tag(url("/a%20b")) == path_tag(url("/a b")) == "path:/a%20b"
        assert path_tag(url("/%61")) == path_tag(url("/a"))

    @given(raw_paths, raw_paths)
    def test_different_decoded_paths_different_tags(self, a: str, b: str) -> None:
        if url(a).path != url(b).path:
            assert path_tag(url(a)) != path_tag(url(b))


# ------------------------------------------------------------------ request_key's inline host


@given(
    base=st.text(alphabet=st.sampled_from(list("ab:?~%#/é")), max_size=40),
    host=st.text(alphabet=st.sampled_from(list("aZ9-._:[]%# é\udcff\x00/@")), max_size=30)
    | st.sampled_from(["shop.example", "Shop.Example:8080", "[::1]:80", "", "a" * 300]),
    scheme=st.sampled_from(["http", "https", "HTTP", "ws"]),
    max_length=st.integers(min_value=1, max_value=120),
)
def test_the_inline_default_host_is_what_compose_builds(
    base: str, host: str, scheme: str, max_length: int
) -> None:
    # `request_key` appends a plain-http host that needs no escaping without `compose`'s
    # calls; whatever the base, host, scheme and bound, the key is compose's.
    names = normalise_header_names(["Host"])  # the default key's shared tuple
    request = FakeRequest(host=host, scheme=scheme)
    expected = compose(base, vary_suffix(request, names), max_length)
    assert request_key(base, request, names, max_length) == expected
    assert request_key(base, request, ("host",), max_length) == expected  # a tuple of its own
