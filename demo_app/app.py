"""The demo application: a product catalogue API whose read endpoints are cached."""

from __future__ import annotations

import json
import math

from aiohttp import web

from cachekit import CacheSettings, cached, get_cache, not_modified, setup_cache
from cachekit.admin import setup_admin
from demo_app.upstream import CATALOGUE, DEFAULT_DELAY, MAX_PRICE, catalogue_context

routes = web.RouteTableDef()

ENDPOINTS: tuple[tuple[str, str, str], ...] = (
    ("GET", "/", "this index"),
    ("GET", "/products?page=N", "one page of products (cached, tag 'products')"),
    ("GET", "/products/{id}", "one product; unknown ids give a cached 404"),
    ("POST", "/products/{id}", 'update the price from {"price": 12.5}; invalidates its tags'),
    ("GET", "/cache/stats", "cache counters and how often the slow upstream was called"),
)


def parse_product_id(raw: str) -> int | None:
    """Return the id in ``raw`` if it is a canonical positive integer, else ``None``."""
    # Only the canonical spelling counts: "007" or "+7" would otherwise be cached under
    # their own keys and tags, which invalidating "product:7" would never reach.
    if not (raw.isascii() and raw.isdigit()) or str(int(raw)) != raw or raw == "0":
        return None
    return int(raw)


def parse_page(request: web.Request) -> int | None:
    """Return the ``page`` query parameter (default 1), or ``None`` when it is invalid."""
    raw = request.query.get("page", "1")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 6 or int(raw) < 1:
        return None
    return int(raw)


def page_cache_key(request: web.Request) -> str:
    """Cache key for the list: one entry per valid page, one shared entry for bad input."""
    # Normalising here means "?page=01", "?page=1" and no page at all share one entry,
    # and arbitrary junk cannot mint unbounded distinct keys.
    page = parse_page(request)
    return f"products:page:{page}" if page is not None else "products:page:invalid"


def product_tags(request: web.Request) -> list[str]:
    """Tags for one product's response: that product only, so an update purges just it
    (and, through the "products" tag, the list pages that show its price)."""
    return [f"product:{request.match_info['id']}"]


def error_response(status: int, message: str) -> web.Response:
    """Return a JSON error body ``{"error": message}`` with ``status``."""
    return web.json_response({"error": message}, status=status)


@routes.get("/")
async def index(request: web.Request) -> web.Response:
    """Describe the endpoints, so a first ``curl`` shows what to try next."""
    return web.json_response(
        {
            "service": "cachekit demo",
            "endpoints": [
                {"method": method, "path": path, "description": description}
                for method, path, description in ENDPOINTS
            ],
        }
    )


@routes.get("/products")
@cached(ttl=30, key=page_cache_key, tags=["products"])
async def list_products(request: web.Request) -> web.Response:
    """Return one page of products from the upstream."""
    page = parse_page(request)
    if page is None:
        return error_response(400, "page must be a positive integer")
    result = await request.app[CATALOGUE].list_products(page)
    return web.json_response(result.to_json())


# 404 is listed so that repeated lookups of a missing id are also spared the slow upstream.
@routes.get("/products/{id}")
@cached(ttl=30, key="product:{match_info[id]}", tags=product_tags, statuses=(200, 404))
async def get_product(request: web.Request) -> web.Response:
    """Return one product, or a JSON 404 when the id is unknown.

    When its entry goes stale, cachekit asks again with the product's ETag: a cheap version
    check then answers 304 and the stored copy is served again, without the slow call."""
    product_id = parse_product_id(request.match_info["id"])
    catalogue = request.app[CATALOGUE]
    version = None if product_id is None else catalogue.product_version(product_id)
    if version is not None and (unchanged := not_modified(request, etag=version)) is not None:
        return unchanged
    product = None if product_id is None else await catalogue.get_product(product_id)
    if product is None:
        return error_response(404, "no such product")
    return web.json_response(product.to_json(), headers={"ETag": f'"{version}"'})


@routes.post("/products/{id}")
async def update_product(request: web.Request) -> web.Response:
    """Set a product's price from a JSON body ``{"price": <number>}``, then invalidate it."""
    product_id = parse_product_id(request.match_info["id"])
    if product_id is None:
        return error_response(404, "no such product")
    try:
        price = parse_price(await request.read())
    except ValueError as exc:
        return error_response(400, str(exc))
    product = await request.app[CATALOGUE].update_price(product_id, price)
    if product is None:
        return error_response(404, "no such product")
    # Both tags: the product's own entry and every list page that shows its price.
    await get_cache(request).invalidate_tags(f"product:{product_id}", "products")
    return web.json_response(product.to_json())


def parse_price(body: bytes) -> float:
    """Return the price from a JSON body ``{"price": <number>}``; ``ValueError`` if invalid."""
    try:
        # parse_constant rejects NaN and Infinity, which json accepts by default.
        data = json.loads(body, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(f"body is not valid JSON: {exc.msg}") from None
    except UnicodeDecodeError:
        raise ValueError("body is not valid JSON: it is not UTF-8 text") from None
    if not isinstance(data, dict) or "price" not in data:
        raise ValueError('body must be a JSON object like {"price": 12.5}')
    price = data["price"]
    # bool is an int subclass, and "true" is not a price.
    if isinstance(price, bool) or not isinstance(price, int | float):
        raise ValueError("price must be a number")
    if not math.isfinite(price) or not 0 <= price <= MAX_PRICE:
        raise ValueError(f"price must be between 0 and {MAX_PRICE:.0f}")
    return round(float(price), 2)


def _reject_constant(name: str) -> object:
    raise ValueError(f"body is not valid JSON: {name} is not a number")


@routes.get("/cache/stats")
async def cache_stats(request: web.Request) -> web.Response:
    """Return the cache's counters and the upstream's call count (never cached)."""
    catalogue = request.app[CATALOGUE]
    return web.json_response(
        {
            "cache": dict(get_cache(request).stats()),
            "upstream": {
                "calls": catalogue.calls,
                "version_checks": catalogue.version_checks,
                "delay_seconds": catalogue.delay,
            },
        }
    )


def create_app(
    settings: CacheSettings | None = None, upstream_delay: float = DEFAULT_DELAY
) -> web.Application:
    """Build the demo application; ``settings=None`` reads ``CACHEKIT_*`` from the environment."""
    app = web.Application()
    app.add_routes(routes)
    app.cleanup_ctx.append(catalogue_context(upstream_delay))
    cache = setup_cache(app, settings)
    if cache.settings.admin_token is not None:
        setup_admin(app, "/_cache")  # stats and purges, behind CACHEKIT_ADMIN_TOKEN
    return app
