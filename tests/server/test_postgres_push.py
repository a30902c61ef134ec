"""The Postgres push connection against a real server (``PLASMA_TEST_POSTGRES``): the round
trips a push costs, the transaction each COMMIT begins for the next push (rolled back when
idle), a connection lost between pushes, a push that waited for another instance's commit,
a group created during the push creating it, and an instance not poked by its own pushes."""

from __future__ import annotations

import asyncio

import pytest

from plasma_nb.core.errors import Forbidden, Unavailable
from plasma_nb.core.mutators import Context
from plasma_nb.core.protocol import PullRequest, PushRequest
from plasma_nb.server.storage import postgres_support
from plasma_nb.server.storage.postgres import PostgresStorage
from tests.server.helpers import mutation, push_body
from tests.server.pg import PgEnv
from tests.server.slow_app import Gate, slow_mutators, slow_schema

pytestmark = pytest.mark.postgres

async def test_a_push_costs_the_round_trips_of_a_bare_transaction(
        pg: PgEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres_support, "PUSH_IDLE", 0.2)
    storage = PostgresStorage(pg.url, slow_schema, slow_mutators)
    await storage.open()
    try:
        sent: list[str] = []
        last = 0

        async def push_n(n: int) -> None:
            nonlocal last
            sent.clear()
            muts = [mutation("c1", last + i + 1, "slow_add", id=f"r{last + i}", title="t")
                    for i in range(n)]
            last += n
            outcome = await storage.push(
                PushRequest.from_json(push_body(*muts)), Context(), limit=100)
            assert outcome.processed == n
            await asyncio.sleep(0)  # asyncpg calls query loggers soon after, not at once

        await push_n(1)  # connects: its BEGIN is a round trip of its own
        conn = storage.push_connection
        assert conn is not None
        conn.add_query_logger(lambda record: sent.append(record.query))
        for n in (1, 5):
            await push_n(n)
            # The version bump with the state, one INSERT per mutation, the bookkeeping
            # with COMMIT and the next BEGIN: a bare transaction sends n + 2 too.
            assert len(sent) == n + 2, sent
            assert sent[-1].endswith("COMMIT; BEGIN")
        assert conn.is_in_transaction()
        # Idle, the begun transaction is rolled back; the next push begins its own.
        for _ in range(100):
            if not conn.is_in_transaction():
                break
            await asyncio.sleep(0.02)
        assert not conn.is_in_transaction()
        await push_n(2)
        assert sent[0] == "BEGIN" and len(sent) == 2 + 3, sent
        assert storage.push_connection is conn
        assert await storage.pool.fetchval("SELECT last_mutation_id FROM _plasma_clients") == 9
        assert await storage.pool.fetchval("SELECT count(*) FROM slow") == 9
    finally:
        await storage.close()


async def test_a_push_connection_lost_between_pushes_is_replaced(pg: PgEnv) -> None:
    storage = PostgresStorage(pg.url, slow_schema, slow_mutators)
    await storage.open()
    try:
        def add_one(n: int) -> PushRequest:
            return PushRequest.from_json(
                push_body(mutation("c1", n, "slow_add", id=f"s{n}", title="t")))

        await storage.push(add_one(1), Context(), limit=100)
        conn = storage.push_connection
        assert conn is not None and conn.is_in_transaction()  # begun for the next push
        op = await pg.operator()
        assert await op.fetchval("SELECT pg_terminate_backend($1)", conn.get_server_pid())
        for _ in range(200):
            if conn.is_closed():
                break
            await asyncio.sleep(0.01)
        assert (await storage.push(add_one(2), Context(), limit=100)).processed == 1
        assert storage.push_connection is not conn
        assert await pg.rows("SELECT id FROM slow ORDER BY id") == [("s1",), ("s2",)]
    finally:
        await storage.close()


async def test_a_push_that_waited_for_another_instances_push_loads_its_clients_again(
        pg: PgEnv, gate: Gate) -> None:
    one = PostgresStorage(pg.url, slow_schema, slow_mutators)
    two = PostgresStorage(pg.url, slow_schema, slow_mutators)
    await one.open()
    await two.open()
    try:
        await one.push(PushRequest.from_json(push_body(
            mutation("c1", 1, "slow_add", id="s1", title="one"))), Context(), limit=100)
        await two.push(PushRequest.from_json(push_body(
            mutation("c2", 1, "slow_add", id="x1", title="other"))), Context(), limit=100)
        sent: list[str] = []
        conn = two.push_connection
        assert conn is not None
        conn.add_query_logger(lambda record: sent.append(record.query))
        # The same mutation through both instances, as a retry racing the original: the
        # first holds the counter's lock mid-push, the second waits for it.
        body = PushRequest.from_json(push_body(
            mutation("c1", 2, "slow_add", id="s2", title="two")))
        gate.armed = True
        first = asyncio.create_task(one.push(body, Context(), limit=100))
        await asyncio.wait_for(gate.entered.wait(), 10)
        gate.armed = False
        second = asyncio.create_task(two.push(body, Context(), limit=100))
        op = await pg.operator()
        for _ in range(500):  # until the second waits for the lock
            if await op.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 "
                "AND wait_event_type = 'Lock'", conn.get_server_pid()):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the second push never waited for the lock")
        gate.release.set()
        assert (await asyncio.wait_for(first, 10)).processed == 1
        # Its first statement's snapshot predates the commit it waited for: it reads the
        # clients again, sees mutation 2 applied, and applies nothing.
        assert (await asyncio.wait_for(second, 10)).processed == 0
        assert sum("current_setting" in q and "_plasma_clients" in q for q in sent) == 1, sent
        assert await pg.rows("SELECT id FROM slow ORDER BY id") == [("s1",), ("s2",), ("x1",)]
        assert await pg.rows(
            "SELECT id, last_mutation_id FROM _plasma_clients ORDER BY id") == [("c1", 2),
                                                                                 ("c2", 1)]
    finally:
        await one.close()
        await two.close()


async def test_a_group_created_during_a_push_that_creates_it_answers_503_then_is_checked(
        pg: PgEnv, gate: Gate) -> None:
    storage = PostgresStorage(pg.url, slow_schema, slow_mutators)
    await storage.open()
    try:
        body = PushRequest.from_json(push_body(
            mutation("c1", 1, "slow_add", id="s1", title="one"), group="shared"))
        gate.armed = True
        task = asyncio.create_task(storage.push(body, Context(user="alice"), limit=100))
        await asyncio.wait_for(gate.entered.wait(), 10)
        gate.armed = False
        # Meanwhile another user's pull creates the group (pulls take no lock).
        await storage.pull(PullRequest(1, "shared", None, "p", "1"), Context(user="bob"))
        gate.release.set()
        with pytest.raises(Unavailable, match="UniqueViolation"):
            await asyncio.wait_for(task, 10)
        with pytest.raises(Forbidden, match="another user"):
            await storage.push(body, Context(user="alice"), limit=100)
        assert await pg.rows("SELECT id, owner FROM _plasma_client_groups") == [
            ("shared", "bob")]
        assert await pg.rows("SELECT count(*) FROM slow") == [(0,)]
    finally:
        await storage.close()


async def test_an_instance_is_not_told_of_its_own_pushes(pg: PgEnv) -> None:
    one, two = PostgresStorage(pg.url, slow_schema, slow_mutators), PostgresStorage(
        pg.url, slow_schema, slow_mutators)
    await one.open()
    await two.open()
    try:
        await one.push(PushRequest.from_json(push_body(
            mutation("c1", 1, "slow_add", id="s1", title="one"))), Context(), limit=100)
        assert await two.wait_for_change(5)  # another instance's push: poke
        assert not await one.wait_for_change(0.2)  # its own: it poked already
        await two.push(PushRequest.from_json(push_body(
            mutation("c2", 1, "slow_add", id="s2", title="two"))), Context(), limit=100)
        assert await one.wait_for_change(5)
    finally:
        await one.close()
        await two.close()
