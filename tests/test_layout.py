"""Redis key names (`cachekit.backends.layout`): their inverse and the CLI's SCAN patterns."""

from __future__ import annotations

from fnmatch import fnmatchcase

import pytest

from cachekit.backends.layout import KeyLayout

LAYOUT = KeyLayout("ns")
KEYS = ["a", "b#gzip", "c{x}#v#w", "/p/7?a=1", "é"]


@pytest.mark.parametrize("key", KEYS)
def test_an_entry_key_maps_back_to_its_logical_key(key: str) -> None:
    assert LAYOUT.key_of_entry(LAYOUT.entry_key(key)) == key


def test_entry_keys_of_a_batch_are_the_entry_keys() -> None:
    assert LAYOUT.entry_keys(KEYS) == [LAYOUT.entry_key(key) for key in KEYS]


@pytest.mark.parametrize("other", ["ns:gen", "ns:l:{a}", "ns:e:a", "ns:e:{", "other:e:{a}"])
def test_other_keys_map_to_nothing(other: str) -> None:
    assert LAYOUT.key_of_entry(other) is None


def test_scan_patterns_match_exactly_their_kind() -> None:
    kinds = {
        "entries": [LAYOUT.entry_key(key) for key in KEYS],
        "tags": [LAYOUT.tag_key(tag) for tag in ("products", "item:7")],
        "other": [
            LAYOUT.generation_key,
            LAYOUT.stats_key,
            LAYOUT.lock_key("a"),
            LAYOUT.variants_key("a"),
            LAYOUT.version_key("products"),
            KeyLayout("ns2").entry_key("a"),
            KeyLayout("ns2").tag_key("products"),
        ],
    }
    for pattern, kind in ((LAYOUT.entries_pattern, "entries"), (LAYOUT.tags_pattern, "tags")):
        matched = {name for names in kinds.values() for name in names if fnmatchcase(name, pattern)}
        assert matched == set(kinds[kind])
