"""OpenTelemetry spans, when the application traces (`pip install 'cachekit[otel]'` brings
`opentelemetry-api`; the application sets up the SDK and its exporter).

Spans: `cachekit.lookup` (a lookup that goes to the store: Redis, or a lookup the embedded
store could not answer at once), `cachekit.fill` (a miss: the lock, the handler, the store)
and `cachekit.revalidate` (the handler asked whether a stale entry changed). Attributes name
the handler, the key's hash (never the key: it may hold user data), the outcome, lock waits
and store errors. Hits answered without I/O (the embedded store, the near cache) have no
span: they are counted, and cost no more with tracing on.

Without opentelemetry-api, or with no tracer provider set (the API's default proxy), every
function here returns None and nothing else runs.
"""

from __future__ import annotations

import hashlib
import importlib
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Final


def _optional_trace() -> Any:
    try:
        return importlib.import_module("opentelemetry.trace")
    except ImportError:
        return None


_trace: Final = _optional_trace()
#: Where the tracer provider comes from: the global one (tests put their own here).
provider: Callable[[], Any] | None = _trace.get_tracer_provider if _trace is not None else None
_NO_PROVIDER: Final = tuple(
    getattr(_trace, name)
    for name in ("ProxyTracerProvider", "NoOpTracerProvider")
    if _trace is not None and hasattr(_trace, name)
)
_tracers: dict[int, Any] = {}
#: How long an answer of `tracer()` is reused: asking the API for its provider is several
#: Python calls on every Redis lookup, while an application sets its provider once, at
#: startup (the API refuses to replace it), so spans start within this long of that.
RECHECK_SECONDS: Final = 1.0
_answer: list[Any] = [None, None, 0.0]  # the provider function asked, its tracer, until when


def tracer() -> Any:
    """cachekit's tracer from the current provider; None when nothing traces."""
    asked = provider
    if asked is None:
        return None
    answer = _answer
    now = time.monotonic()
    if answer[0] is asked and now < answer[2]:
        return answer[1]
    found = _current_tracer(asked)
    answer[:] = [asked, found, now + RECHECK_SECONDS]
    return found


def _current_tracer(asked: Callable[[], Any]) -> Any:
    current = asked()
    if isinstance(current, _NO_PROVIDER):
        return None
    found = _tracers.get(id(current))
    if found is None:
        _tracers.clear()  # one provider at a time
        found = _tracers[id(current)] = current.get_tracer("cachekit")
    return found


def key_hash(key: str) -> str:
    """What spans say of a key: 16 hex digits of its SHA-256, never the key itself."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def span(name: str, handler: str, key: str) -> AbstractContextManager[Any]:
    """A span named `name` for `handler` and `key` (a no-op context without tracing)."""
    traced = tracer()
    if traced is None:
        return nullcontext(None)
    attributes = {"cachekit.handler": handler, "cachekit.key_hash": key_hash(key)}
    return traced.start_as_current_span(name, attributes=attributes)  # type: ignore[no-any-return]


def annotate(current: Any, **attributes: str | int | bool) -> None:
    """Add `cachekit.<name>` attributes to `current` (a span, or None without tracing)."""
    if current is not None:
        for name, value in attributes.items():
            current.set_attribute(f"cachekit.{name}", value)


def event(name: str) -> None:
    """Record `name` on the current span, if one is recording."""
    if _trace is not None and tracer() is not None:
        _trace.get_current_span().add_event(name)
