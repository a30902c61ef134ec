"""The storage contract (plasma_nb/client/storage/base.py), checked for every backend.

Each backend is exercised through the replica, as the engine uses it. ``indexeddb`` runs
here against a Python stand-in for the browser (tests/client/storage/fake_idb.py); the
same suite runs against real IndexedDB code under Pyodide with the ``pyodide`` marker.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from plasma_nb import Schema, col, table
from plasma_nb.client.replica import Replica
from plasma_nb.client.storage import MemoryStorage, SQLiteStorage, Storage, make_storage
from plasma_nb.client.storage.base import CommitRecord
from plasma_nb.client.storage.indexeddb import IndexedDBStorage
from plasma_nb.client.storage.indexeddb_format import decode_key, encode_key, encode_record
from plasma_nb.core.errors import StorageClosed, StorageError
from tests.client.storage import fake_idb

items = table("items", id=col.id(), label=col.text(), size=col.real(nullable=True),
              flag=col.boolean(default=False), data=col.json(nullable=True))
schema = Schema([items], version="1")


@dataclass
class Backend:
    name: str
    make: Callable[[], Storage]
    persistent: bool
    idb: fake_idb.FakeIndexedDB | None = None


@pytest.fixture(params=["memory", "sqlite", "indexeddb"])
def backend(request, tmp_path, monkeypatch) -> Backend:
    if request.param == "memory":
        return Backend("memory", lambda: MemoryStorage("t"), persistent=False)
    if request.param == "sqlite":
        path = tmp_path / "replica.db"
        return Backend("sqlite", lambda: SQLiteStorage("t", path=path), persistent=True)
    factory = fake_idb.FakeIndexedDB()
    fake_idb.install(monkeypatch, factory)
    return Backend(
        "indexeddb", lambda: IndexedDBStorage("t", database="plasma_nb:test:t"),
        persistent=True, idb=factory,
    )


async def open_replica(storage: Storage, the_schema: Schema = schema) -> Replica:
    replica = Replica(storage, the_schema)
    await replica.open()
    return replica


def insert(replica: Replica, *rows: tuple[str, str]):
    with replica.write() as w:
        for key, label in rows:
            w.conn.execute("INSERT INTO items (id, label) VALUES (?, ?)", (key, label))
    return w


def labels(replica: Replica) -> dict[str, str]:
    return dict(replica.read("SELECT id, label FROM items ORDER BY id"))


async def test_open_gives_an_autocommit_connection(backend: Backend):
    replica = await open_replica(backend.make())
    try:
        assert replica.conn.isolation_level is None
        assert not replica.conn.in_transaction
    finally:
        await replica.close()


async def test_a_durable_commit_survives_reopening(backend: Backend):
    replica = await open_replica(backend.make())
    w = insert(replica, ("a", "one"), ("b", "two"))
    await w.durable
    with replica.write() as w2:
        w2.conn.execute("UPDATE items SET label = 'uno' WHERE id = 'a'")
        w2.conn.execute("DELETE FROM items WHERE id = 'b'")
    await w2.durable
    await replica.close()

    again = await open_replica(backend.make())
    try:
        assert labels(again) == ({"a": "uno"} if backend.persistent else {})
    finally:
        await again.close()


async def test_values_round_trip_exactly(backend: Backend):
    replica = await open_replica(backend.make())
    value = 0.1 + 0.2  # not representable in 15 digits
    with replica.write() as w:
        w.conn.execute(
            "INSERT INTO items (id, label, size, flag, data) VALUES (?, ?, ?, ?, ?)",
            ("k", "é ✓ \x00 \"'", value, 1, json.dumps({"n": 2**53})),
        )
    await w.durable
    await replica.close()
    again = await open_replica(backend.make())
    try:
        rows = again.read("SELECT id, label, size, flag, data FROM items")
        if backend.persistent:
            assert rows == [("k", "é ✓ \x00 \"'", value, 1, json.dumps({"n": 2**53}))]
    finally:
        await again.close()


async def test_a_rolled_back_transaction_leaves_nothing(backend: Backend):
    replica = await open_replica(backend.make())
    try:
        with pytest.raises(RuntimeError), replica.write() as w:
            w.conn.execute("INSERT INTO items (id, label) VALUES ('x', 'gone')")
            raise RuntimeError("abort")
        assert labels(replica) == {}
        assert not replica.conn.in_transaction
    finally:
        await replica.close()
    if backend.idb is not None:
        assert backend.idb.databases["plasma_nb:test:t"] == {}


async def test_commits_become_durable_in_order(backend: Backend):
    replica = await open_replica(backend.make())
    writes = [insert(replica, (f"k{i}", f"v{i}")) for i in range(5)]
    for w in writes:
        await w.durable
    await replica.close()
    again = await open_replica(backend.make())
    try:
        expected = {f"k{i}": f"v{i}" for i in range(5)} if backend.persistent else {}
        assert labels(again) == expected
    finally:
        await again.close()


async def test_close_is_idempotent_and_persist_after_it_raises(backend: Backend):
    storage = backend.make()
    replica = await open_replica(storage)
    await replica.close()
    await storage.close()
    with pytest.raises(StorageClosed):
        storage.persist(CommitRecord())
    with pytest.raises(StorageClosed):
        await storage.open()


async def test_internal_and_user_tables_all_come_back(backend: Backend):
    replica = await open_replica(backend.make())
    with replica.write() as w:
        w.set_meta("cookie", 42)
        w.conn.execute(
            "INSERT INTO _plasma_outbox (seq, client_id, mutation_id, name, args, timestamp) "
            "VALUES (1, 'c1', 1, 'm', '{}', 1.5)"
        )
        w.conn.execute("INSERT INTO items (id, label) VALUES ('a', 'x')")
    await w.durable
    await replica.close()
    again = await open_replica(backend.make())
    try:
        if backend.persistent:
            assert again.meta("cookie") == 42
            assert again.read("SELECT client_id, mutation_id FROM _plasma_outbox") == [("c1", 1)]
        else:
            assert again.meta("cookie") is None
    finally:
        await again.close()


async def test_rows_that_no_longer_fit_the_schema_are_dropped_on_load(backend: Backend):
    replica = await open_replica(backend.make())
    await insert(replica, ("a", "x")).durable
    await replica.close()
    narrower = table("items", id=col.id(), label=col.text())
    other = table("others", id=col.id())
    again = await open_replica(backend.make(), Schema([narrower, other], version="2"))
    try:
        expected = [("a", "x")] if backend.persistent else []
        assert again.read("SELECT id, label FROM items") == expected
    finally:
        await again.close()


# -- backend specifics ----------------------------------------------------------------------


async def test_sqlite_file_is_in_wal_mode_under_plasma_home(plasma_home):
    storage = make_storage("sqlite", "todos")
    assert isinstance(storage, SQLiteStorage)
    assert storage.path == plasma_home / "todos.db"
    replica = await open_replica(storage)
    try:
        assert replica.read("PRAGMA journal_mode") == [("wal",)]
        assert plasma_home.joinpath("todos.db").exists()
    finally:
        await replica.close()


@pytest.mark.parametrize("name", ["../evil", ".hidden", "", "a/b", "x" * 300])
def test_sqlite_refuses_names_that_are_not_file_names(name):
    with pytest.raises(StorageError, match="database name"):
        SQLiteStorage(name)


def test_unknown_storage_kind_is_named():
    with pytest.raises(StorageError, match="unknown storage 'floppy'"):
        make_storage("floppy", "x")


async def test_sqlite_is_shared_between_connections(tmp_path):
    path = tmp_path / "shared.db"
    first = await open_replica(SQLiteStorage("s", path=path))
    second = await open_replica(SQLiteStorage("s", path=path))
    try:
        insert(first, ("a", "from first"))
        insert(second, ("b", "from second"))
        assert labels(first) == labels(second) == {"a": "from first", "b": "from second"}
    finally:
        await first.close()
        await second.close()


async def test_indexeddb_write_failure_breaks_the_storage(monkeypatch):
    factory = fake_idb.FakeIndexedDB()
    fake_idb.install(monkeypatch, factory)
    replica = await open_replica(IndexedDBStorage("t", database="db"))
    try:
        factory.fail_writes = True
        w = insert(replica, ("a", "lost"))
        with pytest.raises(StorageError, match="IndexedDB write failed"):
            await w.durable
        factory.fail_writes = False
        w2 = insert(replica, ("b", "after the hole"))
        with pytest.raises(StorageError, match="earlier write"):
            await w2.durable
    finally:
        await replica.close()


async def test_indexeddb_writes_are_numbered_and_a_bare_replica_refuses_foreign_ones(
    monkeypatch,
):
    """Tabs share a database through a numbered journal (tabs.py rebases a client onto
    other tabs' writes); a replica with no client to rebase says so instead of mixing."""
    factory = fake_idb.FakeIndexedDB()
    fake_idb.install(monkeypatch, factory)
    first = await open_replica(IndexedDBStorage("t", database="db"))
    second = await open_replica(IndexedDBStorage("t", database="db"))
    try:
        await insert(first, ("a", "from first")).durable
        assert factory.logs["db"] == {1: json.dumps([encode_key("items", ("a",))])}
        with pytest.raises(StorageError, match="another tab wrote"):
            await insert(second, ("b", "from second")).durable
    finally:
        await first.close()
        await second.close()
    assert set(factory.databases["db"]) == {encode_key("items", ("a",))}


async def test_indexeddb_writes_one_transaction_per_commit(monkeypatch):
    factory = fake_idb.FakeIndexedDB()
    fake_idb.install(monkeypatch, factory)
    replica = await open_replica(IndexedDBStorage("t", database="db"))
    try:
        before = factory.writes
        await insert(replica, ("a", "1"), ("b", "2"), ("c", "3")).durable
        assert factory.writes == before + 1
    finally:
        await replica.close()


def test_indexeddb_keys_and_records_encode_reversibly():
    assert decode_key(encode_key("todos", ("a/b",))) == ("todos", ("a/b",))
    assert decode_key(encode_key("_plasma_undo", (3, "todos", 7))) == (
        "_plasma_undo", (3, "todos", 7)
    )
    record = CommitRecord()
    record.put("todos", ("t1",), {"id": "t1", "n": 2**60, "r": 0.1})
    record.delete("todos", ("t2",))
    payload = json.loads(encode_record(record))
    assert payload["deletes"] == ['todos/["t2"]']
    [[key, value]] = payload["puts"]
    assert json.loads(value) == {"id": "t1", "n": 2**60, "r": 0.1}


def test_commit_record_keeps_the_last_word_per_key():
    record = CommitRecord()
    record.put("t", ("a",), {"id": "a"})
    record.delete("t", ("a",))
    assert record.puts["t"] == {} and record.deletes["t"] == {("a",)}
    record.put("t", ("a",), {"id": "a", "v": 2})
    assert record.deletes["t"] == set() and len(record) == 1


def test_connections_are_plain_sqlite():
    # The engine relies on sqlite3 features Pyodide's SQLite 3.39 has: RETURNING (3.35),
    # upsert (3.24) and json functions are not needed by the replica itself.
    assert sqlite3.sqlite_version_info >= (3, 35)
