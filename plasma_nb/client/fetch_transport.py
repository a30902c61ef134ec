"""The Pyodide transport: ``pyodide.http.pyfetch`` for requests, ``js.WebSocket`` for pokes.

Browser networking is asynchronous on the page's loop, so nothing here blocks
or needs threads. Only strings cross into JavaScript: bodies go out as JSON
text and come back as text, decoded with the protocol's strict decoder.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from ..core.errors import ProtocolError
from ..core.protocol import dumps, loads_strict
from .transport import (
    PokesUnavailable,
    Response,
    TransportError,
    WebSocketConnection,
    join_url,
    websocket_url,
)

__all__ = ["FetchTransport"]

_CLOSED = object()


class FetchTransport:
    """``Transport`` over the browser's fetch and WebSocket."""

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self._timeout = timeout

    async def request(
        self, method: str, path: str, *, json: Any = None, params: Mapping[str, str] | None = None
    ) -> Response:
        from pyodide.http import pyfetch

        url = join_url(self.url, path)
        if params:
            url += "?" + urlencode(dict(params))
        headers = {"accept": "application/json"}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        options: dict[str, Any] = {"method": method, "headers": headers}
        if json is not None:
            headers["content-type"] = "application/json"
            options["body"] = dumps(json).decode("utf-8")
        try:
            answer = await asyncio.wait_for(pyfetch(url, **options), self._timeout)
            text = await answer.string()
        except Exception as exc:  # a JsException or OSError: no answer arrived
            raise TransportError(f"{method} {url}: {exc}") from exc
        body = None
        if text:
            try:
                body = loads_strict(text)
            except ProtocolError:
                body = None
        headers_in = {str(k).lower(): str(v) for k, v in dict(answer.headers).items()}
        return Response(int(answer.status), body, headers_in)

    async def websocket(self, path: str, params: Mapping[str, str]) -> WebSocketConnection:
        import js
        from pyodide.ffi import create_proxy

        query = dict(params)
        if self.token:
            query["token"] = self.token
        url = websocket_url(self.url, path) + "?" + urlencode(query)
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[None] = loop.create_future()
        queue: asyncio.Queue[object] = asyncio.Queue()

        def on_open(event: Any) -> None:
            if not opened.done():
                opened.set_result(None)

        def on_message(event: Any) -> None:
            queue.put_nowait(str(event.data))

        def on_close(event: Any) -> None:
            if not opened.done():
                # The browser hides the HTTP status of a refused upgrade: treat an
                # immediate close as "no poke socket here" and let the engine poll.
                opened.set_exception(PokesUnavailable(f"WebSocket {url} closed at once"))
            queue.put_nowait(_CLOSED)

        proxies = [create_proxy(f) for f in (on_open, on_message, on_close)]
        try:
            ws = js.WebSocket.new(url)
        except Exception as exc:
            for p in proxies:
                p.destroy()
            raise TransportError(f"WebSocket {url}: {exc}") from exc
        ws.onopen, ws.onmessage, ws.onclose = proxies
        try:
            await asyncio.wait_for(opened, 10)
        except BaseException as exc:
            _dispose(ws, proxies)
            if isinstance(exc, TimeoutError):
                raise TransportError(f"WebSocket {url}: no answer in 10 s") from exc
            raise
        return _BrowserSocket(ws, queue, proxies)

    async def aclose(self) -> None:
        return None


class _BrowserSocket:
    def __init__(self, ws: Any, queue: asyncio.Queue[object], proxies: list[Any]) -> None:
        self._ws = ws
        self._queue = queue
        self._proxies = proxies

    async def receive(self) -> str:
        message = await self._queue.get()
        if message is _CLOSED:
            self._queue.put_nowait(_CLOSED)
            raise TransportError("the poke socket closed")
        return str(message)

    async def close(self) -> None:
        _dispose(self._ws, self._proxies)
        self._proxies = []


def _dispose(ws: Any, proxies: list[Any]) -> None:
    # Detach the handlers before destroying their proxies: a late event must not
    # call into a destroyed proxy.
    ws.onopen = ws.onmessage = ws.onclose = None
    ws.close()
    for p in proxies:
        p.destroy()
