"""Helpers of the notebook tests: a real ``plasma-nb serve``, a recording comm, a fake live
query, and a stand-in for ``client.live`` where the client does not have it yet."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
TODOS = NOTEBOOKS / "todos.py"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Server:
    """``plasma-nb serve SCHEMA`` on 127.0.0.1, stopped by its PID."""

    def __init__(self, schema: Path, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"serve-{self.port}.log"
        self._log = self.log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "plasma_nb", "serve", str(schema), "--db",
             f"sqlite:///{workdir / f'server-{self.port}.db'}", "--host", "127.0.0.1",
             "--port", str(self.port), "--log-level", "warning"],
            cwd=workdir, env=child_env(), stdout=self._log, stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"plasma-nb serve exited:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise AssertionError("plasma-nb serve did not answer /healthz in time")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


# -- a comm that records what a widget sends --------------------------------------------------


class RecordingComm:
    """Stands in for a kernel comm: records the open message and every send."""

    kernel = "recording"

    def __init__(self, **kwargs: Any) -> None:
        self.comm_id = f"comm-{id(self):x}"
        self.opened = kwargs
        self.sent: list[tuple[dict[str, Any], list[Any]]] = []
        self.handlers: list[Callable[[Any], Any]] = []
        self.lock = threading.Lock()

    def open(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_msg(self, callback: Callable[[Any], Any]) -> None:
        self.handlers.append(callback)

    def on_close(self, callback: Callable[[Any], Any]) -> None:
        pass

    def send(self, data: Any = None, metadata: Any = None, buffers: Any = None) -> None:
        with self.lock:
            self.sent.append((data, list(buffers or [])))

    def close(self, *args: Any, **kwargs: Any) -> None:
        pass

    # -- reading what was sent -------------------------------------------------------------

    def updates(self) -> list[dict[str, Any]]:
        with self.lock:
            return [d["state"] for d, _ in self.sent if d.get("method") == "update"]

    def sizes(self) -> list[int]:
        """Bytes of each update message: its JSON plus its binary buffers."""
        with self.lock:
            return [len(json.dumps(d)) + sum(len(bytes(b)) for b in bufs)
                    for d, bufs in self.sent if d.get("method") == "update"]

    def from_browser(self, state: dict[str, Any] | None = None,
                     custom: dict[str, Any] | None = None) -> None:
        """Deliver a message as the browser would send it."""
        if state is not None:
            data = {"method": "update", "state": state, "buffer_paths": []}
        else:
            data = {"method": "custom", "content": custom}
        message = {"content": {"data": data, "comm_id": self.comm_id}, "buffers": []}
        for handler in self.handlers:
            handler(message)


# -- a live query in memory ---------------------------------------------------------------------


class FakeLive:
    """The live-query interface over rows in memory (for widget tests at any size)."""

    def __init__(self, columns: list[str], rows: list[dict[str, Any]], key: str | None = "id"):
        self.query = "fake"
        self.tables = frozenset({"fake"})
        self._columns = columns
        self._rows = rows
        self.version = 1
        self.key_column = key
        self.pending_keys: frozenset[Any] = frozenset()
        self._subscribers: list[Callable[[Any], Any]] = []
        self.window_calls = 0

    @property
    def columns(self) -> list[str]:
        return list(self._columns)

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self._rows

    @property
    def df(self) -> Any:
        import pandas as pd

        return pd.DataFrame.from_records(self._rows, columns=self._columns)

    def __len__(self) -> int:
        return len(self._rows)

    def window(self, offset: int, limit: int) -> list[dict[str, Any]]:
        self.window_calls += 1
        return self._rows[offset:offset + limit]

    def subscribe(self, callback: Callable[[Any], Any]) -> Callable[[], None]:
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    def set(self, rows: list[dict[str, Any]], pending: frozenset[Any] = frozenset()) -> None:
        """A new version: what a commit would do."""
        self._rows = rows
        self.pending_keys = pending
        self.version += 1
        for callback in list(self._subscribers):
            callback({"version": self.version})

    def close(self) -> None:
        self._subscribers.clear()


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what or predicate}")


def run(coro: Any) -> Any:
    """Run a coroutine to its end from synchronous test code (on a fresh loop)."""
    return asyncio.run(coro)


@contextlib.contextmanager
def cwd(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)
