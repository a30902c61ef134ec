"""Several ``plasma-nb serve`` processes on one Postgres database, and a look into it.

Each instance is a real process on 127.0.0.1 with its own ``application_name``
(``plasma_scale_a``, ...), so a test can find its connections in ``pg_stat_activity``: its
pooled connections carry that name, its LISTEN connection the name plus `` listen``. Output
goes to files (a pipe nobody reads would fill up and stall the server). Every process is
stopped by its PID when the cluster closes, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from tests.server.helpers import free_port, plasma_command, run_env
from tests.server.pg import server_url, with_params

APP = Path(__file__).resolve().parent / "app.py"
GROUPS_PROFILE = "p1"


class Instance:
    """One ``plasma-nb serve tests/scale/app.py`` process."""

    def __init__(self, name: str, db_url: str, logs: Path) -> None:
        self.name = name
        self.application_name = f"plasma_scale_{name}"
        self.db_url = with_params(db_url, application_name=self.application_name)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/sync/ws"
        self.log = logs / f"serve-{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"<Instance {self.name} {self.url}>"

    def command(self) -> list[str]:
        return plasma_command("serve", str(APP), "--db", self.db_url, "--host", "127.0.0.1",
                              "--port", str(self.port), "--log-level", "warning")

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.command(), env=run_env(), stdout=out, stderr=subprocess.STDOUT,
                cwd=self.log.parent,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_ready(self, deadline: float) -> None:
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"instance {self.name} exited with {self.proc.returncode}:"
                                     f"\n{self.output()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.05)
        raise AssertionError(f"instance {self.name} did not answer /healthz:\n{self.output()}")

    def stop(self) -> None:
        """SIGINT (a clean stop), then SIGKILL if it lingers; always by PID, always reaped."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _in_a_thread(coro: Any) -> Any:
    """Run a coroutine to completion on a loop of its own (fixtures may sit inside one)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result(60)


class Cluster:
    """N instances on one fresh Postgres schema (dropped at the end)."""

    def __init__(self, names: Sequence[str], logs: Path, **settings: str) -> None:
        self.base_url = server_url()  # skips, or fails under CI, without a Postgres
        self.namespace = f"plasma_scale_{uuid.uuid4().hex[:12]}"
        # Extra settings (deadlock_timeout=...) reach every connection of every instance.
        self.url = with_params(self.base_url, schema=self.namespace, **settings)
        self.instances = [Instance(name, self.url, logs) for name in names]

    def __iter__(self) -> Iterator[Instance]:
        return iter(self.instances)

    def __getitem__(self, index: int) -> Instance:
        return self.instances[index]

    def start(self) -> None:
        for instance in self.instances:  # together: they take turns creating the tables
            instance.start()
        deadline = time.monotonic() + 60
        for instance in self.instances:
            instance.wait_ready(deadline)

    def close(self) -> None:
        errors = []
        for instance in self.instances:
            try:
                instance.stop()
            except Exception as exc:  # stop the others all the same
                errors.append(exc)
        _in_a_thread(self._drop())
        if errors:
            raise errors[0]

    async def _drop(self) -> None:
        conn = await asyncpg.connect(self.base_url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{self.namespace}" CASCADE')
        finally:
            await conn.close()

    # -- inside the database ---------------------------------------------------------------

    async def operator(self) -> asyncpg.Connection:
        """A connection like ``psql``'s, with the cluster's schema on its search path."""
        return await asyncpg.connect(
            self.base_url, server_settings={"search_path": f'"{self.namespace}"'}
        )

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await self.operator()
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    async def state(self) -> dict[str, dict[str, Any]]:
        """Every row as a pull shows it: ``{"table/key": row}``."""
        state: dict[str, dict[str, Any]] = {}
        for r in await self.fetch("SELECT id, author, n, body FROM notes"):
            state[f"notes/{r['id']}"] = dict(r)
        for r in await self.fetch("SELECT id, n FROM counters"):
            state[f"counters/{r['id']}"] = dict(r)
        return state

    async def listen_pids(self, instance: Instance) -> list[int]:
        rows = await self.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
            f"{instance.application_name} listen",
        )
        return [r["pid"] for r in rows]

    async def waiting_pushes(self, instance: Instance) -> list[int]:
        """The instance's connections waiting for a lock (a push blocked on a row)."""
        rows = await self.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 "
            "AND wait_event_type = 'Lock'",
            instance.application_name,
        )
        return [r["pid"] for r in rows]


def apply_patch(state: dict[str, dict[str, Any]], patch: list[dict[str, Any]]) -> None:
    for op in patch:
        if op["op"] == "clear":
            state.clear()
        elif op["op"] == "put":
            state[op["key"]] = op["value"]
        elif op["op"] == "del":
            state.pop(op["key"], None)
        else:
            raise AssertionError(f"unknown patch op {op!r}")


def push_body(group: str, mutations: list[dict[str, Any]]) -> dict[str, Any]:
    return {"pushVersion": 1, "clientGroupID": group, "profileID": GROUPS_PROFILE,
            "schemaVersion": "1", "mutations": mutations}


def pull_body(group: str, cookie: int | None) -> dict[str, Any]:
    return {"pullVersion": 1, "clientGroupID": group, "cookie": cookie,
            "profileID": GROUPS_PROFILE, "schemaVersion": "1"}


def mutation(client: str, id: int, name: str, /, **args: Any) -> dict[str, Any]:
    return {"clientID": client, "id": id, "name": name, "args": args,
            "timestamp": 1_732_590_000_000 + id}


async def eventually(check: Any, within: float = 10.0, every: float = 0.02) -> Any:
    """Until ``check()`` (sync or async) returns something truthy; return it."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {within} s")
        await asyncio.sleep(every)


async def confirmed(client: Any, handle: Any, within: float = 15.0) -> None:
    """Until the server confirmed ``handle``'s mutation; on a timeout, say what the client saw."""
    try:
        async with asyncio.timeout(within):
            await handle.confirmed
    except TimeoutError:
        raise AssertionError(
            f"{handle!r} not confirmed within {within} s; the client: {client.status()}"
        ) from None
