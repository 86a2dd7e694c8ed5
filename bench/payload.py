"""The benchmark's data: a deterministic catalogue page that serialises to about 13 KB of JSON."""

from __future__ import annotations

import json
from typing import Any, Final

ITEMS_PER_PAGE: Final = 55
BODY_TARGET_BYTES: Final = 13_000
CONTENT_TYPE: Final = "application/json"


def page_data(n: int) -> dict[str, Any]:
    """The data behind page `n`: what an upstream service would return."""
    items = [
        {
            "id": n * ITEMS_PER_PAGE + i,
            "sku": f"SKU-{n:06d}-{i:03d}",
            "name": f"Catalogue item {i} of page {n}",
            "price": round(9.99 + (n * 31 + i * 7) % 997 / 10, 2),
            "currency": "EUR",
            "in_stock": (n + i) % 3 != 0,
            "tags": ["bench", f"group-{i % 5}", f"page-{n % 100}"],
            "description": "A plain product used to give every response a realistic size.",
        }
        for i in range(ITEMS_PER_PAGE)
    ]
    return {"page": n, "count": len(items), "items": items}


#: Pages the spread variants spread their load over (`wrk`'s script picks one at random).
SPREAD_KEYS: Final = 1000


def page_body(n: int) -> bytes:
    """Page `n` serialised as compact JSON (about `BODY_TARGET_BYTES` bytes)."""
    return json.dumps(page_data(n), separators=(",", ":")).encode()
