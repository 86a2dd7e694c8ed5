"""What tests may change for a whole process, read when a cache is set up (never per
request): cachekit's clocks, settings forced on every cache, a wrapper around every store.

Only `cachekit.testing`'s fixtures set these, and they restore them afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cachekit.backends.base import Store

#: Wall-clock seconds: TTLs, stale windows, `Age`.
wall: Callable[[], float] = time.time
#: Monotonic seconds: circuit-breaker cool-downs.
monotonic: Callable[[], float] = time.monotonic
#: Settings every `setup_cache` applies on top of its own (e.g. `{"enabled": False}`).
forced_settings: dict[str, Any] = {}
#: Wraps every store `setup_cache` attaches (e.g. to inject faults).
wrap_store: Callable[[Store], Store] | None = None
