"""A long pull shows where it stands: ``status().pulling`` while the answer downloads, and a
bar drawn by ``%plasma``'s ``watching`` while a sync waits (notebook/progress.py)."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

import plasma_nb as plasma
from plasma_nb.client.httpx_transport import HttpxTransport
from plasma_nb.client.status import PullProgress
from plasma_nb.notebook.progress import watching
from plasma_nb.server import create_app
from tests.client.app import mutators, schema

ROWS = 20_000


class Watched(HttpxTransport):
    """The real transport, noting each progress report and the client's status then."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.client: plasma.Client | None = None
        self.seen: list[tuple[int, int | None, PullProgress | None]] = []

    async def request(self, method: str, path: str, *, json: Any = None,
                      params: Any = None, progress: Any = None) -> Any:
        if progress is None:
            return await super().request(method, path, json=json, params=params)

        def noted(received: int, total: int | None) -> None:
            progress(received, total)
            assert self.client is not None
            self.seen.append((received, total, self.client.status().pulling))

        return await super().request(method, path, json=json, params=params, progress=noted)


def seed(path: Path) -> None:
    with sqlite3.connect(path) as db:  # operator SQL: the triggers log every row
        db.executemany("INSERT INTO todos (id, title, done) VALUES (?, ?, 0)",
                       ((f"t{i:05}", f"todo number {i}") for i in range(ROWS)))


@pytest.fixture
async def empty_server(tmp_path: Path) -> AsyncIterator[tuple[Any, Path]]:
    path = tmp_path / "server.db"
    app = create_app(schema, mutators, database=f"sqlite:///{path}", blobs=None)
    await app.state.plasma.ensure_open()
    yield app, path
    await app.state.plasma.close()


@pytest.fixture
def big_server(empty_server: tuple[Any, Path]) -> Any:
    app, path = empty_server
    seed(path)
    return app


@pytest.fixture
async def served(big_server: Any) -> AsyncIterator[str]:
    """``big_server`` on a real uvicorn on 127.0.0.1: the answer crosses a socket."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)  # connections wait in the backlog until uvicorn accepts them
    server = uvicorn.Server(uvicorn.Config(big_server, log_level="warning", lifespan="off"))
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    await task


async def test_a_pull_reports_its_download_and_clears_when_done(served):
    transport = Watched(served)
    client = await plasma.connect(served, schema=schema, mutators=mutators,
                                  storage="memory", thread=False, pokes=False,
                                  transport=transport, pull_interval=3600)
    transport.client = client
    try:
        await client.sync()
        received = [r for r, _, _ in transport.seen]
        total = transport.seen[-1][1]
        assert total is not None and total > ROWS * 20  # the server sent Content-Length
        assert received[0] == 0 and received[-1] == total
        assert received == sorted(received) and len(received) > 2  # it came in pieces
        # While the answer arrived, status() said so, with the same figures.
        assert [p for _, _, p in transport.seen] == [
            PullProgress("download", r, t) for r, t, _ in transport.seen]
        assert client.status().pulling is None
        assert len(await client.query(plasma.select(schema.tables["todos"]))) == ROWS
    finally:
        await client.close()


async def test_watching_draws_a_bar_while_a_long_sync_waits_and_erases_it(
    empty_server, capsys
):
    app, path = empty_server
    client = await plasma.connect("http://server", schema=schema, mutators=mutators,
                                  storage="memory", thread=True, pokes=False,
                                  transport=httpx.ASGITransport(app), pull_interval=3600)
    try:
        await client.sync()  # the first pull, of nothing, is over
        seed(path)  # now the next pull brings 20,000 rows
        capsys.readouterr()
        # The engine works on its own thread; the bar polls from this loop.
        await watching(client, client.sync(), show_after=0, interval=0.001)
        out = capsys.readouterr().out
        assert "pulling: " in out
        assert out.endswith("\r")  # the line was blanked out at the end
        assert client.status().pulling is None
        # A quick sync (nothing new) draws nothing.
        await watching(client, client.sync())
        assert capsys.readouterr().out == ""
    finally:
        await client.close()


def test_pull_progress_describes_itself():
    assert PullProgress("download", 1_500_000, 6_000_000).describe() == \
        "pulling: 1.5 of 6.0 MB"
    assert PullProgress("download", 1_500_000, 6_000_000).fraction == 0.25
    assert PullProgress("download", 2_000_000, None).describe() == "pulling: 2.0 MB received"
    assert PullProgress("download", 2_000_000, None).fraction is None
    assert PullProgress("apply", 0, 100_000).describe() == "pulling: applying 100,000 changes"
