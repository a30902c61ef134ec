"""Real servers on 127.0.0.1 for the browser tests: ``plasma-nb serve`` and a static host."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "notebooks" / "todos.py"
START_TIMEOUT = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_json(url: str, body: Any = None, timeout: float = 10) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    if data is not None:
        req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as answer:
        return json.loads(answer.read() or b"null")


class Process:
    """A child process that answers HTTP on ``url``; :meth:`start` again after :meth:`stop`."""

    def __init__(self, cmd: list[str], url: str, ready_path: str, log: Path, cwd: Path) -> None:
        self.cmd, self.url, self.ready_path, self.log, self.cwd = cmd, url, ready_path, log, cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.cmd, cwd=self.cwd, stdout=out,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.cmd[:4]} exited with {self.proc.returncode}:\n"
                                   f"{self.output()}")
            try:
                urllib.request.urlopen(self.url + self.ready_path, timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{self.cmd[:4]} did not answer:\n{self.output()}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()  # our own child, by its pid
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def plasma_server(tmp: Path, *, site: Path | None = None, cors: Sequence[str] = (),
                  port: int | None = None) -> Process:
    """``plasma-nb serve notebooks/todos.py`` on 127.0.0.1 with its own SQLite file."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "plasma_nb", "serve", str(SCHEMA), "--host", "127.0.0.1",
           "--port", str(port), "--db", f"sqlite:///{tmp / 'sync.db'}", "--log-level", "warning"]
    if site is not None:
        cmd += ["--site", str(site)]
    for origin in cors:
        cmd += ["--cors-origin", origin]
    return Process(cmd, f"http://127.0.0.1:{port}", "/healthz", tmp / "serve.log", tmp)


def static_server(tmp: Path, site: Path, port: int | None = None) -> Process:
    """The site on a plain static host (another origin than the sync server)."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
           "--directory", str(site)]
    return Process(cmd, f"http://127.0.0.1:{port}", "/jupyter-lite.json", tmp / "static.log",
                   tmp)


def server_rows(url: str) -> dict[str, dict[str, Any]]:
    """Every row the server holds, read with a fresh pull (``{key: row}``)."""
    import uuid

    answer = http_json(url + "/sync/pull", {
        "pullVersion": 1, "clientGroupID": f"check-{uuid.uuid4().hex}", "cookie": None,
        "profileID": "check", "schemaVersion": "1"})
    return {op["key"]: op["value"] for op in answer["patch"] if op["op"] == "put"}
