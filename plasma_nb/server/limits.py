"""Per-caller limits: a token bucket of requests, and a count of poke sockets.

A caller is its user id when the server has auth, else its client address.
Anonymous callers on a loopback address are not limited: without auth the
server listens only on loopback (unless ``--insecure``), and the local machine
is trusted as much as the server's own process (benchmarks and tests run there).
Behind a reverse proxy on the same machine, run uvicorn with its proxy headers
so that the client address is the real one.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable

from starlette.requests import HTTPConnection

from ..core.mutators import Context

__all__ = ["ConnectionCounter", "RateLimiter", "caller_key"]


def caller_key(conn: HTTPConnection, ctx: Context, *, authenticated: bool) -> str | None:
    """Whom a request counts against; None for anonymous loopback callers (not limited)."""
    if authenticated and ctx.user is not None:
        return f"user:{ctx.user}"
    host = conn.client.host if conn.client is not None else ""
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        # ASGITransport and TestClient call themselves "testclient" or similar: not an
        # address, so limited like any other remote caller.
        pass
    return f"ip:{host}"


class RateLimiter:
    """A token bucket per caller: ``rate`` requests a second sustained, bursts of
    ``burst``. ``take(key)`` returns None (go ahead) or the seconds until a request
    would be accepted (the Retry-After)."""

    #: Buckets kept before idle ones (full again) are forgotten.
    max_keys = 10_000

    def __init__(self, rate: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = float(rate)
        self.burst = float(burst)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float | None:
        now = self.clock()
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > self.max_keys:
                self._forget_idle(now)
            return None
        self._buckets[key] = (tokens, now)
        return max(0.001, (1.0 - tokens) / self.rate)

    def _forget_idle(self, now: float) -> None:
        full = [k for k, (tokens, last) in self._buckets.items()
                if tokens + (now - last) * self.rate >= self.burst]
        for k in full:
            del self._buckets[k]

    @staticmethod
    def retry_after_header(seconds: float) -> str:
        return str(max(1, math.ceil(seconds)))


class ConnectionCounter:
    """How many poke sockets each caller holds, up to ``limit``."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._counts: dict[str, int] = {}

    def acquire(self, key: str | None) -> bool:
        if key is None or self.limit is None:
            return True
        count = self._counts.get(key, 0)
        if count >= self.limit:
            return False
        self._counts[key] = count + 1
        return True

    def release(self, key: str | None) -> None:
        if key is None or self.limit is None:
            return
        count = self._counts.get(key, 0) - 1
        if count > 0:
            self._counts[key] = count
        else:
            self._counts.pop(key, None)

    def count(self, key: str) -> int:
        return self._counts.get(key, 0)
