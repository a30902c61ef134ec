"""Live queries: rows and frames that stay current, subscriptions, SQL text, pending keys,
threads, and changes that arrive from another client with no call from the user."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

import plasma_nb as plasma
from plasma_nb import QueryError, SchemaError, col, select, table
from plasma_nb.client import Client, LiveChange, LiveQuery
from plasma_nb.client.results import RerunResult, SortedResult
from plasma_nb.core.errors import MissingDependency, StorageClosed
from plasma_nb.server import create_app
from tests.client.live_app import items, mutators, notes, schema
from tests.client.one_loop import OneLoopASGI


async def local(**kwargs: Any) -> Client:
    kwargs.setdefault("thread", False)
    kwargs.setdefault("storage", "memory")
    return await plasma.connect(None, schema=schema, mutators=mutators, **kwargs)


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    c = await local()
    for i in range(8):
        c.mutate.put(id=f"i{i}", title=f"t{7 - i}", n=i % 3, done=i % 2 == 0)
    yield c
    await c.close()


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def ids(rows: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in rows]


# -- the interface ----------------------------------------------------------------------------


async def test_a_live_select_reads_now_and_after_each_mutation(client: Client):
    q = select(items).where(items.done == False).order_by(items.title)  # noqa: E712
    live = client.live(q)
    assert isinstance(live, LiveQuery)
    assert live.query is q and live.tables == frozenset({"items"})
    assert live.client is client and live.error is None
    assert live.columns == ["id", "title", "n", "r", "done", "tags", "at"]
    assert live.key_column == "id"
    assert ids(live.rows) == ["i7", "i5", "i3", "i1"] and len(live) == 4
    assert live.version == 0
    client.mutate.put(id="i9", title="a")
    # Current as soon as mutate() returns, before the loop ran again.
    assert ids(live.rows) == ["i9", "i7", "i5", "i3", "i1"] and live.version == 1
    assert live.window(1, 2) == live.rows[1:3]
    assert isinstance(live._result, SortedResult) and live._result.reruns == 0


async def test_rows_are_snapshots(client: Client):
    live = client.live(select(items.id, items.n).order_by(items.id))
    before = live.rows
    assert live.rows is before  # unchanged: the same list
    client.mutate.remove(id="i0")
    after = live.rows
    assert after is not before and ids(before)[0] == "i0" and ids(after)[0] == "i1"
    assert live.key_column == "id"
    assert client.live(select(items.title, items.n)).key_column is None


async def test_subscribers_hear_each_commit_that_changes_the_result(client: Client):
    live = client.live(select(items.id, items.title).where(items.n == 1).order_by(items.id))
    heard: list[LiveChange] = []
    unsubscribe = live.subscribe(heard.append)
    client.mutate.put(id="i1", title="renamed", n=1)  # in the result: changed
    client.mutate.put(id="new", title="x", n=1)  # added
    client.mutate.put(id="i2", title="x", n=2)  # not in the result before or after
    client.mutate.remove(id="i4")  # removed
    assert heard == []  # on the loop's next iteration, not inside mutate()
    await settle()
    assert [(c.version, len(c.added), len(c.removed), len(c.changed)) for c in heard] == [
        (1, 0, 0, 1), (2, 1, 0, 0), (3, 0, 1, 0)]
    assert heard[0].changed == [({"id": "i1", "title": "t6"}, {"id": "i1", "title": "renamed"})]
    assert heard[1].added == [{"id": "new", "title": "x"}]
    assert heard[2].removed == [{"id": "i4", "title": "t3"}]
    unsubscribe()
    unsubscribe()  # idempotent
    client.mutate.remove(id="i1")
    await settle()
    assert len(heard) == 3 and live.version == 4


async def test_a_coroutine_subscriber_and_a_failing_one(client: Client, caplog):
    live = client.live(select(items))
    heard: list[int] = []

    async def slow(change: LiveChange) -> None:
        await asyncio.sleep(0)
        heard.append(change.version)

    def broken(change: LiveChange) -> None:
        raise RuntimeError("boom")

    live.subscribe(broken)
    live.subscribe(slow)
    client.mutate.remove(id="i0")
    await settle()
    assert heard == [1]
    assert "subscriber" in caplog.text and "boom" in caplog.text


async def test_close_stops_refreshing(client: Client):
    with client.live(select(items).order_by(items.id)) as live:
        heard: list[LiveChange] = []
        live.subscribe(heard.append)
        assert len(live) == 8
    assert live.closed
    live.close()  # idempotent
    client.mutate.remove(id="i0")
    await settle()
    assert len(live) == 8 and heard == [] and live.version == 0
    with pytest.raises(StorageClosed, match="closed"):
        live.subscribe(heard.append)


async def test_an_unreferenced_live_query_stops_costing(client: Client):
    live = client.live(select(items))
    live_set = live._set
    assert live_set._by_table["items"]
    del live
    gc.collect()
    assert not live_set._by_table.get("items")
    client.mutate.remove(id="i0")  # nobody to refresh


async def test_bad_arguments(client: Client):
    with pytest.raises(QueryError, match="params= goes with SQL text"):
        client.live(select(items), params={"x": 1})
    with pytest.raises(TypeError, match="live\\(\\) takes select"):
        client.live(42)  # type: ignore[arg-type]
    other = table("other", id=col.id())
    with pytest.raises(SchemaError, match="no table named 'other'"):
        client.live(select(other))
    with pytest.raises(QueryError, match="only reads"):
        client.live("DELETE FROM items")
    with pytest.raises(QueryError, match="distinct names"):
        client.live("SELECT id, id FROM items")
    live = client.live(select(items))
    with pytest.raises(QueryError, match="non-negative integer offset"):
        live.window(-1, 3)
    await client.close()
    with pytest.raises(StorageClosed):
        client.live(select(items))
    assert len(live.rows) == 8  # the last rows stay readable


# -- SQL text -----------------------------------------------------------------------------------


async def test_sql_text_learns_its_tables_and_refreshes(client: Client):
    live = client.live(
        "SELECT i.id, x.body FROM items i JOIN notes x ON x.item = i.id WHERE i.n = :n "
        "ORDER BY x.id", params={"n": 1},
    )
    assert live.tables == frozenset({"items", "notes"})
    assert live.columns == ["id", "body"] and live.rows == [] and live.key_column is None
    heard: list[LiveChange] = []
    live.subscribe(heard.append)
    client.mutate.note(id=1, item="i1", body="hello")
    assert live.rows == [{"id": "i1", "body": "hello"}]
    client.mutate.put(id="i1", title="x", n=2)  # the other table
    assert live.rows == [] and live.version == 2
    client.mutate.put(id="i3", title="unrelated", n=0)  # re-run, same rows: no version
    assert live.version == 2
    await settle()
    assert [(c.added, c.removed) for c in heard] == [
        ([{"id": "i1", "body": "hello"}], []), ([], [{"id": "i1", "body": "hello"}])]
    assert isinstance(live._result, RerunResult)
    assert live.pending_keys == frozenset()
    counted = client.live("SELECT count(*) AS c FROM items")
    assert counted.tables == frozenset({"items"}) and counted.rows == [{"c": 8}]
    client.mutate.remove(id="i0")
    assert counted.rows == [{"c": 7}]
    assert counted.df.equals(pd.DataFrame({"c": [7]}))


async def test_a_failed_refresh_keeps_the_rows_and_says_why(client: Client, monkeypatch, caplog):
    live = client.live("SELECT id FROM items ORDER BY id")
    result = live._result

    def failing(changes):
        raise QueryError("the disk is on fire")

    monkeypatch.setattr(result, "apply", failing)
    client.mutate.remove(id="i0")
    assert len(live.rows) == 8 and live.error == "QueryError: the disk is on fire"
    assert "could not refresh" in caplog.text
    monkeypatch.undo()
    client.mutate.remove(id="i1")
    assert len(live.rows) == 6 and live.error is None


async def test_a_filter_python_does_not_evaluate_is_run_again(client: Client):
    live = client.live(select(items.id).where(items.title > items.n).order_by(items.id))
    assert isinstance(live._result, RerunResult)
    assert len(live) == 8
    client.mutate.put(id="zz", title=None, n=1)
    assert len(live) == 8 and ids(live.rows)[-1] == "i7"
    client.mutate.put(id="zz", title="b", n=1)
    assert ids(live.rows)[-1] == "zz"


# -- frames ---------------------------------------------------------------------------------------


async def test_the_frame_is_cached_per_version_and_patched(client: Client):
    live = client.live(select(items).order_by(items.title))
    df = live.df
    builder = live._builder
    assert builder is not None and builder.builds == 1
    assert live.df is df  # same version, same frame
    dtypes = df.dtypes.astype(str).to_dict()
    assert dtypes == {"id": "str", "title": "str", "n": "Int64", "r": "float64",
                      "done": "bool", "tags": "object", "at": "datetime64[us, UTC]"}

    client.mutate.put(id="i3", title="t4", n=None, r=1.5, done=True, tags=[1, {"a": None}],
                      at="2024-05-06T07:08:09.5Z")
    df2 = live.df
    assert df2 is not df and builder.builds == 1 and builder.patched_rows == 1
    assert df2.dtypes.astype(str).to_dict() == dtypes
    by_id, by_id2 = df.set_index("id"), df2.set_index("id")
    assert by_id.loc["i3", "n"] == 0 and pd.isna(by_id2.loc["i3", "n"])  # the old one is intact
    assert by_id2.loc["i3", "tags"] == [1, {"a": None}]
    assert by_id2.loc["i3", "at"] == pd.Timestamp("2024-05-06T07:08:09.5Z")

    client.mutate.put(id="new", title="a0")  # inserted first: everything shifts
    client.mutate.remove(id="i7")
    df3 = live.df
    assert builder.builds == 1 and builder.patched_rows == 2  # the one inserted row
    expected = pd.DataFrame(live.rows).astype(dtypes)
    pd.testing.assert_frame_equal(df3, expected)

    df3.loc[0, "title"] = "edited by the user"  # copy-on-write: our next patch's base is intact
    client.mutate.put(id="i6", title="t1", n=5)
    pd.testing.assert_frame_equal(live.df, pd.DataFrame(live.rows).astype(dtypes))


async def test_a_frame_that_was_empty_is_patched(client: Client):
    live = client.live(select(notes).order_by(notes.id.desc()))
    empty = live.df
    assert len(empty) == 0 and str(empty["id"].dtype) == "int64"
    client.mutate.note(id=2, item="i1", body="two")
    client.mutate.note(id=1, item="i1", body="one")
    frame = live.df
    assert frame["id"].tolist() == [2, 1] and str(frame["id"].dtype) == "int64"
    assert live._builder is not None and live._builder.builds == 1


async def test_many_versions_unread_rebuild_once(client: Client, monkeypatch):
    from plasma_nb.client import live as live_module

    monkeypatch.setattr(live_module, "MAX_PATCHES", 3)
    live = client.live(select(items.id, items.n).order_by(items.id))
    assert len(live.df) == 8
    for i in range(5):
        client.mutate.put(id=f"i{i}", title="x", n=10 + i)
    frame = live.df
    assert live._builder is not None and live._builder.builds == 2
    assert frame["n"].tolist()[:5] == [10, 11, 12, 13, 14]


async def test_df_without_pandas_names_it(client: Client, monkeypatch):
    live = client.live(select(items))
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(MissingDependency, match="live.df needs pandas.*pip install pandas") as e:
        live.df  # noqa: B018
    assert isinstance(e.value, ImportError) and e.value.name == "pandas"
    assert len(live.rows) == 8  # rows need nothing


# -- pending keys, pulls and rebases ---------------------------------------------------------------


class Server:
    def __init__(self, path: Path) -> None:
        self.app = create_app(schema, mutators, database=f"sqlite:///{path}")
        self.transport: httpx.AsyncBaseTransport = httpx.ASGITransport(self.app)

    async def connect(self, name: str, **kwargs: Any) -> Client:
        kwargs.setdefault("thread", False)
        kwargs.setdefault("pokes", False)
        kwargs.setdefault("pull_interval", 3600)
        kwargs.setdefault("push_delay", 3600)
        return await plasma.connect(
            "http://server", schema=schema, mutators=mutators, name=name, storage="memory",
            transport=self.transport, **kwargs,
        )


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    srv = Server(tmp_path / "server.db")
    yield srv
    await srv.app.state.plasma.close()


async def test_pending_keys_mark_unconfirmed_rows(server: Server):
    a = await server.connect("a")
    try:
        live = a.live(select(items).order_by(items.id))
        heard: list[frozenset[Any]] = []
        changes: list[LiveChange] = []
        stop = live.on_pending(heard.append)
        live.subscribe(changes.append)
        a.mutate.put(id="x", title="one")
        a.mutate.put(id="y", title="two")
        assert live.pending_keys == {"x", "y"}
        await settle()
        assert heard == [{"x", "y"}] and len(changes) == 2  # both commits, one report
        await a.sync()  # confirmed with the same values: the result does not change...
        await settle()
        assert live.pending_keys == frozenset() and len(changes) == 2
        assert heard[-1] == frozenset()  # ...but on_pending hears it
        stop()
        a.mutate.remove(id="x")
        await settle()
        assert live.pending_keys == {"x"} and heard[-1] == frozenset()
    finally:
        await a.close()


async def test_a_rebase_notifies_once_with_the_net_change(server: Server):
    a = await server.connect("a")
    b = await server.connect("b")
    try:
        a.mutate.put(id="x", title="original", n=1)
        await a.sync()
        await b.sync()
        live = b.live(select(items.id, items.title).order_by(items.id))
        heard: list[LiveChange] = []
        live.subscribe(heard.append)
        b.mutate.put(id="x", title="from b", n=1)  # pending in b
        a.mutate.put(id="x", title="from a", n=1)
        a.mutate.put(id="y", title="also from a")
        await a.sync()
        # b pulls a's edits and replays its own on top: x stays "from b" (no flicker),
        # y arrives, in one change.
        await b.sync()
        await a.sync()
        await b.sync()
        await settle()
        assert live.rows == [{"id": "x", "title": "from b"}, {"id": "y", "title": "also from a"}]
        assert [(c.added, c.removed, c.changed) for c in heard] == [
            ([], [], [({"id": "x", "title": "original"}, {"id": "x", "title": "from b"})]),
            ([{"id": "y", "title": "also from a"}], [], []),
        ]
        assert live.pending_keys == frozenset()
        # The server applied b's push after a's: everyone agrees.
        assert await a.query(select(items.id, items.title).order_by(items.id)) == live.rows
    finally:
        await a.close()
        await b.close()


async def test_another_clients_change_arrives_without_a_call(server: Server):
    """Both clients run their engines in threads and sync by themselves (the pull timer
    stands in for pokes here; test_pokes_bring_changes_into_live_queries uses pokes)."""
    # Two engine threads are two loops: the app gets one of its own (one_loop.py).
    server.transport = OneLoopASGI(server.app)
    a = await server.connect("a", thread=True, push_delay=0.01)
    b = await server.connect("b", thread=True, pull_interval=0.05)
    try:
        live = b.live(select(items).order_by(items.id))
        heard = threading.Event()
        live.subscribe(lambda change: heard.set())
        a.mutate.put(id="from-a", title="hello")
        assert await asyncio.to_thread(heard.wait, 10)
        assert ids(live.rows) == ["from-a"] and live.df["title"].tolist() == ["hello"]
    finally:
        await a.close()
        await b.close()
        await server.transport.close_app()


async def test_another_process_on_the_same_file_reaches_live_queries():
    """Two clients on one SQLite file, each with its own connection, stand in for two
    processes (journal.py carries the commits of one to the other)."""
    a = await plasma.connect(schema=schema, mutators=mutators, name="shared", storage="sqlite",
                             thread=False)
    b = await plasma.connect(schema=schema, mutators=mutators, name="shared", storage="sqlite",
                             thread=False)
    try:
        live = b.live(select(items.id, items.title).order_by(items.id))
        lazy = b.live("SELECT count(*) AS c FROM items")
        heard: list[LiveChange] = []
        live.subscribe(heard.append)
        a.mutate.put(id="x", title="from a")
        for _ in range(300):
            if heard:
                break
            await asyncio.sleep(0.01)
        assert live.rows == [{"id": "x", "title": "from a"}]
        assert heard[0].added == [{"id": "x", "title": "from a"}]
        assert lazy.rows == [{"c": 1}]
        live.close()
        lazy.close()
        assert not b._engine.subscribers  # the engine watches for nobody now
    finally:
        await a.close()
        await b.close()


# -- threads -------------------------------------------------------------------------------------


async def test_readers_in_another_thread_see_consistent_snapshots():
    client = await local(thread=True)
    try:
        q = select(items).where(items.done == False).order_by(items.n, items.id)  # noqa: E712
        live = client.live(q)
        errors: list[BaseException] = []
        stop = threading.Event()

        def reader() -> None:
            try:
                while not stop.is_set():
                    rows = live.rows
                    keys = [(r["n"], r["id"]) for r in rows]
                    assert keys == sorted(keys)
                    assert all(r["done"] is False for r in rows)
                    frame = live.df
                    assert list(frame.columns) == live.columns
                    live.window(0, 5)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=reader) for _ in range(2)]
        for t in threads:
            t.start()
        for i in range(300):
            client.mutate.put(id=f"i{i % 40}", title="x", n=i % 7, done=i % 3 == 0)
            if i % 50 == 0:
                await asyncio.sleep(0.001)
        stop.set()
        for t in threads:
            t.join(10)
        assert errors == []
        expected = await client.query(q)
        assert live.rows == expected
        pd.testing.assert_frame_equal(
            live.df, pd.DataFrame(expected).astype(live.df.dtypes.to_dict()))
    finally:
        await client.close()


# -- pokes through a real server ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path, plasma_home: Path) -> Iterator[str]:
    """``plasma-nb serve tests/client/app.py`` on 127.0.0.1; yields its URL."""
    root = Path(__file__).resolve().parents[2]
    port = free_port()
    env = dict(os.environ, PLASMA_NB_HOME=str(plasma_home), PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "plasma_nb", "serve", str(root / "tests/client/app.py"),
         "--db", f"sqlite:///{tmp_path / 'server.db'}", "--port", str(port),
         "--log-level", "warning"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"serve exited: {proc.communicate()[1]}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("serve did not answer /healthz")
            time.sleep(0.05)
        yield url
    finally:
        proc.kill()
        proc.communicate(timeout=10)


@pytest.mark.slow
async def test_pokes_bring_changes_into_live_queries(served: str):
    from tests.client.app import mutators as todo_mutators
    from tests.client.app import schema as todo_schema
    from tests.client.app import todos

    clients: list[Client] = []
    try:
        for name in ("a", "b"):
            clients.append(await plasma.connect(
                served, schema=todo_schema, mutators=todo_mutators, name=name,
                storage="memory", pull_interval=3600))
        a, b = clients
        live = b.live(select(todos.id, todos.title).order_by(todos.id))
        for _ in range(300):
            if b.status().pokes == "connected":
                break
            await asyncio.sleep(0.05)
        assert b.status().pokes == "connected"
        arrived = threading.Event()
        live.subscribe(lambda change: arrived.set())
        a.mutate.add_todo(id="poked", title="via a poke")
        assert await asyncio.to_thread(arrived.wait, 15)
        assert live.rows == [{"id": "poked", "title": "via a poke"}]
        assert live.df["id"].tolist() == ["poked"]
    finally:
        for c in clients:
            await c.close()
