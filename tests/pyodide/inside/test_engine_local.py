"""The whole client engine in Pyodide, local only: IndexedDB keeps data and outbox."""

from __future__ import annotations

import asyncio

import pytest
from pyodide_helpers import idb_databases, idb_dump

import plasma_nb as plasma
from plasma_nb import MutationError, MutatorError, Mutators, Schema, col, select, table
from plasma_nb.client.storage.indexeddb_format import encode_key


async def open_local(client_api, todos, name: str, **kw):
    return await client_api(None, schema=todos.schema, mutators=todos.mutators, name=name, **kw)


async def test_connect_is_reachable_from_the_package(todos, idb_name: str) -> None:
    client = await plasma.connect(schema=todos.schema, mutators=todos.mutators, name=idb_name)
    try:
        # Pyodide's default storage is IndexedDB; the engine runs on the page's loop.
        assert client.status().storage.startswith("indexeddb"), client.status()
        assert client.status().local_only
    finally:
        await client.close()
    assert any(n.endswith(f":{idb_name}") for n in await idb_databases())


async def test_mutate_close_reopen_keeps_data_and_outbox(client_api, todos, idb_name) -> None:
    t = todos.todos
    client = await open_local(client_api, todos, idb_name, storage="indexeddb")
    h1 = client.mutate.add_todo(id="t1", title="Buy milk")
    # Applied before mutate() returns: the replica shows it at once.
    assert [r["title"] for r in await client.query(select(t))] == ["Buy milk"]
    h2 = client.mutate.add_todo(id="t2", title="Bake bread")
    h3 = client.mutate.mark_done(id="t1")
    await h1
    await h2
    await h3
    assert h3.is_durable
    status = client.status()
    assert status.pending == 3
    group, client_id = status.client_group_id, status.client_id
    await client.close()

    # Everything is in IndexedDB itself, outbox included (read by plain JavaScript).
    database = next(n for n in await idb_databases() if n.endswith(f":{idb_name}"))
    stored = await idb_dump(database)
    assert sum(k.startswith("_plasma_outbox/") for k in stored) == 3
    assert stored[encode_key("todos", ("t1",))]["done"] == 1

    again = await open_local(client_api, todos, idb_name)
    try:
        rows = await again.query(select(t).order_by(t.id))
        assert [(r["id"], r["title"], r["done"]) for r in rows] == [
            ("t1", "Buy milk", True), ("t2", "Bake bread", False),
        ]
        status = again.status()
        assert status.pending == 3
        assert status.client_group_id == group  # one local database, one client group
        assert status.client_id != client_id  # each opening is a client of its own
        outbox = await again.query("SELECT name, args FROM _plasma_outbox ORDER BY seq")
        assert [o["name"] for o in outbox] == ["add_todo", "add_todo", "mark_done"]
        # The replica keeps working after the reload.
        await again.mutate.rename(id="t2", title="Bake rye bread")
        assert (await again.query(select(t.title).where(t.id == "t2"))) == [
            {"title": "Bake rye bread"}
        ]
    finally:
        await again.close()


async def test_local_rejection_queues_nothing(client_api, todos, idb_name) -> None:
    client = await open_local(client_api, todos, idb_name)
    try:
        with pytest.raises(MutationError, match="title must not be empty"):
            client.mutate.add_todo(id="t1", title="  ")
        assert client.status().pending == 0
        assert await client.query("SELECT * FROM todos") == []
    finally:
        await client.close()


items = table("items", id=col.id(), n=col.integer(default=0))
odd_schema = Schema([items], version="1")
odd = Mutators(odd_schema)


@odd.register
async def add(tx, *, id: str):
    await tx.insert(items).values(id=id)


@odd.register
async def awaits_a_js_promise(tx, *, id: str):
    import js

    await js.Promise.resolve(1)
    await tx.insert(items).values(id=id)


@odd.register
async def sleeps(tx, *, id: str):
    await asyncio.sleep(0)
    await tx.insert(items).values(id=id)


@pytest.mark.parametrize("name", ["awaits_a_js_promise", "sleeps"])
async def test_a_mutator_that_awaits_something_else_is_refused(client_api, idb_name, name):
    client = await client_api(None, schema=odd_schema, mutators=odd, name=idb_name)
    try:
        with pytest.raises(MutatorError, match=name):
            client.mutate(name, id="x")
        assert client.status().pending == 0
        await client.mutate.add(id="y")
        assert await client.query("SELECT id FROM items") == [{"id": "y"}]
    finally:
        await client.close()


async def test_subscribers_hear_each_commit(client_api, todos, idb_name) -> None:
    client = await open_local(client_api, todos, idb_name)
    changes = []
    try:
        client.subscribe("todos", changes.append)
        await client.mutate.add_todo(id="t1", title="a")
        await client.mutate.mark_done(id="t1")
        for _ in range(10):  # callbacks run on a later loop iteration
            if len(changes) == 2:
                break
            await asyncio.sleep(0.01)
        assert len(changes) == 2
    finally:
        await client.close()


async def test_two_open_clients_on_one_database(client_api, todos, idb_name) -> None:
    """Two clients (as two tabs) on one database: each its own client id, each sees the
    other's local-only mutations, and a reopen finds both outboxes."""
    t = todos.todos
    first = await open_local(client_api, todos, idb_name)
    second = await open_local(client_api, todos, idb_name)
    try:
        assert first.status().client_id != second.status().client_id
        assert first.status().client_group_id == second.status().client_group_id
        await first.mutate.add_todo(id="t1", title="from the first")
        await second.mutate.add_todo(id="t2", title="from the second")
        for _ in range(200):
            if len(await first.query(select(t))) == 2 and len(await second.query(select(t))) == 2:
                break
            await asyncio.sleep(0.01)
        assert {r["id"] for r in await first.query(select(t))} == {"t1", "t2"}
        assert {r["id"] for r in await second.query(select(t))} == {"t1", "t2"}
    finally:
        await first.close()
        await second.close()
    again = await open_local(client_api, todos, idb_name)
    try:
        assert {r["id"] for r in await again.query(select(t))} == {"t1", "t2"}
        assert again.status().pending == 2
    finally:
        await again.close()
