"""Schema versions end to end: a client the server no longer accepts stops syncing and says it
needs the new schema; a schema change (a new nullable column, a new table) while a client is
offline with pending mutations: the server migrates in place, the client migrates its
replica, keeps its outbox and pulls a full snapshot. On both server backends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

import plasma_nb as plasma
from plasma_nb import Mutators, Schema, VersionNotSupported, col, select, table
from plasma_nb.server import create_app
from tests.client.server_db import ServerDB
from tests.client.test_sync import SwappableASGI


def notes_app(version: str, compatible: tuple[str, ...] = (), *, v2: bool = False):
    """Version 1 of a notes app, or version 2: a new nullable column and a new table."""
    columns: dict[str, Any] = {"id": col.id(), "body": col.text()}
    if v2:
        columns["tag"] = col.text(nullable=True)
    notes = table("notes", **columns)
    tables = [notes]
    if v2:
        tables.append(table("labels", id=col.id(), name=col.text()))
    schema = Schema(tables, version=version, compatible=list(compatible))
    mutators = Mutators(schema)

    @mutators.register
    async def add_note(tx, *, id: str, body: str, tag: str | None = None):
        row = {"id": id, "body": body}
        if tag is not None and "tag" in notes._columns:
            row["tag"] = tag
        await tx.insert(notes).values(**row)

    if v2:
        @mutators.register
        async def add_label(tx, *, id: str, name: str):
            await tx.insert(tables[1]).values(id=id, name=name)

    return schema, mutators, notes


class Server:
    """One database; the app in front of it can be replaced (a redeploy)."""

    def __init__(self, db: ServerDB) -> None:
        self.db = db
        self.apps: list[Any] = []
        self.transport = SwappableASGI(self.deploy(*notes_app("1")[:2]))

    def deploy(self, schema: Schema, mutators: Mutators):
        app = create_app(schema, mutators, database=self.db.url, blobs=None)
        self.apps.append(app)
        if hasattr(self, "transport"):
            self.transport.inner = httpx.ASGITransport(app)
        return app

    async def redeploy(self, schema: Schema, mutators: Mutators) -> None:
        old = self.apps[-1]
        self.deploy(schema, mutators)
        await old.state.plasma.close()
        await self.apps[-1].state.plasma.ensure_open()  # migrates, as `plasma-nb serve` does

    async def connect(self, name: str, schema: Schema, mutators: Mutators, **options: Any):
        options.setdefault("storage", "sqlite")
        return await plasma.connect("http://server", schema=schema, mutators=mutators,
                                    name=name, thread=False, pokes=False, pull_interval=3600,
                                    transport=self.transport, **options)


@pytest.fixture
async def server(server_db: ServerDB) -> AsyncIterator[Server]:
    srv = Server(server_db)
    yield srv
    for app in srv.apps:
        await app.state.plasma.close()


async def rows(client, notes) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in await client.query(select(notes))}


async def test_an_offline_client_with_pending_work_across_a_schema_change(server):
    v1, m1, notes1 = notes_app("1")
    a = await server.connect("a", v1, m1)
    a.mutate.add_note(id="n1", body="before")
    await a.sync()
    cookie = a.status().cookie
    a.offline()
    h2 = a.mutate.add_note(id="n2", body="written offline")
    h3 = a.mutate.add_note(id="n3", body="also offline")
    await h3
    await a.close()  # the kernel stops; the outbox is on disk

    # The app moves to version 2 (accepting 1); another client writes with the new column.
    v2, m2, notes2 = notes_app("2", ("1",), v2=True)
    await server.redeploy(v2, m2)
    b = await server.connect("b", v2, m2)
    b.mutate.add_note(id="n4", body="new", tag="red")
    b.mutate.add_label(id="l1", name="urgent")
    await b.sync()
    await b.close()

    # The offline client comes back with the new schema module.
    a = await server.connect("a", v2, m2)
    try:
        status = a.status()
        assert status.pending == 2  # the outbox survived the migration
        assert status.cookie is None  # a full pull comes next
        assert await rows(a, notes2) == {
            "n1": {"id": "n1", "body": "before", "tag": None},
            "n2": {"id": "n2", "body": "written offline", "tag": None},
            "n3": {"id": "n3", "body": "also offline", "tag": None},
        }
        await a.sync()
        status = a.status()
        assert status.pending == 0 and status.cookie is not None and status.cookie > cookie
        server_rows = server.db.rows("SELECT id, body, tag FROM notes")
        assert set(server_rows) == {"n1", "n2", "n3", "n4"}
        assert await rows(a, notes2) == {
            k: {"id": k, "body": v[0], "tag": v[1]} for k, v in server_rows.items()}
        labels = v2.table("labels")
        assert await a.query(select(labels)) == [{"id": "l1", "name": "urgent"}]
    finally:
        await a.close()
    assert h2 is not None  # (its process is gone; the new one pushed it)


async def test_a_client_on_a_compatible_older_version_keeps_syncing(server):
    v1, m1, notes1 = notes_app("1")
    old = await server.connect("old", v1, m1, storage="memory")
    try:
        old.mutate.add_note(id="n1", body="v1")
        await old.sync()
        v2, m2, _ = notes_app("2", ("1",), v2=True)
        await server.redeploy(v2, m2)
        new = await server.connect("new", v2, m2, storage="memory")
        new.mutate.add_note(id="n2", body="v2", tag="red")
        new.mutate.add_label(id="l1", name="x")
        await new.sync()
        await new.close()
        # The old client ignores the column and the table it does not know.
        h = old.mutate.add_note(id="n3", body="still v1")
        await old.sync()
        assert await h.confirmed is None
        assert await rows(old, notes1) == {
            "n1": {"id": "n1", "body": "v1"}, "n2": {"id": "n2", "body": "v2"},
            "n3": {"id": "n3", "body": "still v1"}}
    finally:
        await old.close()


async def test_a_client_whose_schema_is_no_longer_accepted_stops_and_says_so(server):
    v1, m1, notes1 = notes_app("1")
    a = await server.connect("a", v1, m1, storage="memory")
    try:
        a.mutate.add_note(id="n1", body="synced")
        await a.sync()
        v3, m3, _ = notes_app("3", ("2",), v2=True)
        await server.redeploy(v3, m3)
        h = a.mutate.add_note(id="n2", body="pending")
        with pytest.raises(VersionNotSupported) as raised:
            await a.sync()
        message = str(raised.value)
        assert message.startswith(
            "this client needs the new schema: the server no longer accepts schema version "
            "'1' (it serves version '3' and accepts '3', '2')")
        assert "pending mutations stay in the local outbox" in message
        # The handle says so too, and so does the status; syncing has stopped.
        with pytest.raises(VersionNotSupported, match="needs the new schema"):
            await h.confirmed
        status = a.status()
        assert status.pending == 1
        assert "needs the new schema" in (status.last_error or "")
        with pytest.raises(VersionNotSupported, match="needs the new schema"):
            await a.sync()
        later = a.mutate.add_note(id="n3", body="still local")
        with pytest.raises(VersionNotSupported, match="needs the new schema"):
            await later.confirmed
        assert set(await rows(a, notes1)) == {"n1", "n2", "n3"}
    finally:
        await a.close()
    assert set(server.db.rows("SELECT id, body FROM notes")) == {"n1"}


async def test_the_server_refuses_an_incompatible_change_at_start_naming_it(server):
    v1, m1, _ = notes_app("1")
    await server.apps[-1].state.plasma.ensure_open()
    notes = table("notes", id=col.id(), body=col.integer(nullable=True))
    bad = Schema([notes], version="2")
    app = create_app(bad, Mutators(bad), database=server.db.url, blobs=None)
    server.apps.append(app)
    with pytest.raises(plasma.SchemaError, match=r"notes\.body is .* but the schema declares "
                                                 r"integer"):
        await app.state.plasma.ensure_open()
    required = table("notes", id=col.id(), body=col.text(), must=col.text())
    bad = Schema([required], version="2")
    app = create_app(bad, Mutators(bad), database=server.db.url, blobs=None)
    server.apps.append(app)
    with pytest.raises(plasma.SchemaError, match=r"cannot add column notes\.must"):
        await app.state.plasma.ensure_open()
