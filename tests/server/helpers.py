"""Helpers of the server tests: wire bodies, a lab schema, peeks into the database and a
real ``plasma-nb serve`` process. The fixtures that use them live in conftest.py."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette

from plasma_nb import MutationError, Mutators, Schema, col, table

ROOT = Path(__file__).resolve().parents[2]
TODOS_FILE = ROOT / "notebooks" / "todos.py"
GROUP = "cg1"
PROFILE = "p1"

# -- a lab schema: mutators that write and then fail ----------------------------------------

notes = table("notes", id=col.id(), body=col.text(), n=col.integer(default=0))
lab_schema = Schema([notes], version="1")
lab_mutators = Mutators(lab_schema)


@lab_mutators.register
async def add_note(tx, *, id: str, body: str):
    await tx.insert(notes).values(id=id, body=body)


@lab_mutators.register
async def add_then_reject(tx, *, id: str, body: str):
    await tx.insert(notes).values(id=id, body=body)
    await tx.update(notes).set(n=99).where(notes.id != id)
    raise MutationError(f"note {id} rejected after writing")


@lab_mutators.register
async def add_then_crash(tx, *, id: str, body: str):
    await tx.insert(notes).values(id=id, body=body)
    await tx.update(notes).set(n=99).where(notes.id != id)
    raise RuntimeError("secret detail: /etc/passwd")


# -- wire bodies ------------------------------------------------------------------------------


def mutation(client_id: str, id: int, name: str, /, **args: Any) -> dict[str, Any]:
    return {"clientID": client_id, "id": id, "name": name, "args": args,
            "timestamp": 1732590000000 + id}


def add(client_id: str, id: int, todo: str, title: str | None = None) -> dict[str, Any]:
    """An ``add_todo`` mutation of the example schema."""
    return mutation(client_id, id, "add_todo", id=todo,
                    title=f"title {todo}" if title is None else title)


def push_body(*mutations: dict[str, Any], group: str = GROUP, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"pushVersion": 1, "clientGroupID": group, "profileID": PROFILE,
                            "schemaVersion": "1", "mutations": list(mutations)}
    body.update(extra)
    return body


def pull_body(cookie: int | None = None, *, group: str = GROUP, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"pullVersion": 1, "clientGroupID": group, "cookie": cookie,
                            "profileID": PROFILE, "schemaVersion": "1"}
    body.update(extra)
    return body


async def push(client: httpx.AsyncClient, *mutations: dict[str, Any], group: str = GROUP,
               status: int = 200, **extra: Any) -> dict[str, Any]:
    """POST /sync/push; assert the status and a JSON answer, return the body."""
    response = await client.post("/sync/push", json=push_body(*mutations, group=group, **extra))
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    result: dict[str, Any] = response.json()
    return result


async def pull(client: httpx.AsyncClient, cookie: int | None = None, *, group: str = GROUP,
               status: int = 200, **extra: Any) -> dict[str, Any]:
    """POST /sync/pull; assert the status and a JSON answer, return the body."""
    response = await client.post("/sync/pull", json=pull_body(cookie, group=group, **extra))
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    result: dict[str, Any] = response.json()
    return result


def puts(patch: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The put operations of a patch, by key."""
    return {op["key"]: op["value"] for op in patch if op["op"] == "put"}


def dels(patch: list[dict[str, Any]]) -> set[str]:
    """The keys of the del operations of a patch."""
    return {op["key"] for op in patch if op["op"] == "del"}


def errors(body: dict[str, Any]) -> list[tuple[str, int, str, str]]:
    """``mutationErrors`` as (clientID, id, name, message) tuples."""
    return [(e["clientID"], e["id"], e["name"], e["message"]) for e in body["mutationErrors"]]


@contextlib.asynccontextmanager
async def http(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process HTTP client of ``app``."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as c:
        yield c


# -- the database, seen from outside ----------------------------------------------------------


@contextlib.contextmanager
def sqlite_connect(path: Path) -> Iterator[sqlite3.Connection]:
    """An operator's connection (the sqlite3 module's defaults), closed at the end."""
    conn = sqlite3.connect(path, timeout=5.0)
    try:
        yield conn
    finally:
        conn.close()


def query(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with sqlite_connect(path) as conn:
        return conn.execute(sql, params).fetchall()


def last_mutation_ids(path: Path) -> dict[str, int]:
    return {cid: last for cid, last in query(path, "SELECT id, last_mutation_id "
                                                   "FROM _plasma_clients")}


def db_version(path: Path) -> int:
    return int(query(path, "SELECT version FROM _plasma_meta")[0][0])


def dump_user_tables(path: Path, *tables: str) -> dict[str, list[tuple[Any, ...]]]:
    return {t: query(path, f'SELECT * FROM "{t}" ORDER BY 1') for t in tables}


# -- a real `plasma-nb serve` -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run_env() -> dict[str, str]:
    """The environment of a child process: this checkout importable, output unbuffered."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def plasma_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "plasma_nb", *args]


class Served:
    """A ``plasma-nb serve`` process on 127.0.0.1."""

    def __init__(self, proc: subprocess.Popen[str], port: int) -> None:
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.stdout = ""
        self.stderr = ""

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.collect()
                raise AssertionError(
                    f"plasma-nb serve exited with {self.proc.returncode}:\n{self.stderr}"
                )
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError("plasma-nb serve did not answer /healthz in time")

    def interrupt(self, timeout: float = 15.0) -> int:
        """Ctrl-C: SIGINT, then wait for the exit; return the exit code."""
        self.proc.send_signal(signal.SIGINT)
        self.collect(timeout)
        return self.proc.returncode

    def collect(self, timeout: float = 15.0) -> None:
        out, err = self.proc.communicate(timeout=timeout)
        self.stdout += out
        self.stderr += err

    def stop(self) -> None:
        """Kill the process (by its PID) if it still runs, and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.collect(5.0)


def dumps(obj: Any) -> bytes:
    """JSON bytes as a client sends them (non-ASCII and lone surrogates escaped)."""
    return json.dumps(obj).encode()
