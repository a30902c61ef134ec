"""An in-process app served on an event loop of its own, for clients on several loops.

``httpx.ASGITransport`` runs the app on the caller's loop. Clients whose engines run on
threads (``thread=True``) each have a loop of their own, and an asyncio app must not be
entered from several loops at once: its locks, events and futures belong to one. This
transport hands every request to the app's own loop, as a real server process would.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx

__all__ = ["OneLoopASGI"]

T = TypeVar("T")


class OneLoopASGI(httpx.AsyncBaseTransport):
    """``app`` on a loop in a thread of its own; ``await close_app()`` when done."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._inner = httpx.ASGITransport(app)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="app-loop",
                                        daemon=True)
        self._thread.start()

    async def _on_app_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()  # the caller's stream, read on the caller's loop
        headers = [(k, v) for k, v in request.headers.raw if k.lower() != b"transfer-encoding"]
        forwarded = httpx.Request(request.method, request.url, headers=headers, content=body)

        async def serve() -> tuple[int, httpx.Headers, bytes]:
            response = await self._inner.handle_async_request(forwarded)
            return response.status_code, response.headers, await response.aread()

        status, response_headers, content = await self._on_app_loop(serve())
        return httpx.Response(status, headers=response_headers, content=content)

    async def close_app(self) -> None:
        """Close the app on its loop, then stop the loop."""
        if self._loop.is_closed():
            return
        await self._on_app_loop(self.app.state.plasma.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        await asyncio.to_thread(self._thread.join, 10)
        self._loop.close()
