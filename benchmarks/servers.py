"""Servers for the benchmarks: uvicorn in a process of its own on 127.0.0.1, stopped by PID.

A benchmark module that serves names itself and a kind:
``ServerProcess("benchmarks.bench_http", "anchor", extra_args)`` runs
``python -m benchmarks.bench_http anchor PORT *extra_args``; the module's ``__main__`` block
calls :func:`serve` with an app. Every server runs with the same settings (:data:`UVICORN`),
so that an anchor and a subject differ only in their app.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.loadgen import Connection, HTTPError

__all__ = ["UVICORN", "ServerProcess", "serve"]

ROOT = Path(__file__).resolve().parents[1]
#: uvicorn's settings for every benchmark server: the pure-Python h11 parser and the
#: default asyncio loop (what `pip install plasma-nb[server]` brings), no access log, and
#: idle keep-alive connections kept for a minute (uvicorn's 5 s would drop the idle side's
#: connections while the other side runs).
UVICORN: dict[str, Any] = {
    "host": "127.0.0.1",
    "http": "h11",
    "loop": "asyncio",
    "log_level": "warning",
    "access_log": False,
    "lifespan": "on",
    "timeout_keep_alive": 60,
}


def serve(app: Any, port: int) -> None:
    """Run ``app`` under uvicorn with :data:`UVICORN` (in the server's process), the
    collector set up as `plasma-nb serve` sets it."""
    import gc

    import uvicorn

    gc.freeze()  # as `plasma-nb serve` does (cli.py), for both sides alike
    uvicorn.run(app, port=port, **UVICORN)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``python -m MODULE KIND PORT ARGS...`` on a free port; ``ready()`` waits for
    ``GET /healthz``; ``stop()`` ends it by its PID."""

    def __init__(self, module: str, kind: str, *args: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        # A file rather than a pipe: a chatty server must never block on a full pipe.
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, kind, str(self.port), *args],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=self.log,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def ready(self, within: float = 60) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.output()[-2000:]}")
            connection = Connection("127.0.0.1", self.port)
            try:
                response = await connection.request("GET", "/healthz")
                if response.status == 200:
                    return
            except (OSError, HTTPError):
                pass
            finally:
                await connection.close()
            await asyncio.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the server on port {self.port} did not answer within {within} s")

    def output(self) -> str:
        """What the server wrote to its stderr so far."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def rss_kib(self) -> int | None:
        """The server's resident memory (Linux), for reports."""
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text(encoding="utf-8")
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
