"""Cache keys: templates, canonical queries and collision-proof escaping of request data.

Every value taken from a request is escaped so that only ASCII letters and digits survive
unescaped; `%XX` encodes the rest and `~` marks an absent value. Separators in the key
(`:`, `?`, `&`, `=`, `#`) can therefore never be forged by a client, and escaping is
injective, so two different inputs never yield one key.
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache, update_wrapper
from typing import Final, Generic, Protocol, TypeVar
from urllib.parse import unquote_to_bytes

from multidict import MultiMapping

ABSENT: Final = "~"
# Not "#": that separates a base key from its Vary variant.
HASHED_MARKER: Final = "~sha256="
_ALNUM: Final = frozenset(string.ascii_letters + string.digits)
_STRICT: Final = tuple(chr(byte) if chr(byte) in _ALNUM else f"%{byte:02X}" for byte in range(256))
# Characters a raw (client-encoded) path may keep as they are; "%" stays so an escape the
# client sent (e.g. %2F, distinct from "/") keeps its meaning.
_PATH_SAFE: Final = frozenset(string.ascii_letters + string.digits + "/%-._!$&'()*+,;=:@")
# Light escaping for keys a developer's callable returns: readable, yet still injective.
_LIGHT_UNSAFE: Final = frozenset("%{}#~ \t\r\n\x0b\x0c")
TEMPLATE_FIELDS: Final = frozenset({"path", "host", "match_info", "query", "headers"})
#: Memoised key parts: at most this many results per function, each from an input of at
#: most MEMO_MAX_CHARS characters, so client-chosen 8 KB paths and headers cannot make the
#: memos grow past a few megabytes; longer inputs are computed every time.
MEMO_ENTRIES: Final = 4096
MEMO_MAX_CHARS: Final = 512

_Result = TypeVar("_Result")


class ShortInputMemo(Generic[_Result]):
    """A function of one string behind an `lru_cache` that long strings bypass. `memo`
    and `compute` are exposed so a hot caller can inline the length check."""

    def __init__(self, function: Callable[[str], _Result]) -> None:
        self.compute = function
        self.memo = lru_cache(maxsize=MEMO_ENTRIES)(function)
        update_wrapper(self, function)

    def __call__(self, text: str) -> _Result:
        return self.memo(text) if len(text) <= MEMO_MAX_CHARS else self.compute(text)


class KeyedRequest(Protocol):
    """The parts of a request a key may be built from (aiohttp's `web.Request` fits)."""

    @property
    def match_info(self) -> Mapping[str, str]: ...
    @property
    def headers(self) -> MultiMapping[str]: ...
    @property
    def host(self) -> str: ...
    @property
    def raw_path(self) -> str: ...


def escape_bytes(data: bytes) -> str:
    """Escape bytes so that only ASCII letters and digits remain literal."""
    return "".join([_STRICT[byte] for byte in data])


@ShortInputMemo
def escape_text(text: str) -> str:
    """Strictly escape text; lone surrogates (undecodable input) are kept distinct."""
    return escape_bytes(text.encode("utf-8", "surrogatepass"))


@ShortInputMemo
def escape_path(raw_path: str) -> str:
    """A client's raw path, with every character that could act as a key separator escaped."""
    return "".join(char if char in _PATH_SAFE else escape_text(char) for char in raw_path)


def escape_light(text: str) -> str:
    """Escape only what could break a key's structure; keeps developer keys readable."""
    if not _LIGHT_UNSAFE.intersection(text) and text.isascii() and text.isprintable():
        return text
    return "".join(
        char
        if char.isascii() and char.isprintable() and char not in _LIGHT_UNSAFE
        else escape_text(char)
        for char in text
    )


def split_raw_target(raw_target: str) -> tuple[str, str]:
    """Split a raw request target into its raw path and raw query string (no fragment)."""
    path, _, query = raw_target.partition("#")[0].partition("?")
    return path, query


def _decode_query_part(raw: str) -> bytes:
    return unquote_to_bytes(raw.replace("+", " "))


@ShortInputMemo
def query_pairs(raw_query: str) -> tuple[tuple[str, str], ...]:
    """The escaped (name, value) pairs of a raw query string, in their original order."""
    pairs = []
    for part in raw_query.split("&"):
        if not part:
            continue
        name, has_value, value = part.partition("=")
        escaped = escape_bytes(_decode_query_part(value)) if has_value else ABSENT
        pairs.append((escape_bytes(_decode_query_part(name)), escaped))
    return tuple(pairs)


@ShortInputMemo
def canonical_query(raw_query: str) -> str:
    """Query parameters sorted by name; repeated parameters keep their relative order."""
    ordered = sorted(query_pairs(raw_query), key=lambda pair: pair[0])
    return "&".join(f"{name}={value}" for name, value in ordered)


def header_component(headers: MultiMapping[str], name: str) -> str:
    """One request header's escaped value; repeated lines are joined, absence is `~`."""
    values = headers.getall(name, None)
    if values is None:
        return ABSENT
    return escape_text(", ".join(values))


def vary_suffix(headers: MultiMapping[str], names: tuple[str, ...]) -> str:
    """The key part naming the values of the request headers the entry varies on."""
    if not names:
        return ""
    return _format_suffix(names, _vary_values(headers, names))


def _vary_values(headers: MultiMapping[str], names: tuple[str, ...]) -> tuple[str | None, ...]:
    values = []
    for name in names:
        lines = headers.getall(name, None)
        values.append(None if lines is None else ", ".join(lines))
    return tuple(values)


def _format_suffix(names: tuple[str, ...], values: tuple[str | None, ...]) -> str:
    return "#" + "&".join(
        f"{name}={ABSENT if value is None else escape_text(value)}"
        for name, value in zip(names, values, strict=True)
    )


def bound_length(key: str, max_length: int) -> str:
    """Replace an over-long key by a readable prefix plus the digest of the whole key."""
    if len(key) <= max_length:
        return key
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    keep = max(0, max_length - len(HASHED_MARKER) - len(digest))
    return key[:keep] + HASHED_MARKER + digest


def compose(base: str, suffix: str, max_length: int) -> str:
    """A full key: the bounded base, then the bounded `#vary` suffix (kept apart so every
    variant of one base shares its prefix, and so its Redis Cluster hash slot)."""
    if len(suffix) > max_length:
        suffix = "#" + hashlib.sha256(suffix.encode("utf-8", "surrogatepass")).hexdigest()
    return bound_length(base, max_length) + suffix


def request_key(
    base: str, headers: MultiMapping[str], vary: tuple[str, ...], max_length: int
) -> str:
    """A request's full key: its base key plus the values of the headers it varies on."""
    if not vary:
        return base if len(base) <= max_length else bound_length(base, max_length)
    if len(vary) == 1:  # the common case (the default key varies on Host alone)
        lines = headers.getall(vary[0], None)
        values: tuple[str | None, ...] = (
            None if lines is None else lines[0] if len(lines) == 1 else ", ".join(lines),
        )
    else:
        values = _vary_values(headers, vary)
    memo_key = (base, vary, values, max_length)
    key = _FULL_KEYS.get(memo_key)
    if key is None:
        key = compose(base, _format_suffix(vary, values), max_length)
        if len(base) + sum(len(value) for value in values if value) <= MEMO_MAX_CHARS:
            if len(_FULL_KEYS) >= MEMO_ENTRIES:
                _FULL_KEYS.clear()
            _FULL_KEYS[memo_key] = key
    return key


_FULL_KEYS: Final[dict[tuple[str, tuple[str, ...], tuple[str | None, ...], int], str]] = {}


def path_tag(raw_target: str) -> str:
    """The implicit tag of every entry stored for a path (RFC 9111 §4.4 invalidation)."""
    return "path:" + escape_path(split_raw_target(raw_target)[0])


def default_key(handler_name: str, raw_target: str) -> str:
    """`name:path?canonical-query`, the key used when a handler gives none."""
    if len(raw_target) <= MEMO_MAX_CHARS:
        return _memoized_default_key(handler_name, raw_target)
    return _default_key(handler_name, raw_target)


def _default_key(handler_name: str, raw_target: str) -> str:
    raw_path, raw_query = split_raw_target(raw_target)
    return f"{escape_light(handler_name)}:{escape_path(raw_path)}?{canonical_query(raw_query)}"


_memoized_default_key: Final = lru_cache(maxsize=MEMO_ENTRIES)(_default_key)


Getter = Callable[[KeyedRequest], str]


class KeyTemplate:
    """A compiled key template such as `"product:{match_info[id]}"`.

    Fields: `{path}`, `{host}`, `{match_info[NAME]}`, `{query[NAME]}`, `{headers[NAME]}`.
    The template is checked once, at decoration time; rendering is a few lookups.
    """

    __slots__ = ("_parts", "template")

    def __init__(self, template: str) -> None:
        self.template = template
        self._parts: list[tuple[str, Getter | None]] = []
        previous_was_field = False
        for literal, field, spec, conversion in string.Formatter().parse(template):
            if previous_was_field and field is not None and _is_ambiguous_separator(literal):
                raise ValueError(
                    f"key template {template!r}: put a separator such as ':' between fields,"
                    f" otherwise different values could produce the same key"
                )
            if field is None:
                self._parts.append((literal, None))
                continue
            if spec or conversion:
                raise ValueError(f"key template {template!r}: no format specs or conversions")
            self._parts.append((literal, _field_getter(template, field)))
            previous_was_field = True

    def render(self, request: KeyedRequest) -> str:
        """The key for this request."""
        return "".join(
            [literal + getter(request) if getter else literal for literal, getter in self._parts]
        )

    def compiled(self) -> Callable[[KeyedRequest], str]:
        """`render` as one closure; a template with a single field costs one getter call."""
        fields = [(literal, getter) for literal, getter in self._parts if getter is not None]
        if len(fields) != 1:
            return self.render
        prefix, getter = fields[0]
        tail = "".join(literal for literal, got in self._parts if got is None)
        if self._parts[-1][1] is not None:
            tail = ""
        field = getattr(getter, "match_info_name", None)
        if field is not None:  # the common `"product:{match_info[id]}"`, in one call
            return _match_info_key(field, prefix, tail)
        return lambda request: prefix + getter(request) + tail


def _is_ambiguous_separator(literal: str) -> bool:
    # Escaped values consist of letters, digits and "%"; "~" marks an absent value.
    return all(char in _ALNUM or char in "%~" for char in literal)


def _field_getter(template: str, field: str) -> Getter:
    base, bracket, rest = field.partition("[")
    if base not in TEMPLATE_FIELDS or (bracket and not rest.endswith("]")):
        raise ValueError(
            f"key template {template!r}: unknown field {{{field}}}; use one of"
            " {path}, {host}, {match_info[...]}, {query[...]}, {headers[...]}"
        )
    argument = rest[:-1] if bracket else ""
    needs_argument = base in {"match_info", "query", "headers"}
    if needs_argument != bool(argument):
        raise ValueError(f"key template {template!r}: field {{{field}}} is malformed")
    return _GETTER_FACTORIES[base](argument)


def _path_getter(_: str) -> Getter:
    return lambda request: escape_path(split_raw_target(request.raw_path)[0])


def _host_getter(_: str) -> Getter:
    return lambda request: escape_text(request.host.lower())


def _match_info_getter(name: str) -> Getter:
    def get(request: KeyedRequest) -> str:
        value = request.match_info.get(name)
        return ABSENT if value is None else escape_text(value)

    get.match_info_name = name  # type: ignore[attr-defined]  # see KeyTemplate.compiled
    return get


def _match_info_key(name: str, prefix: str, tail: str) -> Callable[[KeyedRequest], str]:
    """`prefix + {match_info[name]} + tail` with `escape_text` inlined."""
    memo, escape, limit = escape_text.memo, escape_text.compute, MEMO_MAX_CHARS

    def key(request: KeyedRequest) -> str:
        value = request.match_info.get(name)
        if value is None:
            return prefix + ABSENT + tail
        if value.isascii() and value.isalnum():  # letters and digits escape to themselves
            return prefix + value + tail
        return prefix + (memo(value) if len(value) <= limit else escape(value)) + tail

    return key


def _query_getter(name: str) -> Getter:
    wanted = escape_text(name)

    def get(request: KeyedRequest) -> str:
        raw_query = split_raw_target(request.raw_path)[1]
        # `?v` and `?v=` both mean v="" to the handler (request.query): render them alike.
        values = [
            "" if value == ABSENT else value
            for key, value in query_pairs(raw_query)
            if key == wanted
        ]
        return ",".join(values) if values else ABSENT

    return get


def _headers_getter(name: str) -> Getter:
    return lambda request: header_component(request.headers, name)


_GETTER_FACTORIES: Final[Mapping[str, Callable[[str], Getter]]] = {
    "path": _path_getter,
    "host": _host_getter,
    "match_info": _match_info_getter,
    "query": _query_getter,
    "headers": _headers_getter,
}


def normalise_header_names(names: Iterable[str]) -> tuple[str, ...]:
    """Lower-cased, stripped, de-duplicated header names in a stable order."""
    seen: list[str] = []
    for name in names:
        normalised = name.strip().lower()
        if not normalised:
            raise ValueError("empty header name in vary")
        if normalised not in seen:
            seen.append(normalised)
    return tuple(seen)
