"""The client engine: applying a large pull, and rebasing pending mutations.

Every side writes to its own SQLite file in WAL mode with ``synchronous=FULL``, which is
how the client's SQLite storage keeps a replica, so both pay one durable commit a run.
The table has text, boolean, integer, real and nullable text and JSON columns.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from benchmarks.harness import Context, benchmark, max_slowdown, min_ratio
from benchmarks.items import COLUMNS, items, schema
from plasma_nb import Mutators
from plasma_nb.client import Change, Client, SQLiteStorage, connect
from plasma_nb.client.transport import Response
from plasma_nb.core.dialect import SQLiteDialect
from plasma_nb.core.protocol import PullResponse, PutOp, loads_strict

PULL_ROWS = 10_000
BASE_ROWS = 1_000  # rows already in the replica under the pending mutations

mutators = Mutators(schema)


@mutators.register
async def add_item(tx: Any, *, id: str, title: str, priority: int) -> None:
    await tx.insert(items).values(id=id, title=title, priority=priority)


@mutators.register
async def rename(tx: Any, *, id: str, title: str) -> None:
    if await tx.get(items, id) is None:
        raise ValueError(f"no item {id!r}")
    await tx.update(items).set(title=title).where(items.id == id)


@mutators.register
async def mark_done(tx: Any, *, id: str) -> None:
    await tx.update(items).set(done=True).where(items.id == id)


def _row(i: int) -> dict[str, Any]:
    return {
        "id": f"item-{i:06d}",
        "title": f"Item number {i}",
        "done": i % 3 == 0,
        "priority": i % 5,
        "estimate": None if i % 4 == 0 else i / 8,
        "owner": None if i % 2 else f"user-{i % 17}",
        "tags": ["red", "blue"] if i % 10 == 0 else None,
    }


def _open_raw(path: Path) -> sqlite3.Connection:
    """A plain sqlite3 connection set up the way the client's SQLite storage sets up its."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(SQLiteDialect().create_table_sql(items))
    return conn


UPSERT = (
    f"INSERT INTO items ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)}) "
    "ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c != "id")
)


async def _pull_body(directory: Path) -> bytes:
    """A real pull response: a server on SQLite with 10,000 rows answers a pull from nothing
    (``clear`` and one ``put`` a row, 10,001 patch operations)."""
    from plasma_nb.server import create_app  # the server extra: benchmarks run with [dev]

    db = directory / "server.db"

    async def fetch() -> bytes:
        app = create_app(schema, mutators, database=f"sqlite:///{db}")
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
            assert (await http.get("/sync/schema")).status_code == 200  # creates the tables
            conn = sqlite3.connect(db)
            with conn:  # an operator's writes: the triggers log them like a mutator's
                conn.executemany(UPSERT, [_stored(_row(i)) for i in range(PULL_ROWS)])
            conn.close()
            answer = await http.post("/sync/pull", json={
                "pullVersion": 1, "clientGroupID": "bench", "cookie": None,
                "profileID": "bench", "schemaVersion": "1",
            })
        await app.state.plasma.close()
        answer.raise_for_status()
        return answer.content

    body = await fetch()
    patch = json.loads(body)["patch"]
    assert len(patch) == PULL_ROWS + 1 and patch[0] == {"op": "clear"}, patch[:2]
    return body


def _stored(value: Mapping[str, Any]) -> tuple[Any, ...]:
    tags = value["tags"]
    return (value["id"], value["title"], value["done"], value["priority"], value["estimate"],
            value["owner"], None if tags is None else json.dumps(tags))


class BytesTransport:
    """Answers every pull with the same body, decoded as the real transports decode a
    body (``loads_strict``); pushes and the schema request get small answers."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    async def request(
        self, method: str, path: str, *, json: Any = None, params: Mapping[str, str] | None = None,
        progress: Any = None,
    ) -> Response:
        if path == "/sync/pull":
            return Response(200, loads_strict(self.body))
        return Response(200, {"user": None} if path == "/sync/schema" else {})

    async def websocket(self, path: str, params: Mapping[str, str]) -> Any:
        raise NotImplementedError  # pokes=False

    async def aclose(self) -> None:
        pass


# --- a 10k-change pull ---------------------------------------------------------------------


class _PullBench:
    def __init__(self, subscribed: bool) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="plasma-bench-")
        directory = Path(self.tmp.name)
        self.directory = directory
        self.body = b""
        self.raw = _open_raw(directory / "raw.db")
        self.subscribed = subscribed
        self.heard = asyncio.Event()
        self.changes: list[Change] = []
        self.client: Client | None = None
        self.path = directory / "client.db"

    async def open(self) -> None:
        self.body = await _pull_body(self.directory)
        self.client = await connect(
            "http://bench", schema=schema, mutators=mutators, name="bench",
            storage=SQLiteStorage(path=self.path), transport=BytesTransport(self.body),
            thread=False, pokes=False, pull_interval=3600,
        )
        if self.subscribed:
            self.client.subscribe(items, self._heard)
        await self.client.sync()  # the schema request; leaves 10k rows, reset before runs

    def _heard(self, change: Change) -> None:
        self.changes.append(change)
        self.heard.set()

    def anchor(self) -> None:
        data = json.loads(self.body)
        conn = self.raw
        conn.execute("BEGIN IMMEDIATE")
        rows = []
        for op in data["patch"]:
            if op["op"] == "put":
                rows.append(_stored(op["value"]))
            elif op["op"] == "clear":
                conn.execute("DELETE FROM items")
            else:
                conn.execute("DELETE FROM items WHERE id = ?", (op["key"].partition("/")[2],))
        conn.executemany(UPSERT, rows)
        conn.execute("COMMIT")

    async def subject(self) -> None:
        assert self.client is not None
        await self.client.sync()
        if self.subscribed:
            await self.heard.wait()  # the subscriber has the 10k-row Change in hand

    async def before_run(self, side: str) -> None:
        # Untimed: empty both tables (and the client's cookie) behind the engine's back,
        # so nobody is told, and checkpoint both WALs.
        self.raw.execute("DELETE FROM items")
        self.raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert self.client is not None
        replica = self.client._engine.replica
        with replica.lock:
            conn = replica.conn
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM items")
            conn.execute("UPDATE _plasma_meta SET value = 'null' WHERE key = 'cookie'")
            conn.execute("COMMIT")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        await asyncio.sleep(0)
        self.heard.clear()
        self.changes.clear()

    async def after_run(self, side: str) -> None:
        if side == "subject" and self.subscribed:
            [change] = self.changes
            assert len(change.added["items"]) == PULL_ROWS, change
        count = (self.raw if side == "anchor" else sqlite3.connect(self.path)).execute(
            "SELECT count(*) FROM items").fetchone()[0]
        assert count == PULL_ROWS, (side, count)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
        self.raw.close()
        self.tmp.cleanup()


async def _pull_context(subscribed: bool) -> Context:
    bench = _PullBench(subscribed)
    await bench.open()
    return Context(anchor=bench.anchor, subject=bench.subject, before_run=bench.before_run,
                   after_run=bench.after_run, close=bench.close)


@benchmark(bar=min_ratio(0.50))
async def client_pull_10k() -> Context:
    """A 10k-row pull from its body's bytes to a commit, no subscriber, vs json.loads + upsert.

    Subject: ``client.sync()`` against a transport that hands back a real pull response
    body (made by the server engine: ``clear`` plus 10,000 ``put``) decoded with
    ``loads_strict``, as the httpx and fetch transports do; then the engine validates it,
    rebases (nothing pending) and commits. Anchor: ``json.loads`` of the same bytes and
    one ``executemany`` upsert of the rows into the same table, in one transaction.
    """
    return await _pull_context(subscribed=False)


@benchmark(bar=min_ratio(0.50))
async def client_pull_10k_subscribed() -> Context:
    """The same 10k-row pull with one subscriber, timed until it holds the 10k-row Change.

    The subject also computes the commit's net change (10,000 added rows, decoded to
    Python values) and delivers it to the subscriber; the anchor is unchanged.
    """
    return await _pull_context(subscribed=True)


# --- rebase with K pending mutations ---------------------------------------------------------


def _pending(k: int) -> list[tuple[str, dict[str, Any]]]:
    """K mutations in a fixed mix: a third add rows, a third rename (read, then update)
    and a third mark rows done, the last two on rows of the base."""
    out: list[tuple[str, dict[str, Any]]] = []
    for i in range(k):
        kind = i % 3
        if kind == 0:
            out.append(("add_item", {"id": f"new-{i:06d}", "title": f"New {i}", "priority": 2}))
        elif kind == 1:
            out.append(("rename", {"id": f"item-{i % BASE_ROWS:06d}", "title": f"Renamed {i}"}))
        else:
            out.append(("mark_done", {"id": f"item-{(i * 7) % BASE_ROWS:06d}"}))
    return out


class _RawReplay:
    """The anchor: the same K mutations as hand-written SQL, in plain sqlite3.

    One run: BEGIN IMMEDIATE; undo the K mutations with inverse statements prepared from
    their pre-images (delete the added rows, put back the changed rows' values); apply the
    patch (one upsert); SAVEPOINT; replay the K mutations' statements in order (an INSERT;
    a SELECT of the row then an UPDATE; an UPDATE); RELEASE; COMMIT.
    """

    def __init__(self, path: Path, pending: list[tuple[str, dict[str, Any]]]) -> None:
        self.conn = _open_raw(path)
        self.conn.executemany(UPSERT, [_stored(_row(i)) for i in range(BASE_ROWS)])
        before = {r[0]: r for r in self.conn.execute("SELECT * FROM items")}
        self.added = [(a["id"],) for name, a in pending if name == "add_item"]
        touched = {a["id"] for name, a in pending if name != "add_item"}
        self.restore = [before[i][1:] + (i,) for i in sorted(touched)]
        self.pending = pending
        self._replay()

    def _replay(self) -> None:
        execute = self.conn.execute
        for name, a in self.pending:
            if name == "add_item":
                execute("INSERT INTO items (id, title, priority) VALUES (?, ?, ?)",
                        (a["id"], a["title"], a["priority"]))
            elif name == "rename":
                if execute("SELECT * FROM items WHERE id = ?", (a["id"],)).fetchone() is None:
                    raise AssertionError(a)
                execute("UPDATE items SET title = ? WHERE id = ?", (a["title"], a["id"]))
            else:
                execute("UPDATE items SET done = 1 WHERE id = ?", (a["id"],))

    def run(self, patch_row: tuple[Any, ...]) -> None:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("DELETE FROM items WHERE id = ?", self.added)
        conn.executemany(
            "UPDATE items SET " + ", ".join(f"{c} = ?" for c in COLUMNS[1:]) + " WHERE id = ?",
            self.restore,
        )
        conn.execute(UPSERT, patch_row)
        conn.execute("SAVEPOINT replay")
        self._replay()
        conn.execute("RELEASE replay")
        conn.execute("COMMIT")


class _RebaseBench:
    def __init__(self, k: int) -> None:
        self.k = k
        self.tmp = tempfile.TemporaryDirectory(prefix="plasma-bench-")
        directory = Path(self.tmp.name)
        self.pending = _pending(k)
        self.raw = _RawReplay(directory / "raw.db", self.pending)
        self.path = directory / "client.db"
        self.client: Client | None = None
        self.patch = _row(1)
        self.rounds = 0
        self.response: PullResponse | None = None

    async def open(self) -> None:
        # Local only: nothing pushes the pending mutations or pulls on its own.
        client = self.client = await connect(
            schema=schema, mutators=mutators, name="bench", storage=SQLiteStorage(path=self.path),
            thread=False,
        )
        replica = client._engine.replica
        with replica.lock:
            conn = replica.conn
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(UPSERT, [_stored(_row(i)) for i in range(BASE_ROWS)])
            conn.execute("COMMIT")
        for name, args in self.pending:
            client.mutate(name, **args)
        assert client.status().pending == self.k

    def anchor(self) -> None:
        self.raw.run(_stored(self.patch))

    def subject(self) -> None:
        assert self.client is not None and self.response is not None
        sync = self.client._engine.sync
        result = sync.pull_done(sync.pull_request(), self.response)
        assert result.applied and not result.skipped

    def before_run(self, side: str) -> None:
        # Untimed: a pull response that confirms none of the K pending mutations and puts
        # one row that another client changed, new each round: a row that pending
        # mutations read and write (item 1: renamed by mutation 1, marked done by
        # mutation 143 when K > 143). The rebase must undo and replay all of them, and
        # the rename runs again on the new row; the anchor puts the same row.
        assert self.client is not None
        self.rounds += 1
        self.patch = {**_row(1), "title": f"Changed elsewhere {self.rounds}",
                      "priority": self.rounds % 5}
        cookie = (self.client._engine.sync.cookie or 0) + 1
        self.response = PullResponse(cookie, {}, (PutOp(f"items/{self.patch['id']}", self.patch),))

    def after_run(self, side: str) -> None:
        # Both sides end with the patch under the pending mutations' effects.
        conn = self.raw.conn if side == "anchor" else sqlite3.connect(self.path)
        row = conn.execute("SELECT title, done, priority FROM items WHERE id = 'item-000001'")
        done = int(("mark_done", {"id": "item-000001"}) in self.pending)
        assert row.fetchone() == ("Renamed 1", done, self.rounds % 5), side
        if side == "subject":
            conn.close()
            assert self.client is not None and self.client.status().pending == self.k

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
        self.raw.conn.close()
        self.tmp.cleanup()


async def _rebase_context(k: int) -> Context:
    bench = _RebaseBench(k)
    await bench.open()
    return Context(anchor=bench.anchor, subject=bench.subject, before_run=bench.before_run,
                   after_run=bench.after_run, close=bench.close)


@benchmark(bar=max_slowdown(3))
async def client_rebase_100() -> Context:
    """Rebase 100 pending mutations under a one-row pull vs a raw savepoint replay.

    Subject: the engine's rebase of a pull that confirms nothing and puts one row that
    pending mutations read and write, over 100 pending mutations (a third inserts, a
    third read-then-update, a third updates, on a 1,000-row table): in one transaction
    it undoes them from the undo log, applies the patch, replays each one (from its
    trace, or by running its mutator where a read changed), rebuilds the undo log and
    stores the cookie. Anchor, in plain sqlite3: BEGIN; undo the same mutations with
    prepared inverse statements; upsert the row; SAVEPOINT; the mutations' own SQL
    statements; RELEASE; COMMIT. (The patched row is one the mutations depend on, so a
    rebase cannot leave them in place: this measures the undo and the replay.)
    """
    return await _rebase_context(100)


@benchmark(bar=max_slowdown(2))
async def client_rebase_1000() -> Context:
    """Rebase 1,000 pending mutations under a one-row pull vs a raw savepoint replay
    (as client_rebase_100, with K = 1,000)."""
    return await _rebase_context(1000)
