"""The ticket and tag versions (cachekit/backends/tag_versions.py), without a server."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cachekit.backends.tag_versions import (
    CURRENT,
    PURGE_BITS,
    VOID,
    TagVersions,
    fresh_ticket,
    new_version,
    parse_ticket,
    recorded_current,
    recorded_since,
    same_generation,
    ticket_text,
    version_state,
)
from cachekit.entry import CachedResponse


def entry(tags: tuple[str, ...], versions: tuple[str, ...], generation: int) -> CachedResponse:
    return CachedResponse(
        200, (), b"x", time.time(), 60, tags=tags, tag_versions=versions, generation=generation
    )


@pytest.mark.parametrize(
    ("raw", "ticket"),
    [
        (None, 0),  # missing: nothing is valid
        (b"5:9", 5 << PURGE_BITS | 9),
        (b"5", 5 << PURGE_BITS),  # written by an earlier version (INCR)
        (b"0:9", 0),  # no generation: nothing is valid
        (b"garbage", 0),
        (b"5:x", 0),
        (b"-5:9", 0),
        (b"99999999999999999999:1", 0),  # does not fit the entry's 64-bit field
    ],
)
def test_parse_ticket(raw: bytes | None, ticket: int) -> None:
    assert parse_ticket(raw) == ticket


@given(st.integers(1, (1 << 30) - 1), st.integers(0, (1 << PURGE_BITS) - 1))
def test_ticket_text_round_trips(generation: int, purge: int) -> None:
    ticket = generation << PURGE_BITS | purge
    assert parse_ticket(ticket_text(ticket).encode()) == ticket


def test_fresh_tickets_and_versions_are_random_and_valid() -> None:
    tickets = {fresh_ticket() for _ in range(200)}
    assert len(tickets) == 200
    assert all(parse_ticket(ticket.encode()) >> PURGE_BITS for ticket in tickets)
    assert len({new_version() for _ in range(200)}) == 200


@pytest.mark.parametrize(
    ("stored_under", "ticket", "valid"),
    [
        (5 << PURGE_BITS | 1, 5 << PURGE_BITS | 1, True),
        (5 << PURGE_BITS | 1, 5 << PURGE_BITS | 2, True),  # a purge: not a clear
        (5 << PURGE_BITS | 1, 6 << PURGE_BITS | 1, False),  # a clear
        (0, 0, False),  # no ticket: nothing is valid
        (7, 7, False),
    ],
)
def test_same_generation(stored_under: int, ticket: int, valid: bool) -> None:
    assert same_generation(entry((), (), stored_under), ticket) is valid


@pytest.mark.parametrize(
    ("tags", "versions", "current", "valid"),
    [
        ((), (), {}, True),
        (("t",), ("1",), {"t": "1"}, True),
        (("t", "u"), ("1", "2"), {"t": "1", "u": "2"}, True),
        (("t", "u"), ("1", "2"), {"t": "1", "u": "3"}, False),  # `u` purged
        (("t",), ("1",), {"t": None}, False),  # evicted
        (("t",), ("1",), {}, False),
        (("t",), (), {"t": "1"}, False),  # stored without versions
    ],
)
def test_recorded_current(
    tags: tuple[str, ...], versions: tuple[str, ...], current: dict[str, str | None], valid: bool
) -> None:
    assert recorded_current(entry(tags, versions, 1 << PURGE_BITS), current) is valid


def test_versions_are_kept_while_the_ticket_is_unchanged() -> None:
    kept = TagVersions()
    ticket = 5 << PURGE_BITS | 1
    stored = entry(("t", "u"), ("1", "2"), ticket)
    assert kept.check(stored, ticket) is None  # nothing kept: fetch
    kept.learn(ticket, ["t", "u"], ["1", "2"])
    assert kept.check(stored, ticket) == CURRENT
    assert kept.check(entry(("t",), ("0",), ticket), ticket) is None  # differs: fetch again
    assert kept.check(entry(("t",), (), ticket), ticket) == VOID
    purged = ticket + 1
    assert kept.check(stored, purged) is None and len(kept) == 0  # a purge: all forgotten
    # A fetch that read the older ticket (it started before the purge) is kept under that
    # ticket only: a batch that reads the newer one forgets it.
    kept.learn(ticket, ["t"], ["1"])
    assert kept.check(entry(("t",), ("1",), ticket), ticket) == CURRENT
    assert kept.check(entry(("t",), ("1",), ticket), purged) is None
    kept.learn(purged, ["t", "u"], ["1", None])  # missing versions are not kept
    assert len(kept) == 1


def test_kept_versions_are_bounded() -> None:
    kept = TagVersions(max_bytes=64 << 10)
    ticket = 1 << PURGE_BITS
    for n in range(10_000):
        kept.learn(ticket, [f"tag:{n}"], [new_version()])
    assert kept._memo.used_bytes <= 64 << 10


# Soft purges keep the hard part "a": the latest at 1,700,000,000.5 s (tag_versions.py).
SOFT = "a~1700000000500~s2"


@pytest.mark.parametrize(
    ("recorded", "current", "state"),
    [
        ("a", "a", CURRENT),
        (SOFT, SOFT, CURRENT),  # filled after the soft purge
        ("a", SOFT, 1_700_000_000.5),  # soft-purged: stale from the purge on
        ("a~1600000000000~s1", SOFT, 1_700_000_000.5),  # two soft purges: still stale
        ("z", SOFT, VOID),  # another hard part: hard-purged before
        ("a", "b", VOID),  # a hard purge
        (SOFT, "b", VOID),
        ("a", None, VOID),  # evicted
        ("a", "a~x~s", VOID),  # damaged time
        ("a", "a~~s", VOID),
    ],
)
def test_version_state(recorded: str, current: str | None, state: float) -> None:
    assert version_state(recorded, current) == state


def test_an_entry_is_as_stale_as_its_earliest_soft_purged_tag() -> None:
    tagged = entry(("t", "u", "v"), ("a", "c", "e"), 1 << PURGE_BITS)
    current = {"t": SOFT, "u": "c~1700000000000~s", "v": "e"}
    assert recorded_since(tagged, current) == 1_700_000_000.0
    assert recorded_since(tagged, {**current, "v": "f"}) == VOID
    kept = TagVersions()
    kept.learn(1 << PURGE_BITS, ["t", "u", "v"], [SOFT, current["u"], "e"])
    assert kept.check(tagged, 1 << PURGE_BITS) == 1_700_000_000.0


_VERSIONS = st.sampled_from(["a", "b", SOFT, "a~1600000000000~s1", "a~x~s"])


@given(
    st.lists(st.sampled_from("tuvw"), min_size=1, max_size=3, unique=True),
    st.lists(_VERSIONS, max_size=3),
    st.dictionaries(st.sampled_from("tuvw"), _VERSIONS),
)
def test_check_answers_what_comparing_every_tag_answers(
    tags: list[str], versions: list[str], kept_versions: dict[str, str]
) -> None:
    # `check`'s one-tag shortcut decides exactly as the loop over every tag does.
    ticket = 3 << PURGE_BITS
    kept = TagVersions()
    kept.check(entry((), (), ticket), ticket)  # adopt the ticket
    kept.learn(ticket, list(kept_versions), list(kept_versions.values()))
    stored = entry(tuple(tags), tuple(versions[: len(tags)]), ticket)
    expected: float | None = CURRENT
    if len(stored.tag_versions) != len(stored.tags):
        expected = VOID
    else:
        for tag, version in zip(stored.tags, stored.tag_versions, strict=True):
            current = kept_versions.get(tag)
            if current != version:
                state = version_state(version, current)
                if state == VOID:
                    expected = None
                    break
                assert expected is not None
                expected = min(expected, state)
    assert kept.check(stored, ticket) == expected
