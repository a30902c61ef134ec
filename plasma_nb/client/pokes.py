"""The poke listener: a WebSocket on ``/sync/ws`` that tells the engine when to pull.

Pokes are an optimisation, never a requirement: a server (or transport) without
them answers 404 or refuses the upgrade, the listener says "unavailable" and the
engine keeps pulling on its timer. A dropped socket is reopened with backoff;
each (re)connection asks for a pull, to catch up on pokes missed meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ..core.errors import ProtocolError
from ..core.protocol import Poke, loads_strict
from .backoff import Backoff
from .transport import PokesUnavailable, TransportError, WebSocketConnection

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["PokeListener"]

logger = logging.getLogger("plasma_nb.client")

#: How long to wait before asking again a server that has no poke socket.
UNAVAILABLE_RETRY = 300.0


class PokeListener:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.state = "off"  # "connected", "disconnected", "unavailable" or "off"
        # Why the socket is not connected: the transport's reason or the last failure.
        self.detail: str | None = None
        self.socket: WebSocketConnection | None = None

    async def run(self) -> None:
        engine = self.engine
        assert engine.transport is not None
        backoff = Backoff(base=1.0, cap=60.0, random=engine.clock.random)
        self.state = "disconnected"
        while not engine.closed:
            if engine.offline or engine.halted is not None:
                self.state = "disconnected"
                self.detail = "offline" if engine.offline else f"sync stopped: {engine.halted}"
                await engine.wait_online(within=1.0)
                continue
            group = engine.sync.client_group_id
            try:
                socket = await engine.transport.websocket("/sync/ws", {"clientGroupID": group})
            except PokesUnavailable as exc:
                self.state = "unavailable"
                self.detail = f"{exc}; pulling every {engine.options.pull_interval:g} s instead"
                await asyncio.sleep(UNAVAILABLE_RETRY)
                continue
            except TransportError as exc:
                self.state = "disconnected"
                self.detail = str(exc)
                await engine.clock.sleep(backoff.next_delay())
                continue
            backoff.reset()
            self.state = "connected"
            self.detail = None
            self.socket = socket
            engine.want_pull()  # catch up on what happened while we were not listening
            try:
                await self._receive(socket, group)
            except TransportError as exc:
                self.detail = str(exc)
            finally:
                self.state = "disconnected"
                self.socket = None
                await socket.close()

    async def _receive(self, socket: WebSocketConnection, group: str) -> None:
        engine = self.engine
        # A new client group (after ClientStateNotFound) needs a new socket.
        while not engine.offline and engine.sync.client_group_id == group:
            text = await socket.receive()
            try:
                poke = Poke.from_json(loads_strict(text))
            except ProtocolError:
                logger.debug("ignoring a message on the poke socket: %.80r", text)
                continue
            if poke.cookie != engine.sync.cookie:
                engine.want_pull()
