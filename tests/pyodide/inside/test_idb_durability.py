"""IndexedDB durability: a commit written through is loaded back by a fresh replica.

These use the replica and the IndexedDB backend directly (the layer below
``connect``), and read fake-indexeddb with plain JavaScript as an independent check.
"""

from __future__ import annotations

import json

from pyodide_helpers import idb_databases, idb_dump

from plasma_nb import select
from plasma_nb.client.replica import Replica
from plasma_nb.client.storage.indexeddb import IndexedDBStorage
from plasma_nb.client.storage.indexeddb_format import encode_key


async def open_replica(todos, database: str) -> Replica:
    replica = Replica(IndexedDBStorage("t", database=database), todos.schema)
    await replica.open()
    return replica


def insert(replica: Replica, *rows: tuple[str, str, bool]):
    with replica.write() as w:
        for id_, title, done in rows:
            w.conn.execute(
                "INSERT INTO todos (id, title, done) VALUES (?, ?, ?)", (id_, title, int(done))
            )
    return w


async def test_write_through_and_load_back(todos, idb_name: str) -> None:
    first = await open_replica(todos, idb_name)
    w = insert(first, ("t1", "milk", False), ("t2", "bread", True))
    await w.durable
    # Durable means: in IndexedDB now, as seen by another connection.
    stored = await idb_dump(idb_name)
    assert stored[encode_key("todos", ("t1",))]["title"] == "milk"
    await first.close()
    assert idb_name in await idb_databases()

    second = await open_replica(todos, idb_name)
    try:
        rows = second.query(select(todos.todos).order_by(todos.todos.id))
        assert [(r["id"], r["title"], r["done"]) for r in rows] == [
            ("t1", "milk", False), ("t2", "bread", True),
        ]
    finally:
        await second.close()


async def test_updates_and_deletes_are_written_through(todos, idb_name: str) -> None:
    replica = await open_replica(todos, idb_name)
    await insert(replica, ("t1", "milk", False), ("t2", "bread", False)).durable
    with replica.write() as w:
        w.conn.execute("UPDATE todos SET done = 1 WHERE id = 't1'")
        w.conn.execute("DELETE FROM todos WHERE id = 't2'")
    await w.durable
    await replica.close()

    stored = await idb_dump(idb_name)
    assert encode_key("todos", ("t2",)) not in stored
    assert stored[encode_key("todos", ("t1",))]["done"] == 1

    again = await open_replica(todos, idb_name)
    try:
        assert again.query("SELECT id, done FROM todos") == [{"id": "t1", "done": 1}]
    finally:
        await again.close()


async def test_internal_tables_are_written_through(todos, idb_name: str) -> None:
    """The outbox and meta tables travel in the same records as the user's rows."""
    replica = await open_replica(todos, idb_name)
    with replica.write() as w:
        w.set_meta("cookie", 42)
        w.conn.execute("INSERT INTO todos (id, title) VALUES ('t1', 'milk')")
    await w.durable
    await replica.close()
    stored = await idb_dump(idb_name)
    assert json.loads(stored[encode_key("_plasma_meta", ("cookie",))]["value"]) == 42

    again = await open_replica(todos, idb_name)
    try:
        assert again.meta("cookie") == 42
    finally:
        await again.close()


async def test_many_commits_without_awaiting_keep_their_order(todos, idb_name: str) -> None:
    """Commits issued back to back become durable in order; the last one wins."""
    replica = await open_replica(todos, idb_name)
    writes = []
    for i in range(50):
        with replica.write() as w:
            w.conn.execute(
                "INSERT INTO todos (id, title) VALUES ('t', ?) "
                "ON CONFLICT (id) DO UPDATE SET title = excluded.title",
                (f"v{i}",),
            )
        writes.append(w)
    await writes[-1].durable
    assert all(w.durable.done() for w in writes)
    await replica.close()
    again = await open_replica(todos, idb_name)
    try:
        assert again.query("SELECT title FROM todos") == [{"title": "v49"}]
    finally:
        await again.close()


async def test_close_waits_for_pending_writes(todos, idb_name: str) -> None:
    replica = await open_replica(todos, idb_name)
    w = insert(replica, ("t1", "milk", False))
    await replica.close()  # not awaiting w.durable first
    assert w.durable.done() and w.durable.exception() is None
    assert encode_key("todos", ("t1",)) in await idb_dump(idb_name)


async def test_databases_are_separate(todos, idb_name: str) -> None:
    a = await open_replica(todos, idb_name + "-a")
    b = await open_replica(todos, idb_name + "-b")
    await insert(a, ("only-a", "x", False)).durable
    await a.close()
    await b.close()
    b2 = await open_replica(todos, idb_name + "-b")
    try:
        assert b2.query("SELECT id FROM todos") == []
    finally:
        await b2.close()
