"""Failure handling for the store: a circuit breaker and log lines that do not flood."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("cachekit")


class RateLimitedLog:
    """Logs the first event of a burst, then at most one summary per `interval` seconds."""

    def __init__(self, interval: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self._interval = interval
        self._clock = clock
        self._last = -float("inf")
        self._suppressed = 0

    def warning(self, message: str, *args: object) -> None:
        """Log now, or count the event for the next summary line."""
        now = self._clock()
        if now - self._last < self._interval:
            self._suppressed += 1
            return
        suffix = f" ({self._suppressed} similar events suppressed)" if self._suppressed else ""
        log.warning(message + suffix, *args)
        self._last = now
        self._suppressed = 0


class CircuitBreaker:
    """Skips the store for `cooldown` seconds after `threshold` consecutive failures.

    After the cool-down one probe is let through (half-open); its success closes the
    breaker, its failure opens it for another cool-down. A dead store thus costs at most
    one timeout per cool-down instead of one per request.
    """

    def __init__(
        self, threshold: int, cooldown: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self.failures = 0
        self._open_until = 0.0
        self._probing = False
        self._log = RateLimitedLog(clock=clock)

    @property
    def is_open(self) -> bool:
        """True while the store is being skipped."""
        return self.failures >= self.threshold and (
            self._probing or self._clock() < self._open_until
        )

    def allow(self) -> bool:
        """May a store operation be attempted now? Lets one probe through after cool-down."""
        if self.failures < self.threshold:
            return True
        if self._probing or self._clock() < self._open_until:
            return False
        self._probing = True
        return True

    def record_success(self) -> None:
        """A store operation worked: close the breaker."""
        if self.failures >= self.threshold:
            log.info("cache store reachable again; using it")
        self.failures = 0
        self._probing = False

    def record_failure(self, error: BaseException) -> None:
        """A store operation failed or timed out."""
        self.failures += 1
        self._probing = False
        if self.failures >= self.threshold:
            self._open_until = self._clock() + self.cooldown
        self._log.warning(
            "cache store failed (%r); serving without cache%s",
            error,
            f", skipping it for {self.cooldown:g}s" if self.failures >= self.threshold else "",
        )
