"""Fake upstream catalogue client: slow on purpose, so the cache's savings are visible."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from aiohttp import web

DEFAULT_DELAY = 0.05
"""Seconds each upstream call takes; tens of milliseconds, like a real remote service."""

PRODUCT_COUNT = 50
PAGE_SIZE = 10
MAX_PRICE = 1_000_000.0


@dataclass(frozen=True, slots=True)
class Product:
    """One catalogue entry as the upstream service returns it."""

    id: int
    name: str
    price: float
    updated_at: datetime

    def to_json(self) -> dict[str, object]:
        """Return a JSON-serialisable mapping of this product."""
        return {
            "id": self.id,
            "name": self.name,
            "price": self.price,
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class Page:
    """One page of the product list, with enough metadata to walk the rest."""

    items: tuple[Product, ...]
    page: int
    pages: int
    total: int

    def to_json(self) -> dict[str, object]:
        """Return a JSON-serialisable mapping of this page."""
        return {
            "page": self.page,
            "pages": self.pages,
            "total": self.total,
            "items": [product.to_json() for product in self.items],
        }


def check_delay(delay: float) -> float:
    """Return ``delay`` if it is a usable number of seconds, else raise ``ValueError``."""
    if not math.isfinite(delay) or delay < 0:
        raise ValueError(f"upstream delay must be a finite number >= 0, got {delay!r}")
    return delay


class UpstreamClosedError(RuntimeError):
    """Raised when the catalogue is used outside the application's lifetime."""


class Catalogue:
    """In-memory stand-in for a remote catalogue API; every call sleeps and is counted."""

    def __init__(self, delay: float = DEFAULT_DELAY, product_count: int = PRODUCT_COUNT) -> None:
        """Create a closed catalogue of ``product_count`` products answering after ``delay``."""
        self.delay = check_delay(delay)
        self.calls = 0
        self.version_checks = 0
        self._product_count = product_count
        self._products: dict[int, Product] = {}
        self._open = False

    async def open(self) -> None:
        """Start the (fake) session and load the seed products."""
        created = datetime(2024, 1, 1, tzinfo=UTC)
        self._products = {
            n: Product(id=n, name=f"Product {n}", price=round(n * 5 - 0.01, 2), updated_at=created)
            for n in range(1, self._product_count + 1)
        }
        self._open = True

    async def close(self) -> None:
        """End the (fake) session; later calls raise ``UpstreamClosedError``."""
        self._open = False

    async def list_products(self, page: int, page_size: int = PAGE_SIZE) -> Page:
        """Return page ``page`` (1-based) of the products ordered by id; past the end is empty."""
        await self._call()
        ordered = sorted(self._products.values(), key=lambda product: product.id)
        start = (page - 1) * page_size
        return Page(
            items=tuple(ordered[start : start + page_size]),
            page=page,
            pages=max(1, math.ceil(len(ordered) / page_size)),
            total=len(ordered),
        )

    async def get_product(self, product_id: int) -> Product | None:
        """Return the product with ``product_id``, or ``None`` when there is none."""
        await self._call()
        return self._products.get(product_id)

    def product_version(self, product_id: int) -> str | None:
        """A cheap version stamp of one product (no round trip: think of an indexed
        `updated_at` column), or None when unknown; counted in ``version_checks``."""
        self.version_checks += 1
        product = self._products.get(product_id)
        if product is None:
            return None
        return f"{product.id}-{int(product.updated_at.timestamp() * 1_000_000)}"

    async def update_price(self, product_id: int, price: float) -> Product | None:
        """Set a product's price and timestamp; return it, or ``None`` when unknown."""
        await self._call()
        product = self._products.get(product_id)
        if product is None:
            return None
        updated = replace(product, price=price, updated_at=datetime.now(UTC))
        self._products[product_id] = updated
        return updated

    async def _call(self) -> None:
        """Account for one round trip to the upstream and wait as long as it would take."""
        if not self._open:
            raise UpstreamClosedError("the upstream catalogue is not open")
        self.calls += 1
        await asyncio.sleep(self.delay)


CATALOGUE = web.AppKey("catalogue", Catalogue)
"""Where the running application keeps its ``Catalogue``."""


def catalogue_context(
    delay: float = DEFAULT_DELAY,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Return a ``cleanup_ctx`` entry that opens a ``Catalogue`` for the app's lifetime."""
    # Checked now rather than at startup, so a bad delay fails where the app is built.
    check_delay(delay)

    async def catalogue_lifetime(app: web.Application) -> AsyncIterator[None]:
        catalogue = Catalogue(delay=delay)
        await catalogue.open()
        app[CATALOGUE] = catalogue
        try:
            yield
        finally:
            await catalogue.close()

    return catalogue_lifetime
