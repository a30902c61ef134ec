"""Pokes: tell listening clients over WebSocket that the version advanced.

A poke carries only the new cookie; clients then pull. The hub pokes after
each push that processed something, and waits on the storage for commits made
elsewhere (operator SQL, other server instances), so those reach clients too:
SQLite is polled, Postgres reports its NOTIFYs as they arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ..core.protocol import Poke, dumps
from .storage.base import Storage

__all__ = ["PokeHub"]

logger = logging.getLogger("plasma_nb.server")

POLL_INTERVAL = 0.1


class PokeHub:
    def __init__(self, storage: Storage, *, poll_interval: float = POLL_INTERVAL) -> None:
        self.storage = storage
        self.poll_interval = poll_interval
        self._listeners: dict[str, set[WebSocket]] = {}
        self._last_version: int | None = None
        self._poller: asyncio.Task[None] | None = None
        # The loop keeps only weak references to tasks: hold notify()'s until they end.
        self._checks: set[asyncio.Task[None]] = set()
        self._checking = False
        self._check_again = False

    @property
    def listener_count(self) -> int:
        return sum(len(s) for s in self._listeners.values())

    def start(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        for task in list(self._checks):
            task.cancel()
        for sockets in list(self._listeners.values()):
            for ws in list(sockets):
                with contextlib.suppress(Exception):
                    await ws.close(1001)
        self._listeners.clear()

    def notify(self, version: int | None = None) -> None:
        """The version may have advanced (to ``version``, when the caller knows it, as
        after a push it committed): poke listeners if it did."""
        if not self._listeners:
            return
        task = asyncio.get_running_loop().create_task(self._check_logged(version))
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def _check_logged(self, version: int | None) -> None:
        try:
            await self._check(version)
        except Exception:
            logger.exception("poking after a push failed")

    async def _poll(self) -> None:
        while True:
            try:
                if await self.storage.wait_for_change(self.poll_interval):
                    await self._check()
            except Exception:
                logger.exception("poke poller failed; retrying")
                await asyncio.sleep(self.poll_interval)

    async def _check(self, known: int | None = None) -> None:
        if self._checking:
            self._check_again = True
            return
        self._checking = True
        try:
            while True:
                self._check_again = False
                # A committed version the caller knows spares a round trip to the database.
                version = known if known is not None else await self.storage.version()
                known = None
                if self._last_version is None or version > self._last_version:
                    self._last_version = version
                    await self._broadcast(version)
                if not self._check_again:
                    break
        finally:
            self._checking = False

    async def _broadcast(self, version: int) -> None:
        message = dumps(Poke(version).to_json()).decode()
        for sockets in list(self._listeners.values()):
            for ws in list(sockets):
                try:
                    await ws.send_text(message)
                except Exception:
                    sockets.discard(ws)

    async def serve(self, websocket: WebSocket) -> None:
        group_id = websocket.query_params.get("clientGroupID", "")
        if not group_id:
            await websocket.close(code=1008, reason="clientGroupID is required")
            return
        if websocket.client_state is WebSocketState.CONNECTING:
            # (Already accepted when the token came in the first message.)
            await websocket.accept()
        self.start()
        sockets = self._listeners.setdefault(group_id, set())
        sockets.add(websocket)
        try:
            # The current cookie first, so a client that missed pokes catches up.
            await websocket.send_text(dumps(Poke(await self.storage.version()).to_json()).decode())
            # Whatever the client sends (text or binary) is ignored until it leaves.
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass
        except WebSocketDisconnect:
            pass
        finally:
            sockets.discard(websocket)
            if not sockets:
                self._listeners.pop(group_id, None)
