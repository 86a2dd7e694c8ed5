"""`python -m cachekit`: operator commands (stats, purge, inspect) on the apps' shared store."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from cachekit.app import build_store
from cachekit.backends.base import StoreError
from cachekit.backends.redis import RedisStore
from cachekit.backends.tag_versions import (
    PURGE_BITS,
    parse_ticket,
    recorded_since,
    same_generation,
)
from cachekit.backends.topology import REDIS_ERRORS
from cachekit.entry import CachedResponse, CorruptEntry
from cachekit.entry_format import decode
from cachekit.key_growth import WINDOW_SECONDS, report
from cachekit.purging import as_purges_left
from cachekit.settings import CacheSettings, SettingsError, load_settings
from cachekit.worker_stats import MOST_WORKERS, parse_report, summed

EXIT_OK: Final = 0
EXIT_NOT_FOUND: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNREACHABLE: Final = 3
#: The CLI may wait longer than a request would: nobody is waiting for a page.
CLI_TIMEOUT: Final = 5.0
SCAN_COUNT: Final = 1000
_PASSWORD: Final = re.compile(r"(://[^:/@]*:)[^@]*@")


class NotFound(Exception):
    """The key asked about holds no entry (exit code 1)."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m cachekit`."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )
    parser = argparse.ArgumentParser(
        prog="python -m cachekit",
        description="Inspect and purge the cache shared by cachekit apps. Reads the same"
        " CACHEKIT_* environment variables as the apps (CACHEKIT_REDIS_URL, CACHEKIT_NAMESPACE,"
        " CACHEKIT_REDIS_MODE, ...).",
        epilog="exit codes: 0 ok, 1 not found, 2 usage or settings error, 3 store unreachable",
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "stats",
        parents=[common],
        help="entries, tags, memory used, hit ratio, each handler's requests by result over the"
        " workers reporting now, and each handler's distinct keys",
    )
    purge = commands.add_parser("purge", parents=[common], help="remove entries")
    purge.add_argument("--tag", action="append", default=[], help="entries under TAG (repeatable)")
    purge.add_argument(
        "--key",
        action="append",
        default=[],
        help="the entry KEY and its Vary variants (repeatable)",
    )
    purge.add_argument(
        "--all", action="store_true", help="every entry of the namespace (O(1) generation bump)"
    )
    purge.add_argument(
        "--soft",
        action="store_true",
        help="mark the entries stale instead: served within their stale window while one"
        " request refreshes each",
    )
    inspect = commands.add_parser("inspect", parents=[common], help="show one stored entry")
    inspect.add_argument("key", metavar="KEY", help="a logical key, or its Redis key ns:e:{...}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.json = getattr(args, "json", False)
    if args.command == "purge":
        if args.all and (args.tag or args.key):
            parser.error("purge: --all cannot be combined with --tag or --key")
        if not (args.all or args.tag or args.key):
            parser.error("purge: say what to remove: --tag TAG, --key KEY or --all")
        if args.all and args.soft:
            parser.error("purge: --soft applies to --tag and --key, not --all")
    try:
        settings = load_settings()
    except SettingsError as exc:
        return _fail(str(exc), EXIT_USAGE)
    if not settings.redis_url:
        counts = (
            "; each process's distinct keys per handler are in the admin API (GET"
            " /_cache/keys, see cachekit.admin)"
            if args.command == "stats"
            else ""
        )
        return _fail(
            "no shared store to reach: CACHEKIT_REDIS_URL is unset, so every app process keeps"
            f" its entries in its own memory (the embedded store){counts}",
            EXIT_USAGE,
        )
    try:
        result = asyncio.run(_run(args, settings))
    except NotFound as exc:
        return _fail(str(exc), EXIT_NOT_FOUND)
    except (StoreError, TimeoutError, *REDIS_ERRORS) as exc:
        reason = str(exc) or type(exc).__name__
        return _fail(
            f"cannot reach the cache store at {_where(settings)}: {reason}", EXIT_UNREACHABLE
        )
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(_human(args.command, result))
    return EXIT_OK


async def _run(args: argparse.Namespace, settings: CacheSettings) -> dict[str, Any]:
    # No near cache: the CLI must read what Redis holds, and needs no listener.
    update = {"redis_timeout": CLI_TIMEOUT, "near_cache_max_bytes": 0}
    store = build_store(settings.model_copy(update=update))
    assert isinstance(store, RedisStore)  # a redis_url always gives a Redis store
    try:
        async with asyncio.timeout(CLI_TIMEOUT * 6):
            await store.client.ping()
            if args.command == "stats":
                return await _stats(store, settings)
            if args.command == "purge":
                return await _purge(store, args.tag, args.key, args.all, args.soft)
            return await _inspect(store, args.key)
    finally:
        await store.close()


async def _stats(store: RedisStore, settings: CacheSettings) -> dict[str, Any]:
    client, layout = store.client, store.layout
    entries = await _count(store, layout.entries_pattern)
    tags = await _count(store, layout.tags_pattern)
    generation = parse_ticket(await client.get(layout.generation_key)) >> PURGE_BITS
    counters = {
        name.decode(): int(value)
        for name, value in (await client.hgetall(layout.stats_key)).items()
    }
    served = counters.get("hits", 0) + counters.get("stale_hits", 0)
    asked = served + counters.get("misses", 0)
    # The workers reporting now (the admin API's /stats adds them up the same way).
    reports = [parse_report(report.data) for report in await store.worker_reports(MOST_WORKERS)]
    handlers, _ = summed(report for report in reports if report is not None)
    return {
        "store": f"redis {settings.redis_mode} at {_where(settings)}",
        "namespace": layout.namespace,
        "entries": entries,
        "tags": tags,
        "generation": generation,
        "memory_used_bytes": await store.topology.used_memory(),
        "hits": counters.get("hits", 0),
        "stale_hits": counters.get("stale_hits", 0),
        "misses": counters.get("misses", 0),
        "hit_ratio": round(served / asked, 4) if asked else None,
        "workers": sum(report is not None for report in reports),
        "handlers": handlers,
        "keys": await _key_counts(store),
    }


async def _key_counts(store: RedisStore) -> dict[str, Any]:
    """Each handler's distinct stored keys, as the admin API's `/keys` reports them."""
    sketches = store.key_sketches
    window = int(time.time() // WINDOW_SECONDS)
    return {
        handler: report(await sketches.figures(handler, window))
        for handler in await sketches.handlers()
    }


async def _count(store: RedisStore, pattern: str) -> int:
    """Keys matching `pattern` (SCAN, on every primary of a cluster)."""
    return sum([1 async for _ in store.client.scan_iter(match=pattern, count=SCAN_COUNT)])


async def _purge(
    store: RedisStore, tags: list[str], keys: list[str], everything: bool, soft: bool = False
) -> dict[str, Any]:
    if everything:
        await store.clear()
        ticket = parse_ticket(await store.client.get(store.layout.generation_key))
        return {"purged": "all", "generation": ticket >> PURGE_BITS}
    removed = await store.invalidate_tags(tags, soft=soft) if tags else 0
    if keys:
        bases = [_logical(store, key) for key in keys]
        removed += await store.delete_variants(bases, soft=soft)
    return {"purged": {"tags": tags, "keys": keys}, "removed": removed, "soft": soft}


async def _inspect(store: RedisStore, key: str) -> dict[str, Any]:
    key = _logical(store, key)
    client, layout = store.client, store.layout
    entry_key = layout.entry_key(key)
    raw = await client.get(entry_key)
    variants = (
        []
        if "#" in key
        else sorted(v.decode() for v in await client.smembers(layout.variants_key(key)))
    )
    if raw is None:
        hint = f"; it has Vary variants: {', '.join(key + v for v in variants)}" if variants else ""
        raise NotFound(f"no entry under key {key!r}{hint}")
    try:
        entry = decode(raw)
    except CorruptEntry as exc:
        raise NotFound(f"damaged entry under key {key!r} (never served): {exc}") from None
    ticket = parse_ticket(await client.get(layout.generation_key))
    versions = [await client.get(layout.version_key(tag)) for tag in entry.tags]
    current = {
        tag: None if raw is None else raw.decode(errors="replace")
        for tag, raw in zip(entry.tags, versions, strict=True)
    }
    pttl = int(await client.pttl(entry_key))
    return _describe_entry(
        key,
        entry_key,
        entry=entry,
        ticket=ticket,
        since=recorded_since(entry, current),
        pttl=pttl,
        variants=variants,
    )


def _describe_entry(
    key: str,
    redis_key: str,
    *,
    entry: CachedResponse,
    ticket: int,
    since: float,
    pttl: int,
    variants: list[str],
) -> dict[str, Any]:
    now = time.time()
    view = as_purges_left(entry, since)
    if not same_generation(entry, ticket):
        state = "superseded (purged with --all; never served)"
    elif view is None:
        state = "purged (one of its tags was purged, or its version evicted; never served)"
    elif view is not entry and not view.is_servable_stale(now):
        state = "soft-purged, past its stale window (never served)"
    elif view is not entry:
        state = "soft-purged (served stale while one refresh runs)"
    elif entry.vary_stub:
        state = "vary stub (points processes to the key with the learned Vary headers)"
    elif entry.is_fresh(now):
        state = "fresh"
    elif entry.is_servable_stale(now):
        state = "stale (served while one refresh runs)"
    else:
        state = "stale (kept only to stand in for errors)"
    return {
        "key": key,
        "redis_key": redis_key,
        "state": state,
        "status": entry.status,
        "stored_at": datetime.fromtimestamp(entry.stored_at, UTC).isoformat(timespec="seconds"),
        "age_seconds": round(now - entry.stored_at, 3),
        "ttl_seconds": entry.ttl,
        "fresh_for_seconds": round(max(0.0, entry.remaining(now)), 3),
        "stale_ttl_seconds": entry.grace,
        "stale_if_error_seconds": entry.stale_if_error,
        "expires_in_seconds": round(pttl / 1000, 3) if pttl >= 0 else None,
        "size_bytes": entry.size,
        "body_bytes": len(entry.body),
        "etag": entry.etag,
        "generation": entry.generation >> PURGE_BITS,
        "tags": list(entry.tags),
        "headers": [[name, value] for name, value in entry.headers],
        "variants": variants,
    }


def _logical(store: RedisStore, key: str) -> str:
    """The logical key of `key`, which may also be given as its Redis entry key."""
    return store.layout.key_of_entry(key) or key


def _where(settings: CacheSettings) -> str:
    """The configured Redis URL without its password."""
    return _PASSWORD.sub(r"\1***@", settings.redis_url or "")


def _human(command: str, result: dict[str, Any]) -> str:
    if command == "purge":
        if result["purged"] == "all":
            return f"purged every entry (namespace generation is now {result['generation']})"
        what = [f"tag {tag!r}" for tag in result["purged"]["tags"]]
        what += [f"key {key!r}" for key in result["purged"]["keys"]]
        count = result["removed"]
        done = "marked stale" if result.get("soft") else "removed"
        return f"{done} {count} {'entry' if count == 1 else 'entries'} ({', '.join(what)})"
    lines = []
    for field, value in result.items():
        name, shown = field, value
        if name == "entries":
            shown = f"{value} (entries purged with --all count until they expire)"
        elif name == "memory_used_bytes":
            name, shown = "memory_used", f"{value / (1 << 20):.1f} MiB (the whole Redis)"
        elif name == "hit_ratio":
            shown = (
                "unknown (no app has published counters yet)" if value is None else f"{value:.1%}"
            )
        elif name == "keys":
            shown = _keys_text(value)
        elif name == "handlers":
            shown = (
                "".join(
                    f"\n    {handler}: {figures['requests']} requests ("
                    + ", ".join(f"{result} {count}" for result, count in figures["results"].items())
                    + ")"
                    for handler, figures in value.items()
                )
                or "- (no worker reports)"
            )
        elif name == "headers":
            shown = "".join(f"\n    {header}: {text}" for header, text in value) or "-"
        elif isinstance(value, list):
            shown = ", ".join(map(str, value)) or "-"
        lines.append(f"{name.replace('_', ' ') + ':':<24}{shown}")
    return "\n".join(lines)


def _keys_text(handlers: dict[str, Any]) -> str:
    """One line per handler: distinct keys, new keys in the last hour, the warning."""
    if not handlers:
        return "- (no app has stored an entry since counting began)"
    lines = []
    for handler, counts in handlers.items():
        new = sum(window["new_keys"] for window in counts["windows"])
        total = counts["distinct_keys"]
        line = f"\n    {handler}: ~{total:,} distinct, ~{new:,} new in the last hour"
        if counts["warning"]:
            line += f"\n      WARNING: {counts['warning']}"
        lines.append(line)
    return "".join(lines)


def _fail(message: str, code: int) -> int:
    print(f"cachekit: {message}", file=sys.stderr)
    return code
