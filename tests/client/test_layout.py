"""The replica's layout: schema changes migrate the replica and force a full pull."""

from __future__ import annotations

import pytest

import plasma_nb as plasma
from plasma_nb import Mutators, Schema, col, table
from plasma_nb.client.replica import Replica
from plasma_nb.client.storage import SQLiteStorage
from plasma_nb.client.synchronizer import Synchronizer
from plasma_nb.core.errors import StorageError


def notes_schema(version: str, **extra) -> Schema:
    notes = table("notes", id=col.id(), body=col.text(), **extra)
    return Schema([notes], version=version)


async def open_sync(path, schema: Schema) -> Synchronizer:
    replica = Replica(SQLiteStorage("n", path=path), schema)
    reshaped = await replica.open()
    sync = Synchronizer(replica, Mutators(schema), now_ms=lambda: 1)
    sync.start(reshaped=reshaped)
    return sync


async def test_an_added_nullable_column_migrates_in_place(tmp_path):
    path = tmp_path / "n.db"
    sync = await open_sync(path, notes_schema("1"))
    with sync.replica.write() as w:
        w.conn.execute("INSERT INTO notes (id, body) VALUES ('a', 'kept')")
        w.set_meta("cookie", 99)
    await sync.replica.close()

    sync = await open_sync(path, notes_schema("2", pinned=col.boolean(default=False),
                                               tag=col.text(nullable=True)))
    try:
        assert sync.replica.query("SELECT id, body, pinned, tag FROM notes") == [
            {"id": "a", "body": "kept", "pinned": 0, "tag": None}
        ]
        assert sync.cookie is None  # a new schema version pulls a full snapshot
        assert sync.replica.meta("schema_version") == "2"
    finally:
        await sync.replica.close()


async def test_an_incompatible_change_recreates_the_table(tmp_path):
    path = tmp_path / "n.db"
    sync = await open_sync(path, notes_schema("1"))
    with sync.replica.write() as w:
        w.conn.execute("INSERT INTO notes (id, body) VALUES ('a', 'x')")
        w.set_meta("cookie", 5)
    await sync.replica.close()

    # Same version string, but body became an integer: the shape decides, not the label.
    changed = Schema([table("notes", id=col.id(), body=col.integer())], version="1")
    sync = await open_sync(path, changed)
    try:
        assert sync.replica.query("SELECT * FROM notes") == []
        assert sync.cookie is None
    finally:
        await sync.replica.close()


async def test_a_newer_format_is_refused(tmp_path):
    path = tmp_path / "n.db"
    sync = await open_sync(path, notes_schema("1"))
    with sync.replica.write() as w:
        w.set_meta("format", 999)
    await sync.replica.close()
    replica = Replica(SQLiteStorage("n", path=path), notes_schema("1"))
    await replica.open()
    try:
        with pytest.raises(StorageError, match="newer plasma_nb"):
            Synchronizer(replica, Mutators(replica.schema), now_ms=lambda: 1).start(
                reshaped=False
            )
    finally:
        await replica.close()


async def test_connect_checks_its_arguments():
    schema = notes_schema("1")
    with pytest.raises(plasma.SchemaError, match="schema=Schema"):
        await plasma.connect(schema=None, mutators=Mutators(schema))  # type: ignore[arg-type]
    with pytest.raises(plasma.MutatorError, match="different schema"):
        await plasma.connect(schema=schema, mutators=Mutators(notes_schema("1")))
    with pytest.raises(plasma.SyncError, match="need a server URL"):
        await plasma.connect(schema=schema, mutators=Mutators(schema), token="t")
