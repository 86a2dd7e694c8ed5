"""Whether a handler's keys keep growing, and why: pure functions over counts.

A handler's stored keys are counted per time window (`WINDOW_SECONDS`) and over all time
(`key_census.py` in-process, `backends/key_sketches.py` on Redis). A handler whose last
`GROWTH_WINDOWS` complete windows each stored mostly keys never stored before keeps
growing: a tracking parameter in the key (`?utm_source=...`), a Vary on a header with
countless values. The parts of a key (each query parameter of a default key, each header
of its Vary suffix) are counted too, so the warning can name the likely cause.

Keys are counted when entries are stored, never on hits: a key is counted once per fill,
so an entry living longer than the recent windows is "old" only through the all-time
count (`HISTORY_SECONDS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import unquote

from cachekit.keys import HASHED_MARKER

WINDOW_SECONDS: Final = 600
#: Windows reported, the current (partial) one included: the last hour.
RECENT_WINDOWS: Final = 6
#: How long an idle handler's all-time count and key-part counts are kept.
HISTORY_SECONDS: Final = 7 * 24 * 3600
#: The complete windows the growth rule reads, the last ones.
GROWTH_WINDOWS: Final = 3
#: A window "keeps growing" with at least this many new keys...
MIN_NEW_KEYS: Final = 100
#: ... making at least this share of the distinct keys it stored.
MIN_NEW_SHARE: Final = 0.5
#: A key part is named as the cause when its distinct values reach this share of the new
#: keys of the growth windows.
CAUSE_SHARE: Final = 0.5
QUERY: Final = "q:"
HEADER: Final = "h:"


def key_parts(key: str, url_prefix: str | None) -> list[tuple[str, str]]:
    """The (part, value) pairs of a stored key: each query parameter (`q:NAME`) when
    `url_prefix` is the handler's default-key prefix (None: a template or callable key,
    whose query parts cannot be told apart), and each header of the Vary suffix (`h:NAME`).
    Names and values stay escaped as in the key. A key shortened by its digest loses the
    parameter it was cut in, and a hashed Vary suffix yields no headers."""
    base, mark, suffix = key.partition("#")
    parts: list[tuple[str, str]] = []
    if url_prefix is not None and base.startswith(url_prefix):
        # An escaped path holds no "?", an escaped query no "~": the query is between them.
        query = base[len(url_prefix) :].partition("?")[2]
        pairs = query.partition("~")[0].split("&") if query else []
        if HASHED_MARKER in base:
            pairs = pairs[:-1]
        for pair in pairs:
            name, equals, value = pair.partition("=")
            if equals:
                parts.append((QUERY + name, value))
    if mark:
        for item in suffix.split("&"):
            name, equals, value = item.partition("=")
            if equals and name:
                parts.append((HEADER + name, value))
    return parts


def part_label(part: str) -> tuple[str, str]:
    """("query", name) or ("header", name) of a part, its name unescaped for people."""
    kind = "query" if part.startswith(QUERY) else "header"
    return kind, unquote(part[2:], errors="replace")


@dataclass(frozen=True, slots=True)
class WindowCount:
    """One window: when it started (epoch seconds), the distinct keys stored in it, and
    how many of them were never stored before it."""

    start: float
    distinct: int
    new: int


@dataclass(frozen=True, slots=True)
class KeyFigures:
    """One handler's counts: distinct keys of all time, the recent windows (oldest first,
    the current partial one last) and the distinct values of each key part."""

    distinct: int
    windows: tuple[WindowCount, ...]
    parts: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class Growth:
    """A handler whose keys keep growing: new keys per window, and the likely cause."""

    new_per_window: int
    cause: str | None
    cause_values: int
    message: str


def growth(figures: KeyFigures) -> Growth | None:
    """The growth warning for `figures`, or None (see the module docstring)."""
    complete = figures.windows[:-1]
    read = complete[-GROWTH_WINDOWS:]
    enough_windows = len(read) == GROWTH_WINDOWS
    each_mostly_new = all(
        window.new >= MIN_NEW_KEYS and window.new >= MIN_NEW_SHARE * window.distinct
        for window in read
    )
    if not (enough_windows and each_mostly_new):
        return None
    new_keys = sum(window.new for window in read)
    per_window = new_keys // len(read)
    minutes = WINDOW_SECONDS // 60
    said = f"keys keep growing: ~{per_window:,} new keys every {minutes} minutes"
    cause, values = max(figures.parts.items(), key=_by_count, default=(None, 0))
    if cause is None or values < CAUSE_SHARE * new_keys:
        return Growth(per_window, None, 0, said + _NO_PART)
    kind, name = part_label(cause)
    if kind == "query":
        advice = (
            f"; the query parameter {name!r} has ~{values:,} distinct values: if the handler"
            " does not read it, leave it out of the key (CACHEKIT_IGNORE_QUERY_PARAMS, or a"
            " key template naming the parameters it reads)"
        )
    elif name == "host":
        advice = (
            f"; the host has ~{values:,} distinct values: the Host header is client input,"
            " check what the proxy in front lets through"
        )
    else:
        advice = (
            f"; responses vary on {name!r}, which has ~{values:,} distinct values: normalise"
            " it before the cache (e.g. to a few languages) or stop varying on it"
        )
    return Growth(per_window, cause, values, said + advice)


_NO_PART: Final = (
    "; no query parameter or Vary header stands out, so the paths (or the key template's"
    " fields) differ: expected while new content is added, otherwise key on fewer parts"
)


def _by_count(item: tuple[str, int]) -> tuple[int, str]:
    return item[1], item[0]


def _part_report(part: str, count: int) -> dict[str, Any]:
    kind, name = part_label(part)
    return {"kind": kind, "name": name, "distinct_values": count}


def report(figures: KeyFigures) -> dict[str, Any]:
    """The JSON of one handler's figures (as the admin API and the CLI show them)."""
    found = growth(figures)
    parts = sorted(figures.parts.items(), key=_by_count, reverse=True)
    return {
        "distinct_keys": figures.distinct,
        "windows": [
            {
                "start": datetime.fromtimestamp(window.start, UTC).isoformat(timespec="seconds"),
                "distinct_keys": window.distinct,
                "new_keys": window.new,
            }
            for window in figures.windows
        ],
        "key_parts": [_part_report(part, count) for part, count in parts],
        "growing": found is not None,
        "warning": None if found is None else found.message,
    }
