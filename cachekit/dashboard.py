"""The admin's live dashboard: `GET {prefix}/` (server-rendered HTML), its script, style
and icon (package data in `cachekit/dashboard_assets/`: no build step, nothing from
elsewhere), and `GET {prefix}/history`, the per-handler series it charts
(`cachekit.stats_history`).

On Redis (with a worker reporter) the history, and so every figure on the page but the
breaker and the store size, is added up over every worker reporting there, like `/stats`;
the page says whose figures it shows.

The page shows what it knows when it is served, then its script redraws it every
`REFRESH_SECONDS` from `{prefix}/stats` and `{prefix}/history`, reading only the fields
it knows (so `/stats` may grow). A Content-Security-Policy allows nothing but this
mount's own script, style and JSON.
"""

from __future__ import annotations

import functools
import html
import importlib.resources
import os
from collections.abc import Iterable
from typing import Any, Final

from aiohttp import web

from cachekit.admin_auth import AdminAuth
from cachekit.cache import Cache
from cachekit.stats_history import RESULTS, StatsHistory
from cachekit.worker_stats import WorkerReporter, summed_handlers

REFRESH_SECONDS: Final = 5
#: What a figure that does not exist yet shows (an en dash).
NONE: Final = "\u2013"
#: The files a page loads, by the name it loads them under, with their media types.
ASSETS: Final = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
PAGE_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HISTORY: Final = web.AppKey("cachekit_admin_history", StatsHistory)
_DASHBOARD_CACHE: Final = web.AppKey("cachekit_dashboard_cache", Cache)
_LOGOUT: Final = web.AppKey("cachekit_dashboard_logout", str)


def mount_dashboard(
    admin: web.Application,
    cache: Cache,
    auth: AdminAuth,
    reporter: WorkerReporter | None = None,
) -> StatsHistory:
    """Add the dashboard's routes to the admin sub-application (before its catch-all),
    and sample `cache` into a `StatsHistory` while the application runs: with a worker
    `reporter` (on Redis), the figures of every worker reporting there."""
    tally = functools.partial(summed_handlers, cache, reporter) if reporter else None
    history = StatsHistory(cache, tally=tally, stop_within=cache.settings.redis_timeout + 1.0)
    admin[HISTORY] = history
    admin[_DASHBOARD_CACHE] = cache
    admin[_LOGOUT] = auth.logout_path
    admin.cleanup_ctx.append(lambda _app: history.running())
    admin.router.add_get("/", _page)
    admin.router.add_get("/history", _history)
    admin.router.add_post("/logout", auth.logout)
    for name, media_type in ASSETS.items():
        admin.router.add_get(f"/{name}", _asset_handler(_read_asset(name), media_type))
    return history


def _read_asset(name: str) -> bytes:
    return importlib.resources.files("cachekit").joinpath("dashboard_assets", name).read_bytes()


def _asset_handler(body: bytes, media_type: str) -> Any:
    async def asset(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=media_type)

    return asset


async def _history(request: web.Request) -> web.Response:
    return web.json_response(await request.app[HISTORY].current())


async def _page(request: web.Request) -> web.Response:
    cache = request.app[_DASHBOARD_CACHE]
    history = await request.app[HISTORY].current()
    scope = scope_text(history.get("scope"), history.get("workers"))
    page = render_page(cache.stats(), history["handlers"], request.app[_LOGOUT], scope)
    return web.Response(
        text=page,
        content_type="text/html",
        charset="utf-8",
        headers={"Content-Security-Policy": PAGE_CSP},
    )


def scope_text(scope: object, workers: object) -> str:
    """Whose figures the page shows: "all N workers" across workers, else "this worker"."""
    if scope == "cluster" and isinstance(workers, int) and workers >= 1:
        return f"all {workers} worker{'s' if workers != 1 else ''}"
    return "this worker"


def render_page(
    process: dict[str, Any],
    handlers: dict[str, Any],
    logout_path: str,
    scope: str = "this worker",
) -> str:
    """The dashboard as it is now: `process` from `Cache.stats()`, `handlers` from
    `StatsHistory.as_json()`, whose they are in `scope` (`scope_text`). The script fills
    in the chart and keeps it all current."""
    totals = [figures["totals"] for figures in handlers.values()]
    requests = sum(total["requests"] for total in totals)
    served = sum(total["hit"] + total["stale"] for total in totals)
    fills = sum(total["fills"] for total in totals)
    fill_ms = sum((total["fill_ms"] or 0.0) * total["fills"] for total in totals)
    breaker_open = bool(process.get("breaker_open"))
    cards = [
        ("hit-ratio", "Hit ratio", _percent(served, requests), "hits and stale hits, since start"),
        ("requests", "Requests", f"{requests:,}", "to cached handlers, since start"),
        ("fill-latency", "Fill latency", _ms(fill_ms / fills if fills else None), "mean"),
        ("breaker", "Breaker", "open" if breaker_open else "closed", "store skipped while open"),
        ("store-size", "Store", *_store_size(process)),
    ]
    card_html = "".join(
        f'<div class="card"><h2>{_e(title)}</h2><p id="{key}">{_e(value)}</p>'
        f'<small id="{key}-note">{_e(note)}</small></div>'
        for key, title, value, note in cards
    )
    rows = "".join(_handler_row(name, figures["totals"]) for name, figures in _by_misses(handlers))
    head = "".join(f"<th>{_e(name)}</th>" for name in ("handler", *RESULTS, "hit ratio", "fill"))
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>cachekit dashboard</title>
<link rel="icon" href="favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="dashboard.css">
<script src="dashboard.js" defer></script>
</head>
<body data-refresh-seconds="{REFRESH_SECONDS}">
<header>
<h1>cachekit</h1>
<span id="meta">{_e(scope)}; pid {os.getpid()}</span>
<span id="updated"></span>
<form method="post" action="{_e(logout_path)}"><button>Sign out</button></form>
</header>
<main>
<section class="cards">{card_html}</section>
<section>
<h2>Hit ratio per handler, last minutes</h2>
<div id="chart" class="chart"><p class="empty">Waiting for requests…</p></div>
<ul id="legend" class="legend"></ul>
</section>
<section>
<h2>Requests by result</h2>
<div id="results" class="results"></div>
</section>
<section>
<h2>Handlers, most misses first</h2>
<table id="handlers"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>
</section>
</main>
<footer><span id="scope">Figures of {_e(scope)}</span> (breaker and store size: this
worker's). Refreshes every {REFRESH_SECONDS} s.</footer>
</body>
</html>
"""


def _by_misses(handlers: dict[str, Any]) -> Iterable[tuple[str, Any]]:
    return sorted(handlers.items(), key=lambda item: (-item[1]["totals"]["miss"], item[0]))


def _handler_row(name: str, totals: dict[str, Any]) -> str:
    cells = [f"<td>{_e(name)}</td>"]
    cells += [f'<td class="n">{totals[result]:,}</td>' for result in RESULTS]
    served = totals["hit"] + totals["stale"]
    cells.append(f'<td class="n">{_percent(served, totals["requests"])}</td>')
    cells.append(f'<td class="n">{_ms(totals["fill_ms"])}</td>')
    return f"<tr>{''.join(cells)}</tr>"


def _store_size(process: dict[str, Any]) -> tuple[str, str]:
    """Entries, and the store's kind with its bytes: the embedded store's, or on Redis the
    near cache's (what this worker holds; Redis itself is not asked)."""
    kind = str(process.get("store", ""))
    if isinstance(process.get("entries"), int):
        size = _bytes(process.get("memory_bytes"))
        return f"{process['entries']:,} entries", f"{kind} store, {size}"
    if isinstance(process.get("near_entries"), int):
        size = _bytes(process.get("near_bytes"))
        return f"{process['near_entries']:,} entries", f"{kind} store; near cache {size}"
    return NONE, f"{kind} store"


def _percent(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f} %" if whole else NONE


def _ms(value: float | None) -> str:
    return NONE if value is None else f"{value:.1f} ms"


def _bytes(value: object) -> str:
    if not isinstance(value, int):
        return NONE
    size = float(value)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _e(text: str) -> str:
    return html.escape(text, quote=True)
