"""Limits: each caller's request rate (429 with Retry-After), published in GET /sync/schema
with the other limits; the limiter's token bucket on its own."""

from __future__ import annotations

import pytest

from plasma_nb.core.errors import ConfigError
from plasma_nb.server import Limits
from plasma_nb.server.limits import ConnectionCounter, RateLimiter
from tests.server.helpers import pull_body, push_body
from tests.server.secure import TOKENS, as_user, dump_database, mutators, note, schema


class FakeTime:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def limited_app(make_app, **limits):
    app = make_app(schema, mutators, auth=TOKENS, blobs=None,
                   limits=Limits(requests_per_second=2, request_burst=3, **limits))
    clock = FakeTime()
    app.state.plasma.gate.limiter.clock = clock
    return app, clock


async def test_a_user_past_the_rate_gets_429_with_retry_after(make_app):
    app, clock = limited_app(make_app)
    async with as_user(app, "alice") as alice, as_user(app, "bob") as bob:
        for _ in range(3):
            assert (await alice.get("/sync/schema")).status_code == 200
        refused = await alice.post("/sync/pull", json=pull_body(group="ga"))
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"] == "TooManyRequests"
        # Others have buckets of their own.
        assert (await bob.get("/sync/schema")).status_code == 200
        clock.t += 0.5  # one request's worth at 2 a second
        assert (await alice.post("/sync/pull", json=pull_body(group="ga"))).status_code == 200
        assert (await alice.get("/sync/schema")).status_code == 429
        clock.t += 60  # a long pause refills the burst, no more
        for _ in range(3):
            assert (await alice.get("/sync/schema")).status_code == 200
        assert (await alice.get("/sync/schema")).status_code == 429


async def test_a_refused_request_does_not_reach_the_database(make_app, database):
    app, clock = limited_app(make_app)
    async with as_user(app, "alice") as alice:
        await alice.get("/healthz")
        before = await dump_database(database)
        for _ in range(3):
            await alice.get("/sync/schema")
        response = await alice.post("/sync/push", json=push_body(note("ca", 1, "n1"),
                                                                  group="ga"))
        assert response.status_code == 429
    assert await dump_database(database) == before


async def test_anonymous_callers_count_per_address_and_loopback_is_not_limited(make_app):
    app = make_app(schema, mutators, blobs=None,
                   limits=Limits(requests_per_second=1, request_burst=1))
    async with as_user(app, address="192.0.2.1") as one, \
            as_user(app, address="192.0.2.2") as two, as_user(app) as local:
        assert (await one.get("/sync/schema")).status_code == 200
        assert (await one.get("/sync/schema")).status_code == 429
        assert (await two.get("/sync/schema")).status_code == 200
        for _ in range(5):
            assert (await local.get("/sync/schema")).status_code == 200


async def test_healthz_and_preflights_are_not_counted(make_app):
    app, clock = limited_app(make_app)
    async with as_user(app, "alice") as alice:
        for _ in range(10):
            assert (await alice.get("/healthz")).status_code == 200
        assert (await alice.get("/sync/schema")).status_code == 200


async def test_limits_are_published(make_app):
    app = make_app(schema, mutators, auth=TOKENS, blobs=None, limits=Limits(
        requests_per_second=None, max_websockets_per_user=7, tombstone_horizon_seconds=3600))
    async with as_user(app, "alice") as alice:
        limits = (await alice.get("/sync/schema")).json()["limits"]
    assert limits["requestsPerSecond"] is None
    assert limits["requestBurst"] == 1000
    assert limits["maxWebSocketsPerUser"] == 7
    assert limits["tombstoneHorizonSeconds"] == 3600
    assert limits["maxMutationsPerPush"] == 1000 and limits["maxBodyBytes"] == 16 * 1024 * 1024
    assert app.state.plasma.gate.limiter is None  # off


@pytest.mark.parametrize("options", [
    {"requests_per_second": 0}, {"request_burst": None}, {"max_websockets_per_user": -1},
    {"tombstone_horizon_seconds": 0}, {"compaction_interval_seconds": 1.5},
])
def test_limits_are_checked(options):
    with pytest.raises(ConfigError, match="must be a positive integer"):
        Limits(**options)


def test_the_bucket_refills_at_its_rate_and_forgets_idle_callers():
    clock = FakeTime()
    limiter = RateLimiter(rate=4, burst=2, clock=clock)
    assert limiter.take("a") is None and limiter.take("a") is None
    assert limiter.take("a") == 0.25
    clock.t += 0.125
    assert limiter.take("a") == 0.125
    clock.t += 0.125
    assert limiter.take("a") is None
    limiter.max_keys = 3
    for key in "bcde":
        limiter.take(key)
    clock.t += 10
    limiter.take("f")
    assert set(limiter._buckets) == {"f"}
    assert RateLimiter.retry_after_header(0.01) == "1"
    assert RateLimiter.retry_after_header(2.5) == "3"


def test_the_socket_counter():
    counter = ConnectionCounter(2)
    assert counter.acquire("a") and counter.acquire("a") and not counter.acquire("a")
    assert counter.acquire(None)  # not counted
    counter.release("a")
    assert counter.count("a") == 1 and counter.acquire("a")
    counter.release("a")
    counter.release("a")
    assert counter.count("a") == 0
    unlimited = ConnectionCounter(None)
    assert all(unlimited.acquire("a") for _ in range(1000))
