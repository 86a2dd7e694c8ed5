"""Store failure handling: the circuit breaker and rate-limited warnings (injected clock)."""

from __future__ import annotations

import logging

import pytest

from cachekit.guard import CircuitBreaker, RateLimitedLog


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def messages(caplog: pytest.LogCaptureFixture, level: int | None = None) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "cachekit" and (level is None or record.levelno == level)
    ]


# ------------------------------------------------------------------ RateLimitedLog


class TestRateLimitedLog:
    def test_first_event_is_logged_then_suppressed(
        self, clock: Clock, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.WARNING, logger="cachekit")
        log = RateLimitedLog(interval=30.0, clock=clock)
        log.warning("store down: %s", "boom")
        for _ in range(5):
            clock.now += 1
            log.warning("store down: %s", "again")
        assert messages(caplog) == ["store down: boom"]
        assert all(record.levelno == logging.WARNING for record in caplog.records)

    def test_summary_after_the_interval(
        self, clock: Clock, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.WARNING, logger="cachekit")
        log = RateLimitedLog(interval=30.0, clock=clock)
        log.warning("failed %d", 1)
        clock.now += 10
        log.warning("failed %d", 2)
        log.warning("failed %d", 3)
        clock.now += 19.999  # 29.999 s after the first line: still suppressed
        log.warning("failed %d", 4)
        clock.now += 0.001
        log.warning("failed %d", 5)
        assert messages(caplog) == ["failed 1", "failed 5 (3 similar events suppressed)"]

    def test_counter_resets_after_a_summary(
        self, clock: Clock, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.WARNING, logger="cachekit")
        log = RateLimitedLog(interval=5.0, clock=clock)
        log.warning("x")
        log.warning("x")
        clock.now += 5
        log.warning("y")
        clock.now += 5
        log.warning("z")  # nothing was suppressed in between
        assert messages(caplog) == ["x", "y (1 similar events suppressed)", "z"]

    def test_quiet_periods_log_every_event(
        self, clock: Clock, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.WARNING, logger="cachekit")
        log = RateLimitedLog(interval=1.0, clock=clock)
        for n in range(3):
            log.warning("event %d", n)
            clock.now += 2
        assert messages(caplog) == ["event 0", "event 1", "event 2"]

    def test_interval_is_measured_from_the_last_line_logged(
        self, clock: Clock, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.WARNING, logger="cachekit")
        log = RateLimitedLog(interval=10.0, clock=clock)
        log.warning("a")
        for _ in range(20):  # a steady stream, one per second
            clock.now += 1
            log.warning("b")
        # Lines at t=100 and t=110 (9 suppressed) and t=120 (9 suppressed).
        assert messages(caplog) == [
            "a",
            "b (9 similar events suppressed)",
            "b (9 similar events suppressed)",
        ]

    def test_default_clock_logs_the_first_event(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.WARNING, logger="cachekit")
        log = RateLimitedLog()
        log.warning("first")
        log.warning("second")
        assert messages(caplog) == ["first"]


# ------------------------------------------------------------------ CircuitBreaker


class TestCircuitBreaker:
    def test_closed_until_the_threshold(self, clock: Clock) -> None:
        breaker = CircuitBreaker(threshold=3, cooldown=5.0, clock=clock)
        assert breaker.allow() and not breaker.is_open
        breaker.record_failure(OSError("1"))
        breaker.record_failure(OSError("2"))
        assert breaker.failures == 2
        assert breaker.allow() and not breaker.is_open
        breaker.record_failure(OSError("3"))
        assert breaker.is_open
        assert not breaker.allow()

    def test_success_resets_the_failure_count(self, clock: Clock) -> None:
        breaker = CircuitBreaker(threshold=3, cooldown=5.0, clock=clock)
        breaker.record_failure(OSError())
        breaker.record_failure(OSError())
        breaker.record_success()
        assert breaker.failures == 0
        breaker.record_failure(OSError())
        breaker.record_failure(OSError())
        assert breaker.allow()  # only two consecutive failures

    def test_skips_during_cooldown(self, clock: Clock) -> None:
        breaker = CircuitBreaker(threshold=2, cooldown=5.0, clock=clock)
        breaker.record_failure(OSError())
        breaker.record_failure(OSError())
        for _ in range(10):
            clock.now += 0.49
            assert not breaker.allow()
            assert breaker.is_open
        clock.now = 100.0 + 4.999
        assert not breaker.allow()

    def test_one_probe_after_cooldown(self, clock: Clock) -> None:
        breaker = CircuitBreaker(threshold=2, cooldown=5.0, clock=clock)
        breaker.record_failure(OSError())
        breaker.record_failure(OSError())
        clock.now += 5.0
        assert not breaker.is_open  # cool-down over, nobody probing yet
        assert breaker.allow()  # the probe
        assert breaker.is_open  # half-open: everyone else still skips
        assert not breaker.allow()
        assert not breaker.allow()
        clock.now += 100
        assert not breaker.allow()  # still only the one probe in flight

    def test_successful_probe_closes(self, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.INFO, logger="cachekit")
        breaker = CircuitBreaker(threshold=2, cooldown=5.0, clock=clock)
        breaker.record_failure(OSError())
        breaker.record_failure(OSError())
        clock.now += 5.0
        assert breaker.allow()
        breaker.record_success()
        assert not breaker.is_open
        assert breaker.failures == 0
        assert all(breaker.allow() for _ in range(5))
        assert "cache store reachable again; using it" in messages(caplog, logging.INFO)

    def test_failed_probe_reopens_for_another_cooldown(self, clock: Clock) -> None:
        breaker = CircuitBreaker(threshold=2, cooldown=5.0, clock=clock)
        breaker.record_failure(OSError())
        breaker.record_failure(OSError())
        clock.now += 5.0
        assert breaker.allow()
        clock.now += 1.0  # the probe took a second to fail
        breaker.record_failure(TimeoutError())
        assert breaker.is_open
        clock.now += 4.999
        assert not breaker.allow()
        clock.now += 0.001
        assert breaker.allow()  # next probe, 5 s after the failed one
        assert not breaker.allow()

    def test_success_without_open_breaker_logs_nothing(
        self, clock: Clock, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, logger="cachekit")
        breaker = CircuitBreaker(threshold=3, cooldown=5.0, clock=clock)
        breaker.record_failure(OSError())
        breaker.record_success()
        assert "cache store reachable again; using it" not in messages(caplog)

    def test_threshold_one(self, clock: Clock) -> None:
        breaker = CircuitBreaker(threshold=1, cooldown=1.0, clock=clock)
        assert breaker.allow()
        breaker.record_failure(OSError())
        assert not breaker.allow()
        clock.now += 1.0
        assert breaker.allow()

    def test_failure_warnings_are_rate_limited(
        self, clock: Clock, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.WARNING, logger="cachekit")
        breaker = CircuitBreaker(threshold=2, cooldown=5.0, clock=clock)
        for _ in range(50):
            breaker.record_failure(ConnectionError("refused"))
        warnings = messages(caplog, logging.WARNING)
        assert warnings == [
            "cache store failed (ConnectionError('refused')); serving without cache"
        ]
        clock.now += 31
        breaker.record_failure(ConnectionError("refused"))
        warnings = messages(caplog, logging.WARNING)
        assert len(warnings) == 2
        assert warnings[1] == (
            "cache store failed (ConnectionError('refused')); serving without cache,"
            " skipping it for 5s (49 similar events suppressed)"
        )
