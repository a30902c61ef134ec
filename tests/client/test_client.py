"""The client API without a server: mutate, handles, queries, subscriptions, status."""

from __future__ import annotations

import asyncio
import threading

import pytest

import plasma_nb as plasma
from plasma_nb import MutationError, MutatorError, SchemaError, SyncError, select
from plasma_nb.client import Change, Client, MutationHandle
from plasma_nb.core.errors import StorageClosed, UnknownMutator
from tests.client.app import counters, mutators, schema, todos


async def local(storage: str = "memory", **kwargs) -> Client:
    kwargs.setdefault("thread", False)
    return await plasma.connect(schema=schema, mutators=mutators, storage=storage, **kwargs)


async def test_connect_is_exported_lazily():
    assert plasma.connect is plasma.client.connect
    assert plasma.Client is Client


async def test_mutate_applies_before_it_returns():
    client = await local()
    try:
        h = client.mutate.add_todo(id="t1", title="Buy milk")
        assert isinstance(h, MutationHandle)
        rows = await client.query(select(todos))
        assert rows == [{"id": "t1", "title": "Buy milk", "done": False, "owner": None,
                         "score": None, "tags": None}]
        assert await h is None
        assert h.is_durable and (h.name, h.seq, h.mutation_id) == ("add_todo", 1, 1)
        assert client.status().pending == 1
    finally:
        await client.close()


async def test_a_local_mutation_error_comes_out_at_once_and_queues_nothing():
    client = await local()
    try:
        with pytest.raises(MutationError, match="title must not be empty"):
            client.mutate.add_todo(id="t1", title="  ")
        assert await client.query(select(todos)) == []
        assert client.status().pending == 0
        client.mutate.add_todo(id="t1", title="ok")
        with pytest.raises(MutationError, match="a row with key 't1' already exists"):
            client.mutate.add_todo(id="t1", title="again")
        assert client.status().pending == 1
    finally:
        await client.close()


async def test_a_mutator_that_awaits_something_else_fails_and_writes_nothing():
    client = await local()
    try:
        with pytest.raises(MutatorError, match="mutator 'sleepy' .* not a tx operation"):
            client.mutate.sleepy(id="t1")
        with pytest.raises(RuntimeError, match="a bug in the mutator"):
            client.mutate.broken(id="t2")
        assert await client.query(select(todos)) == []
        assert client.status().pending == 0
    finally:
        await client.close()


async def test_bad_calls_are_named():
    client = await local()
    try:
        with pytest.raises(UnknownMutator, match="no mutator named 'nope'; registered: "):
            client.mutate.nope(id="x")
        with pytest.raises(MutatorError, match="bad arguments for mutator 'add_todo'"):
            client.mutate.add_todo(id="x")
        with pytest.raises(MutatorError, match="must be JSON values"):
            client.mutate.add_todo(id="x", title=object())
        with pytest.raises(MutatorError, match="must be JSON values"):
            client.mutate.set_score(id="x", score=float("nan"))
        assert "add_todo" in dir(client.mutate)
        assert client.mutate("add_todo", id="t", title="by name").name == "add_todo"
    finally:
        await client.close()


async def test_the_mutator_sees_the_client_transaction():
    seen = []

    @mutators.register
    async def probe_tx(tx, *, values: list):
        seen.append((tx.location, tx.ctx.user, tx.timestamp, values))

    try:
        client = await local()
        try:
            client.mutate.probe_tx(values=(1, 2))
        finally:
            await client.close()
    finally:
        mutators._fns.pop("probe_tx")
        mutators._signatures.pop("probe_tx")
    [(location, user, timestamp, values)] = seen
    assert (location, user, values) == ("client", None, [1, 2])  # as JSON delivers them
    assert isinstance(timestamp, float) and timestamp > 1.7e12  # milliseconds


async def test_sql_queries_return_stored_values():
    client = await local()
    try:
        client.mutate.add_todo(id="t1", title="x")
        rows = await client.query("SELECT id, done FROM todos WHERE id = ?", ["t1"])
        assert rows == [{"id": "t1", "done": 0}]
        with pytest.raises(TypeError, match="query\\(\\) takes"):
            await client.query(42)  # type: ignore[arg-type]
    finally:
        await client.close()


async def test_subscribers_hear_once_per_commit_on_the_next_iteration():
    client = await local()
    calls: list[Change] = []
    try:
        unsubscribe = client.subscribe([todos], calls.append)
        other: list[Change] = []
        client.subscribe("counters", other.append)
        client.mutate.add_todo(id="t1", title="a")
        assert calls == []  # not inside mutate()
        await asyncio.sleep(0)
        [change] = calls
        assert change.added == {"todos": [{"id": "t1", "title": "a", "done": False,
                                           "owner": None, "score": None, "tags": None}]}
        assert other == []
        client.mutate.mark_done(id="t1")
        client.mutate.bump(id="c")
        await asyncio.sleep(0)
        assert len(calls) == 2 and len(other) == 1
        [(before, after)] = calls[1].changed["todos"]
        assert (before["done"], after["done"]) == (False, True)
        assert other[0].added == {"counters": [{"id": "c", "n": 1}]}
        client.mutate.mark_done(id="t1")  # already done: no net change, no call
        await asyncio.sleep(0)
        assert len(calls) == 2
        unsubscribe()
        client.mutate.delete_todo(id="t1")
        await asyncio.sleep(0)
        assert len(calls) == 2
        with pytest.raises(SchemaError, match="no table named 'nope'"):
            client.subscribe("nope", calls.append)
    finally:
        await client.close()


async def test_a_failing_subscriber_does_not_stop_the_others(caplog):
    client = await local()
    heard = []
    try:
        client.subscribe(todos, lambda change: 1 / 0)
        client.subscribe(todos, heard.append)
        client.mutate.add_todo(id="t1", title="a")
        await asyncio.sleep(0)
        assert len(heard) == 1
        assert "subscriber" in caplog.text
    finally:
        await client.close()


async def test_local_only_confirmed_raises_a_clear_error():
    client = await local()
    try:
        h = client.mutate.add_todo(id="t1", title="a")
        await h
        with pytest.raises(SyncError, match="local only"):
            await h.confirmed
        with pytest.raises(SyncError, match="local only"):
            await client.sync()
        status = client.status()
        assert status.local_only and not status.online and status.pokes == "off"
    finally:
        await client.close()


async def test_closed_clients_refuse_work():
    client = await local()
    await client.close()
    await client.close()
    with pytest.raises(StorageClosed):
        client.mutate.add_todo(id="t", title="x")
    with pytest.raises(StorageClosed):
        client.status()


async def test_the_sqlite_replica_keeps_rows_and_outbox_across_restarts(plasma_home):
    first = await local("sqlite", name="todos")
    h = first.mutate.add_todo(id="t1", title="a")
    await h
    first_id = first.status().client_id
    group = first.status().client_group_id
    await first.close()

    second = await local("sqlite", name="todos")
    try:
        status = second.status()
        assert status.client_group_id == group
        assert status.client_id != first_id
        assert status.pending == 1
        assert [r["id"] for r in await second.query(select(todos))] == ["t1"]
        h2 = second.mutate.add_todo(id="t2", title="b")
        assert (h2.client_id, h2.mutation_id) == (status.client_id, 1)
    finally:
        await second.close()
    assert (plasma_home / "todos.db").exists()


async def test_two_clients_on_one_file_get_their_own_ids():
    a = await local("sqlite", name="shared")
    b = await local("sqlite", name="shared")
    try:
        ha = a.mutate.add_todo(id="a", title="from a")
        hb = b.mutate.add_todo(id="b", title="from b")
        assert ha.client_id != hb.client_id
        assert ha.mutation_id == hb.mutation_id == 1
        assert {r["id"] for r in await a.query(select(todos))} == {"a", "b"}
        assert a.status().pending == b.status().pending == 2
    finally:
        await a.close()
        await b.close()


async def test_the_engine_can_run_in_its_own_thread():
    client = await local(thread=True)
    threads: list[str] = []
    try:
        client.subscribe(counters, lambda change: threads.append(threading.current_thread().name))
        h = client.mutate.bump(id="c")
        await h
        for _ in range(100):
            if threads:
                break
            await asyncio.sleep(0.01)
        assert threads == ["plasma_nb-engine"]
        assert await client.query(select(counters)) == [{"id": "c", "n": 1}]
    finally:
        await client.close()
