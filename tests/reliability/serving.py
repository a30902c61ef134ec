"""Servers of the bank schema: a real ``plasma-nb serve`` process that tests kill and start
again at the same address, and the in-process app behind a switch (restarts without a
process: the storage is closed and a new app opens the same database)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import httpx
from starlette.applications import Starlette

import plasma_nb as plasma
from plasma_nb.client import Client
from plasma_nb.server import Limits, create_app
from tests.client.test_sync import SwappableASGI
from tests.reliability import bank
from tests.scale.cluster import Instance
from tests.server.helpers import plasma_command

__all__ = ["BANK", "BankServer", "Restartable"]

BANK = Path(__file__).resolve().parent / "bank.py"


class BankServer(Instance):
    """``plasma-nb serve tests/reliability/bank.py`` on a port of its own, kept across
    restarts; output goes to ``serve-NAME.log`` under ``logs``; on Postgres its
    connections are named ``plasma_scale_NAME`` (cluster.py)."""

    def __init__(self, db_url: str, logs: Path, *extra: str, name: str = "bank") -> None:
        super().__init__(name, db_url, logs)
        if db_url.startswith("sqlite"):
            self.db_url = db_url  # connection names are a Postgres setting
        self.extra = extra

    def command(self) -> list[str]:
        return plasma_command("serve", str(BANK), "--db", self.db_url, "--port", str(self.port),
                              "--log-level", "warning", *self.extra)

    def wait_ready(self, deadline: float | None = None) -> None:
        super().wait_ready(time.monotonic() + 30 if deadline is None else deadline)

    def kill(self) -> None:
        """SIGKILL, by PID: no shutdown code runs."""
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.kill()
            proc.wait(10)

    def errors(self) -> list[str]:
        """Lines of the log that tell of a server error (a traceback or a 500)."""
        return [line for line in self.output().splitlines()
                if "Traceback" in line or "unexpected error" in line or " 500 " in line]


class Restartable(SwappableASGI):
    """The bank app in process, behind httpx's ASGI transport. ``stop()`` refuses new
    connections, lets the requests in flight finish and closes the storage; ``start()``
    opens a new app on the same database. Every answer's status is counted."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.apps: list[Starlette] = []
        self.statuses: Counter[int] = Counter()
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        super().__init__(self._build())

    def _build(self) -> Starlette:
        app = create_app(bank.schema, bank.mutators, database=self.database, blobs=None,
                         limits=Limits(requests_per_second=None))
        self.apps.append(app)
        return app

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self._in_flight += 1
        self._idle.clear()
        try:
            response = await super().handle_async_request(request)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()
        self.statuses[response.status_code] += 1
        return response

    async def stop(self) -> None:
        self.down = True
        await self._idle.wait()
        await self.apps[-1].state.plasma.close()

    def start(self) -> None:
        self.inner = httpx.ASGITransport(self._build())
        self.down = False

    async def close(self) -> None:
        for app in self.apps:
            await app.state.plasma.close()

    async def connect(self, name: str, **options: object) -> Client:
        return await plasma.connect("http://bank", schema=bank.schema, mutators=bank.mutators,
                                    name=name, thread=False, pokes=False, transport=self,
                                    **options)  # type: ignore[arg-type]
