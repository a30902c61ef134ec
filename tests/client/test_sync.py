"""Client and server end to end, in process: the real app through httpx's ASGI transport,
on each server backend (SQLite and Postgres, see server_db.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

import plasma_nb as plasma
from plasma_nb import MutationError, select
from plasma_nb.client import Change, Client
from plasma_nb.server import create_app
from tests.client.app import mutators, schema, todos
from tests.client.server_db import ServerDB


class SwappableASGI(httpx.AsyncBaseTransport):
    """An ASGI transport whose app can be replaced, as a server restart would."""

    def __init__(self, app: Starlette) -> None:
        self.inner = httpx.ASGITransport(app)
        self.down = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        return await self.inner.handle_async_request(request)


class Server:
    def __init__(self, db: ServerDB) -> None:
        self.db = db
        self.apps: list[Starlette] = []
        self.transport = SwappableASGI(self._build())

    def _build(self) -> Starlette:
        app = create_app(schema, mutators, database=self.db.url)
        self.apps.append(app)
        return app

    async def wipe(self) -> None:
        """Lose the database: a new app on a fresh database at the same address."""
        self.transport.down = True  # no request reaches (and reopens) the old app meanwhile
        await self.apps[-1].state.plasma.close()
        await self.db.wipe()
        self.transport.inner = httpx.ASGITransport(self._build())
        self.transport.down = False

    def rows(self) -> dict[str, tuple[Any, ...]]:
        return self.db.rows("SELECT id, title, done FROM todos")

    async def connect(self, name: str, **kwargs: Any) -> Client:
        kwargs.setdefault("storage", "memory")
        kwargs.setdefault("pokes", False)
        return await plasma.connect(
            "http://server", schema=schema, mutators=mutators, name=name, thread=False,
            transport=self.transport, **kwargs,
        )


@pytest.fixture
async def server(server_db: ServerDB) -> AsyncIterator[Server]:
    srv = Server(server_db)
    yield srv
    for app in srv.apps:
        await app.state.plasma.close()


async def eventually(check: Callable[[], Awaitable[bool] | bool], within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def replica_rows(client: Client) -> dict[str, tuple[Any, ...]]:
    rows = await client.query(select(todos.id, todos.title, todos.done))
    return {r["id"]: (r["title"], int(r["done"])) for r in rows}


async def test_two_clients_converge_on_the_servers_tables(server: Server):
    a = await server.connect("a")
    b = await server.connect("b")
    try:
        h = a.mutate.add_todo(id="t1", title="Buy milk")
        await h
        await a.sync()
        assert await h.confirmed is None
        await b.sync()
        assert await replica_rows(b) == {"t1": ("Buy milk", 0)}
        b.mutate.mark_done(id="t1")
        b.mutate.add_todo(id="t2", title="Walk")
        await b.sync()
        await a.sync()
        assert await replica_rows(a) == await replica_rows(b) == server.rows()
        status = a.status()
        assert status.pending == 0 and status.online and status.cookie is not None
        assert status.last_pull is not None and status.last_push is not None
    finally:
        await a.close()
        await b.close()


async def test_the_loop_pushes_and_pulls_without_sync(server: Server):
    a = await server.connect("a", push_delay=0.01)
    b = await server.connect("b", pull_interval=0.05)
    try:
        h = a.mutate.add_todo(id="t1", title="by itself")
        await asyncio.wait_for(h.confirmed, 5)
        await eventually(lambda: "t1" in server.rows())

        async def b_has_it() -> bool:
            return "t1" in await replica_rows(b)

        await eventually(b_has_it)
    finally:
        await a.close()
        await b.close()


async def test_a_conflicting_edit_follows_the_servers_order(server: Server):
    a = await server.connect("a")
    b = await server.connect("b")
    try:
        a.mutate.add_todo(id="t1", title="original")
        await a.sync()
        await b.sync()
        a.offline()
        a.mutate.set_title(id="t1", title="from a")  # queued while offline
        heard_b: list[Change] = []
        b.mutate.set_title(id="t1", title="from b")
        b.subscribe(todos, heard_b.append)
        await b.sync()  # the server applies b's edit first...
        a.online()
        heard_a: list[Change] = []
        a.subscribe(todos, heard_a.append)
        await a.sync()  # ...then a's, which therefore wins
        assert server.rows()["t1"][0] == "from a"
        await asyncio.sleep(0)
        assert heard_a == []  # a already showed its own value: no flicker

        await b.sync()
        await asyncio.sleep(0)
        assert (await replica_rows(b))["t1"] == ("from a", 0)
        [change] = heard_b  # b's own edit confirmed silently; then one net change
        [(before, after)] = change.changed["todos"]
        assert (before["title"], after["title"]) == ("from b", "from a")
    finally:
        await a.close()
        await b.close()


async def test_a_rejected_mutation_reports_the_servers_message(server: Server):
    a = await server.connect("a")
    try:
        h = a.mutate.picky(id="t9", title="dubious")
        later = a.mutate.add_todo(id="t10", title="fine")
        assert "t9" in await replica_rows(a)  # optimistic
        await a.sync()
        with pytest.raises(MutationError, match="the server refuses 'dubious'"):
            await h.confirmed
        assert await later.confirmed is None
        assert await replica_rows(a) == {"t10": ("fine", 0)} == {
            k: (v[0], v[1]) for k, v in server.rows().items()
        }
        assert repr(h).endswith("rejected>")
    finally:
        await a.close()


async def test_a_verdict_that_comes_before_its_handle_still_settles_it(server: Server):
    a = await server.connect("a", push_delay=3600, pull_interval=3600)
    try:
        # In CPython the engine's thread can push, pull and settle an entry between the
        # caller's local commit and the registration of its handle: play that order.
        a._engine.settle([(1, None), (2, "the server refuses it")])
        h1 = a.mutate.add_todo(id="t1", title="one")
        h2 = a.mutate.add_todo(id="t2", title="two")
        assert (h1.seq, h2.seq) == (1, 2)
        assert await asyncio.wait_for(h1.confirmed, 5) is None
        with pytest.raises(MutationError, match="the server refuses it"):
            await asyncio.wait_for(h2.confirmed, 5)
    finally:
        await a.close()


class SlowForBigPushes(httpx.AsyncBaseTransport):
    """The server as a client sees it when pushes of more than ``most`` mutations take
    longer than the client waits: they time out (and, here, never reach the server)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, most: int) -> None:
        self.inner = inner
        self.most = most
        self.pushed: list[int] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/sync/push":
            size = len(json.loads(await request.aread())["mutations"])
            self.pushed.append(size)
            if size > self.most:
                raise httpx.ReadTimeout("timed out", request=request)
        return await self.inner.handle_async_request(request)


async def test_a_push_that_times_out_is_sent_again_in_smaller_pieces(server: Server):
    slow = SlowForBigPushes(server.transport, most=10)
    a = await plasma.connect("http://server", schema=schema, mutators=mutators, name="a",
                             thread=False, storage="memory", pokes=False, transport=slow,
                             push_delay=3600, pull_interval=3600)
    try:
        for i in range(40):
            a.mutate.add_todo(id=f"t{i:02}", title=f"todo {i}")
        for _ in range(2):  # 40, then 20: no answer
            with pytest.raises(plasma.SyncError, match="ReadTimeout"):
                await a.sync()
        await a.sync()  # 10 at a time, until the outbox is through
        assert slow.pushed == [40, 20, 10, 10, 10, 10]
        assert len(server.rows()) == 40 and a.status().pending == 0
        # Then pushes are full size again.
        for i in range(40, 52):
            a.mutate.add_todo(id=f"t{i:02}", title=f"todo {i}")
        with pytest.raises(plasma.SyncError, match="ReadTimeout"):
            await a.sync()
        assert slow.pushed[-1] == 12
    finally:
        await a.close()


async def test_client_state_not_found_starts_a_new_group(server: Server):
    a = await server.connect("a")
    try:
        a.mutate.add_todo(id="t1", title="before the wipe")
        await a.sync()
        old_group = a.status().client_group_id
        a.offline()
        h2 = a.mutate.add_todo(id="t2", title="offline 1")
        h3 = a.mutate.add_todo(id="t3", title="offline 2")
        assert (h2.mutation_id, h3.mutation_id) == (2, 3)
        await server.wipe()
        a.online()
        await a.sync()
        assert await h2.confirmed is None and await h3.confirmed is None
        status = a.status()
        assert status.client_group_id != old_group and status.pending == 0
        # The new server never saw t1: the full pull makes the replica match it.
        assert await replica_rows(a) == {"t2": ("offline 1", 0), "t3": ("offline 2", 0)}
        assert set(server.rows()) == {"t2", "t3"}
    finally:
        await a.close()


async def test_a_pull_for_a_lost_group_recovers_too(server: Server):
    a = await server.connect("a")
    try:
        a.mutate.add_todo(id="t1", title="x")
        await a.sync()
        await server.wipe()
        await a.sync()
        assert await replica_rows(a) == {}
        a.mutate.add_todo(id="t2", title="y")
        await a.sync()
        assert set(server.rows()) == {"t2"}
    finally:
        await a.close()


async def test_the_next_client_pushes_what_an_earlier_one_left(server: Server):
    # A local-only session queues work; a later session with a server pushes it.
    offline = await plasma.connect(schema=schema, mutators=mutators, name="notes",
                                   storage="sqlite", thread=False)
    offline.mutate.add_todo(id="t1", title="written offline")
    await offline.close()
    online = await server.connect("notes", storage="sqlite")
    try:
        await eventually(lambda: "t1" in server.rows())
        await online.sync()
        assert online.status().pending == 0
    finally:
        await online.close()


async def test_a_server_that_is_down_keeps_the_outbox(server: Server):
    a = await server.connect("a")
    try:
        server.transport.down = True
        h = a.mutate.add_todo(id="t1", title="kept")
        with pytest.raises(plasma.SyncError, match="connection refused"):
            await a.sync()
        assert not a.status().online and a.status().pending == 1
        server.transport.down = False
        await a.sync()
        assert await h.confirmed is None and "t1" in server.rows()
    finally:
        await a.close()


async def test_offline_blocks_sync_until_online(server: Server):
    a = await server.connect("a")
    try:
        a.offline()
        await asyncio.sleep(0)
        with pytest.raises(plasma.SyncError, match="offline"):
            await a.sync()
        a.mutate.add_todo(id="t1", title="later")
        await asyncio.sleep(0.1)
        assert "t1" not in server.rows()
        a.online()
        await eventually(lambda: "t1" in server.rows())
    finally:
        await a.close()
