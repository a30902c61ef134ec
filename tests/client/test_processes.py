"""The client against real processes: ``plasma-nb serve`` on 127.0.0.1, client processes
killed with SIGKILL, two processes on one local database, pokes over a real WebSocket; the
server on each backend (SQLite and Postgres, see server_db.py)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import plasma_nb as plasma
from plasma_nb import select
from plasma_nb.client import Change, Client
from tests.client.app import counters, mutators, schema, todos
from tests.client.server_db import ServerDB

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "tests" / "client" / "app.py"
CHILD = ROOT / "tests" / "client" / "child.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env["PLASMA_NB_HOME"] = str(home)
    return env


def spawn_child(home: Path, *args: str, stdin: int | None = None) -> subprocess.Popen[str]:
    """A client process running tests/client/child.py."""
    return subprocess.Popen(
        [sys.executable, str(CHILD), *args], env=child_env(home), stdin=stdin,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


class ServeProcess:
    """``plasma-nb serve tests/client/app.py`` on a fixed port, restartable."""

    def __init__(self, db: ServerDB, home: Path) -> None:
        self.db = db
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "plasma_nb", "serve", str(APP), "--db",
             self.db.url, "--port", str(self.port), "--log-level", "warning"],
            env=child_env(self.home), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited: {self.proc.communicate()[1]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError("serve did not answer /healthz")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.communicate(timeout=10)
        self.proc = None

    def rows(self, sql: str = "SELECT id, title, done FROM todos") -> dict[Any, tuple[Any, ...]]:
        return self.db.rows(sql)


@pytest.fixture
def served(server_db: ServerDB, plasma_home: Path) -> Iterator[ServeProcess]:
    server = ServeProcess(server_db, plasma_home)
    server.start()
    yield server
    server.kill()


@pytest.fixture
async def connect(served: ServeProcess) -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    clients: list[Client] = []

    async def make(name: str, **kwargs: Any) -> Client:
        kwargs.setdefault("storage", "sqlite")
        client = await plasma.connect(served.url, schema=schema, mutators=mutators,
                                      name=name, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def eventually(check: Callable[[], Any], within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def replica(client: Client) -> dict[Any, tuple[Any, ...]]:
    rows = await client.query(select(todos.id, todos.title, todos.done))
    return {r["id"]: (r["title"], int(r["done"])) for r in rows}


async def test_offline_and_online_clients_converge_with_a_real_server(served, connect):
    a = await connect("a")
    b = await connect("b")
    a.offline()
    for i in range(5):
        a.mutate.add_todo(id=f"a{i}", title=f"offline {i}")
        b.mutate.add_todo(id=f"b{i}", title=f"online {i}")
    b.mutate.mark_done(id="b0")
    await b.sync()
    assert "a0" not in served.rows()
    a.online()
    await a.sync()
    await b.sync()
    assert await replica(a) == await replica(b) == served.rows()
    assert len(served.rows()) == 10


async def test_a_poke_brings_a_change_without_sync(served, connect):
    a = await connect("a", pull_interval=3600)
    b = await connect("b", pull_interval=3600)
    await eventually(lambda: b.status().pokes == "connected")
    a.mutate.add_todo(id="poked", title="via a poke")

    async def b_sees_it() -> bool:
        return "poked" in await replica(b)

    await eventually(b_sees_it, within=10)


async def test_nothing_is_lost_while_the_server_restarts(served, connect):
    a = await connect("a", max_retry_delay=1.0)
    handles = []
    for i in range(30):
        if i == 10:
            served.kill()
        if i == 20:
            served.start()
        handles.append(a.mutate.bump(id="c"))
        await asyncio.sleep(0.05)
    for h in handles:
        await asyncio.wait_for(h.confirmed, 30)
    assert served.rows("SELECT id, n FROM counters") == {"c": (30,)}
    assert a.status().pending == 0 and any("TransportError" in e for e in a.status().errors)


async def test_a_sigkilled_clients_mutation_is_pushed_by_the_next_process(
    served, connect, plasma_home
):
    child = spawn_child(plasma_home, "durable", served.url, "notes")
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 30)
        assert line.strip() == "durable", child.stderr.read() if child.stderr else ""
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate(timeout=10)
    assert "notes-killed" not in served.rows()
    successor = await connect("notes")
    await eventually(lambda: "notes-killed" in served.rows())
    await successor.sync()
    assert successor.status().pending == 0
    assert "notes-killed" in await replica(successor)


async def test_two_processes_share_one_local_database(served, plasma_home):
    procs = [
        spawn_child(plasma_home, "work", served.url, "shared", prefix, "15")
        for prefix in ("p", "q")
    ]
    results = []
    for proc in procs:
        out, err = await asyncio.to_thread(proc.communicate, timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert [r["confirmed"] for r in results] == [30, 30]
    assert results[0]["client_id"] != results[1]["client_id"]
    rows = served.rows()
    assert {f"{p}-{i}" for p in "pq" for i in range(15)} == set(rows)
    # 30 bumps from two processes on one replica: none lost, none applied twice.
    assert served.rows("SELECT id, n FROM counters") == {"shared": (30,)}
    client = await plasma.connect(served.url, schema=schema, mutators=mutators,
                                  name="shared", storage="sqlite")
    try:
        await client.sync()
        assert client.status().pending == 0
        assert await client.query(select(counters)) == [{"id": "shared", "n": 30}]
    finally:
        await client.close()


async def test_another_processs_commits_reach_this_ones_subscribers(served, plasma_home):
    """Process A mutates and rebases; process B (this one, local only, on the same
    file) hears each net change through the journal, without syncing itself."""
    b = await plasma.connect(schema=schema, mutators=mutators, name="shared", storage="sqlite")
    calls: list[Change] = []
    b.subscribe(todos, calls.append)  # called in b's engine thread
    a = spawn_child(plasma_home, "commands", served.url, "shared", stdin=subprocess.PIPE)

    async def send(command: dict[str, Any]) -> None:
        assert a.stdin is not None and a.stdout is not None
        a.stdin.write(json.dumps(command) + "\n")
        a.stdin.flush()
        line = await asyncio.wait_for(asyncio.to_thread(a.stdout.readline), 30)
        assert line.strip() == "ok", a.stderr.read() if a.stderr else ""

    def row(id: str, title: str, done: bool = False) -> dict[str, Any]:
        return {"id": id, "title": title, "done": done, "owner": None, "score": None,
                "tags": None}

    try:
        await send({"mutate": "add_todo", "args": {"id": "from-a", "title": "by A"}})
        await eventually(lambda: len(calls) == 1)
        assert calls[0] == Change(added={"todos": [row("from-a", "by A")]})
        # An operator writes on the server; A's pull brings it in a rebase that also
        # confirms A's own pending row (which does not change).
        served.db.execute("INSERT INTO todos (id, title, done) VALUES ('srv', 'by SQL', false)")
        await send({"sync": True})
        await eventually(lambda: len(calls) == 2)
        assert calls[1] == Change(added={"todos": [row("srv", "by SQL")]})
        await send({"mutate": "mark_done", "args": {"id": "srv"}})
        await eventually(lambda: len(calls) == 3)
        assert calls[2] == Change(changed={"todos": [(row("srv", "by SQL"),
                                                      row("srv", "by SQL", True))]})
        # A's loop pushes mark_done and pulls: that rebase changes nothing visible.
        await eventually(lambda: b.status().pending == 0)
        await asyncio.sleep(0.3)
        assert len(calls) == 3
    finally:
        # End of input: A closes its client and exits.
        _, errors = await asyncio.to_thread(a.communicate, timeout=30)
        await b.close()
    assert a.returncode == 0, errors
