"""Transient database failures in the middle of a push, through a real instance and a real
plasma_nb client: the push's database connection is killed, or the push loses a deadlock
(SQLSTATE 40P01, a transaction rollback like a serialization failure). The instance answers
503 with Retry-After, the client backs off at least that long, pushes again, and the
mutation is applied exactly once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg
import pytest

import plasma_nb as plasma
from plasma_nb.client.backoff import SystemClock
from tests.scale.app import mutators, schema
from tests.scale.cluster import Cluster, Instance, confirmed, eventually

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


class RecordingClock(SystemClock):
    """The real clock, remembering how long the client chose to wait between attempts."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await super().sleep(seconds)


async def _counter(cluster: Cluster, id: str) -> int | None:
    rows = await cluster.fetch("SELECT n FROM counters WHERE id = $1", id)
    return int(rows[0]["n"]) if rows else None


async def _push_stuck_then(
    cluster: Cluster, instance: Instance, counter: str,
    strike: Callable[[asyncpg.Connection, int], Awaitable[None]],
) -> None:
    """A client bumps ``counter`` while an operator holds the row's lock; once the push
    waits for it, ``strike(operator, push_pid)``; then check the 503, the wait and the
    single application."""
    clock = RecordingClock()
    client = await plasma.connect(instance.url, schema=schema, mutators=mutators,
                                  name=f"transient-{counter}", storage="memory", thread=False,
                                  clock=clock, push_delay=0.0, pull_interval=3600, pokes=False)
    op = await cluster.operator()
    try:
        await confirmed(client, client.mutate.bump(id=counter))
        assert await _counter(cluster, counter) == 1
        sleeps_before = len(clock.sleeps)
        tx = op.transaction()
        await tx.start()
        try:
            await op.execute("SELECT * FROM counters WHERE id = $1 FOR UPDATE", counter)
            handle = client.mutate.bump(id=counter)
            [pid] = await eventually(lambda: cluster.waiting_pushes(instance))
            await strike(op, pid)
        finally:
            await tx.rollback()  # the row lock goes: the retry can run
        await confirmed(client, handle)
        status = client.status()
        assert any("HTTP 503" in e for e in status.errors), status.errors
        # The backoff honoured Retry-After (1 s): without it, the first delay is <= 0.5 s.
        waits = clock.sleeps[sleeps_before:]
        assert waits and waits[0] >= 1.0, waits
        assert await _counter(cluster, counter) == 2  # once, not twice
        [(last,)] = await cluster.fetch(
            "SELECT last_mutation_id FROM _plasma_clients WHERE id = $1", status.client_id
        )
        assert last == 2 and status.pending == 0
    finally:
        await client.close()
        if not op.is_closed():
            await op.close()


async def test_a_killed_database_connection_mid_push_is_retried_and_applied_once(
    cluster: Cluster,
) -> None:
    async def kill(op: asyncpg.Connection, pid: int) -> None:
        assert await op.fetchval("SELECT pg_terminate_backend($1)", pid)

    await _push_stuck_then(cluster, cluster[0], "killed", kill)


async def test_a_deadlock_mid_push_is_retried_and_applied_once(cluster: Cluster) -> None:
    async def deadlock(op: asyncpg.Connection, pid: int) -> None:
        # Writing any table needs the version lock, which the waiting push holds: a cycle.
        # The push's backend finds it (at deadlock_timeout, 0.5 s after it began to wait)
        # and gives up; this write then proceeds.
        await op.execute("SET deadlock_timeout = '30s'")
        await op.execute("UPDATE notes SET body = 'operator' WHERE id = 'nothing'")

    await _push_stuck_then(cluster, cluster[1], "deadlocked", deadlock)
