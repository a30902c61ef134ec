"""offline() and online() hold at once, whichever loop the engine runs on."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

import plasma_nb as plasma
from plasma_nb import SyncError
from plasma_nb.client.backoff import SystemClock
from plasma_nb.client.transport import PokesUnavailable, Response, TransportError
from plasma_nb.server import create_app
from tests.client.app import mutators, schema


class FakeServer:
    """A transport that confirms every push at the next pull, and has a poke socket
    that stays open until closed. Works from any loop (the engine thread's too)."""

    def __init__(self) -> None:
        self.last_ids: dict[str, int] = {}
        self.cookie = 1
        self.down = False
        self.pulls = 0
        self.sockets = 0

    async def request(
        self, method: str, path: str, *, json: Any = None, params: Mapping[str, str] | None = None,
        progress: Any = None,
    ) -> Response:
        if self.down:
            raise TransportError("connection refused")
        if path == "/sync/schema":
            return Response(200, {"user": None})
        if path == "/sync/push":
            for m in json["mutations"]:
                self.last_ids[m["clientID"]] = m["id"]
                self.cookie += 1
            return Response(200, {})
        self.pulls += 1
        return Response(200, {"cookie": self.cookie, "lastMutationIDChanges": self.last_ids,
                              "patch": []})

    async def websocket(self, path: str, params: Mapping[str, str]) -> Any:
        if self.down:
            raise TransportError("connection refused")
        self.sockets += 1
        return _Socket()

    async def aclose(self) -> None:
        pass


class _Socket:
    def __init__(self) -> None:
        self._closed = asyncio.Event()

    async def receive(self) -> str:
        await self._closed.wait()
        raise TransportError("the poke socket closed")

    async def close(self) -> None:
        self._closed.set()


async def eventually(check: Any, within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def connect(server: FakeServer, **kwargs: Any) -> plasma.Client:
    kwargs.setdefault("pull_interval", 3600)
    return await plasma.connect("http://fake", schema=schema, mutators=mutators,
                                storage="memory", transport=server, **kwargs)


@pytest.mark.parametrize("thread", [False, True], ids=["inline", "thread"])
async def test_online_then_sync_at_once(thread: bool):
    server = FakeServer()
    client = await connect(server, thread=thread)
    try:
        client.offline()
        status = client.status()
        assert status.offline and not status.online
        with pytest.raises(SyncError, match="offline"):
            await client.sync()
        h = client.mutate.add_todo(id="t1", title="queued offline")
        client.online()
        assert not client.status().offline  # no loop iteration needed
        await client.sync()
        await h.confirmed  # None: the server applied it
        assert client.status().online and client.status().pending == 0
        # offline() and online() back to back, with no loop iteration in between.
        client.offline()
        client.online()
        h2 = client.mutate.add_todo(id="t2", title="x")
        await client.sync()
        await h2.confirmed
        await asyncio.sleep(0.05)
        assert not client.status().offline
    finally:
        await client.close()


@pytest.mark.parametrize("thread", [False, True], ids=["inline", "thread"])
async def test_status_follows_offline_and_online_at_once(thread: bool):
    server = FakeServer()
    client = await connect(server, thread=thread)
    try:
        await eventually(lambda: client.status().pokes == "connected")
        assert client.status().pokes_detail is None
        client.offline()
        status = client.status()
        assert (status.pokes, status.pokes_detail) == ("disconnected", "offline")
        await asyncio.sleep(0.05)
        assert client.status().pokes == "disconnected"
        client.online()
        # The listener waits for online(), not for a timer: it is back well within 1 s.
        await eventually(lambda: client.status().pokes == "connected", within=0.5)
        assert server.sockets == 2
    finally:
        await client.close()


async def test_online_cuts_a_backoff_wait_short():
    class SlowJitter(SystemClock):
        def random(self) -> float:
            return 1.0  # always the ceiling: 0.5, 1, 2, 4, 8 ... seconds

    server = FakeServer()
    server.down = True
    client = await connect(server, thread=False, pokes=False, clock=SlowJitter())
    try:
        client.mutate.add_todo(id="t1", title="waits for the server")
        # Three failures in: the loop now waits 4 s before its next attempt.
        await eventually(lambda: len(client.status().errors) >= 3, within=10)
        server.down = False
        client.offline()
        client.online()
        await eventually(lambda: client.status().pending == 0, within=1.0)
    finally:
        await client.close()


async def test_fetch_transport_without_websocket_has_no_pokes(monkeypatch):
    """CPython stand-ins for Pyodide's modules; the real check runs inside Pyodide
    (tests/pyodide/inside/test_sync.py)."""
    from plasma_nb.client.fetch_transport import FetchTransport

    pyodide = types.ModuleType("pyodide")
    ffi = types.ModuleType("pyodide.ffi")
    ffi.create_proxy = lambda f: f  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "js", types.ModuleType("js"))  # no WebSocket
    monkeypatch.setitem(sys.modules, "pyodide", pyodide)
    monkeypatch.setitem(sys.modules, "pyodide.ffi", ffi)
    transport = FetchTransport("http://127.0.0.1:1")
    with pytest.raises(PokesUnavailable, match=r"no WebSocket \(js.WebSocket\)"):
        await transport.websocket("/sync/ws", {"clientGroupID": "g"})


class Recording(httpx.ASGITransport):
    """The in-process server's transport, noting each request's path."""

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self.paths: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return await super().handle_async_request(request)


async def test_offline_abandons_a_sync_under_way(tmp_path: Path):
    from tests.server import slow_app

    gate = slow_app.GATE = slow_app.Gate()
    app = create_app(slow_app.slow_schema, slow_app.slow_mutators,
                     database=f"sqlite:///{tmp_path / 'server.db'}", blobs=None)
    recording = Recording(app)
    client = await plasma.connect(
        "http://server", schema=slow_app.slow_schema, mutators=slow_app.slow_mutators,
        storage="memory", transport=recording, thread=False, pokes=False, pull_interval=3600)
    try:
        h = client.mutate.slow_add(id="s1", title="held by the server")
        await h  # applied locally with the gate open: the client's run never waits
        gate.armed = True  # the server's run will
        syncing = asyncio.ensure_future(client.sync())
        await asyncio.wait_for(gate.entered.wait(), 5)  # the push is in the server
        sent = len(recording.paths)
        client.offline()
        with pytest.raises(SyncError, match="went offline"):
            await asyncio.wait_for(syncing, 5)
        gate.armed = False
        gate.release.set()
        await asyncio.sleep(0.2)  # the background loop stays quiet too
        assert len(recording.paths) == sent, recording.paths[sent:]  # no pull followed
        assert client.status().pending == 1 and client.status().last_error is None
        client.online()
        await client.sync()
        assert await asyncio.wait_for(h.confirmed, 5) is None
        assert [r["id"] for r in await client.query("SELECT id FROM slow")] == ["s1"]
    finally:
        await client.close()
        await app.state.plasma.close()
    with sqlite3.connect(tmp_path / "server.db") as conn:  # applied once
        assert conn.execute("SELECT count(*) FROM slow").fetchone() == (1,)
        assert conn.execute("SELECT last_mutation_id FROM _plasma_clients").fetchall() == [(1,)]
