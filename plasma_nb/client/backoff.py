"""Retry timing: exponential backoff with full jitter, and an injectable clock.

After the n-th consecutive failure the engine waits a random time in
``[0, min(cap, base * 2**n)]`` ("full jitter"), so clients that lost the same
server do not come back in step. A Retry-After from the server is a floor.
The clock (time, sleep and the random source) is injectable so tests can check
the waits without waiting.
"""

from __future__ import annotations

import asyncio
import random as _random
import time
from collections.abc import Callable

__all__ = ["Backoff", "Clock", "SystemClock"]


class Clock:
    """Time and chance as the engine sees them; subclass it in tests."""

    def monotonic(self) -> float:
        raise NotImplementedError

    def now_ms(self) -> int:
        """Wall-clock milliseconds (mutation timestamps, heartbeats)."""
        raise NotImplementedError

    async def sleep(self, seconds: float) -> None:
        raise NotImplementedError

    def random(self) -> float:
        """Uniform in [0, 1): the jitter's source."""
        return _random.random()


class SystemClock(Clock):
    def monotonic(self) -> float:
        return time.monotonic()

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class Backoff:
    """Delays for consecutive failures; ``reset()`` after a success."""

    def __init__(
        self, *, base: float = 0.5, cap: float = 60.0,
        random: Callable[[], float] = _random.random,
    ) -> None:
        if base <= 0 or cap < base:
            raise ValueError(f"backoff needs 0 < base <= cap, got base={base!r} cap={cap!r}")
        self.base = base
        self.cap = cap
        self.random = random
        self.failures = 0

    def ceiling(self) -> float:
        # Capping the exponent keeps 2**n finite however long the outage lasts.
        return min(self.cap, self.base * float(2 ** min(self.failures, 62)))

    def next_delay(self, retry_after: float | None = None) -> float:
        """The wait before the next attempt, counting one more failure."""
        delay = self.random() * self.ceiling()
        self.failures += 1
        if retry_after is not None:
            delay = max(delay, min(retry_after, 3600.0))
        return delay

    def reset(self) -> None:
        self.failures = 0
