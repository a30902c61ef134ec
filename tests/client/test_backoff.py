"""Backoff: growth, full jitter and Retry-After, checked with a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

import plasma_nb as plasma
from plasma_nb.client.backoff import Backoff, Clock
from plasma_nb.client.transport import (
    PokesUnavailable,
    Response,
    TransportError,
    parse_retry_after,
)
from tests.client.app import mutators, schema


def test_the_ceiling_doubles_up_to_the_cap():
    backoff = Backoff(base=0.5, cap=8.0, random=lambda: 1.0)
    assert [backoff.next_delay() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_full_jitter_draws_below_the_ceiling():
    draws = iter([0.0, 0.5, 0.999])
    backoff = Backoff(base=1.0, cap=100.0, random=lambda: next(draws))
    assert [backoff.next_delay() for _ in range(3)] == [0.0, 1.0, 0.999 * 4]


def test_retry_after_is_a_floor():
    backoff = Backoff(base=1.0, cap=100.0, random=lambda: 0.5)
    assert backoff.next_delay(retry_after=7.0) == 7.0
    assert backoff.next_delay(retry_after=0.1) == 1.0  # the jittered wait is longer
    assert backoff.next_delay(retry_after=1e9) == 3600.0  # a silly header is capped


def test_a_long_outage_does_not_overflow():
    backoff = Backoff(base=0.5, cap=60.0, random=lambda: 1.0)
    backoff.failures = 10_000
    assert backoff.next_delay() == 60.0


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="0 < base <= cap"):
        Backoff(base=0, cap=1)


def test_retry_after_headers_parse():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0


class FakeClock(Clock):
    def __init__(self, draws: list[float]) -> None:
        self.sleeps: list[float] = []
        self._draws = iter(draws)
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t

    def now_ms(self) -> int:
        return 1_700_000_000_000 + int(self.t * 1000)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds
        await asyncio.sleep(0)

    def random(self) -> float:
        return next(self._draws)


class ScriptedTransport:
    """Answers pulls from a script; everything else succeeds."""

    def __init__(self, script: list[Response | Exception]) -> None:
        self.script = script
        self.pulls = 0
        self.done = asyncio.Event()

    async def request(
        self, method: str, path: str, *, json: Any = None, params: Mapping[str, str] | None = None,
        progress: Any = None,
    ) -> Response:
        if path == "/sync/schema":
            return Response(200, {"user": None})
        if path == "/sync/push":
            return Response(200, {})
        self.pulls += 1
        step = self.script.pop(0) if self.script else None
        if step is None:
            self.done.set()
            return Response(200, {"cookie": 1, "lastMutationIDChanges": {}, "patch": []})
        if isinstance(step, Exception):
            raise step
        return step

    async def websocket(self, path: str, params: Mapping[str, str]) -> Any:
        raise PokesUnavailable("none here")

    async def aclose(self) -> None:
        pass


async def test_the_sync_loop_backs_off_with_jitter_and_honours_retry_after():
    busy = {"error": "Unavailable", "message": "database is busy"}
    transport = ScriptedTransport([
        Response(503, busy),
        Response(502, None),
        Response(429, None, {"retry-after": "7"}),
        TransportError("connection refused"),
        Response(500, None),
    ])
    clock = FakeClock([1.0, 0.5, 0.25, 1.0, 0.1])
    client = await plasma.connect(
        "http://fake", schema=schema, mutators=mutators, storage="memory", thread=False,
        transport=transport, clock=clock, pokes=False, pull_interval=3600,
    )
    try:
        await asyncio.wait_for(transport.done.wait(), 5)
        # base 0.5: ceilings 0.5, 1, 2, 4, 8 times the draws; 429 waits at least 7 s.
        assert clock.sleeps == [0.5, 0.5, 7.0, 4.0, 0.8]
        assert transport.pulls == 6
        for _ in range(10):
            await asyncio.sleep(0)
        status = client.status()
        assert status.connected and status.cookie == 1 and status.last_error is None
        assert any("HTTP 503: database is busy" in e for e in status.errors)
        assert any("HTTP 429" in e for e in status.errors)
        assert any("connection refused" in e for e in status.errors)
    finally:
        await client.close()


async def test_a_version_mismatch_stops_syncing():
    transport = ScriptedTransport([Response(200, {"error": "VersionNotSupported",
                                                  "versionType": "schema"})])
    clock = FakeClock([])
    client = await plasma.connect(
        "http://fake", schema=schema, mutators=mutators, storage="memory", thread=False,
        transport=transport, clock=clock, pokes=False, pull_interval=3600,
    )
    try:
        for _ in range(20):
            await asyncio.sleep(0)
        assert transport.pulls == 1 and clock.sleeps == []
        assert "VersionNotSupported" in (client.status().last_error or "")
        with pytest.raises(plasma.VersionNotSupported):
            await client.sync()
    finally:
        await client.close()
