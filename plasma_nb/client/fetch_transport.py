"""The Pyodide transport: ``pyodide.http.pyfetch`` for requests, ``js.WebSocket`` for pokes.

Browser networking is asynchronous on the page's loop, so nothing here blocks
or needs threads. Only strings cross into JavaScript: bodies go out as JSON
text and come back as text, decoded with the protocol's strict decoder.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Callable, Mapping
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

    async def put_bytes(
        self, path: str, body: bytes | AsyncIterable[bytes], *, size: int
    ) -> Response:
        from pyodide.ffi import to_js
        from pyodide.http import pyfetch

        if not isinstance(body, bytes):  # fetch takes one buffer (streamed bodies need HTTP/2)
            body = b"".join([chunk async for chunk in body])
        url = join_url(self.url, path)
        headers = {"accept": "application/json", "content-type": "application/octet-stream"}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        # At least 256 KiB/s before giving up on a large body.
        timeout = max(self._timeout, size / (256 * 1024))
        try:
            answer = await asyncio.wait_for(
                pyfetch(url, method="PUT", headers=headers, body=to_js(body)), timeout)
            text = await answer.string()
        except Exception as exc:
            raise TransportError(f"PUT {url}: {exc}") from exc
        return _response(int(answer.status), text, answer.headers)

    async def get_bytes(
        self, path: str, write: Callable[[bytes], object], *,
        started: Callable[[int | None], object] | None = None,
    ) -> Response:
        from pyodide.http import pyfetch

        url = join_url(self.url, path)
        headers = {}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        try:
            answer = await asyncio.wait_for(pyfetch(url, method="GET", headers=headers),
                                            self._timeout)
            status = int(answer.status)
            if 200 <= status < 300:
                data = bytes(await answer.bytes())
                if started is not None:
                    started(len(data))
                write(data)
                return _response(status, "", answer.headers)
            text = await answer.string()
        except Exception as exc:
            raise TransportError(f"GET {url}: {exc}") from exc
        return _response(status, text, answer.headers)

    async def websocket(self, path: str, params: Mapping[str, str]) -> WebSocketConnection:
        import js
        from pyodide.ffi import create_proxy

        websocket = getattr(js, "WebSocket", None)
        if websocket is None:
            # Node before 22 without --experimental-websocket, some workers: no global
            # WebSocket. Not a failure to retry: this runtime cannot listen, so poll.
            raise PokesUnavailable("this JavaScript runtime has no WebSocket (js.WebSocket)")
        query = dict(params)
        if self.token:
            query["token"] = self.token
        shown = websocket_url(self.url, path)  # in messages: never the token
        url = shown + "?" + urlencode(query)
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
                opened.set_exception(PokesUnavailable(f"WebSocket {shown} closed at once"))
            queue.put_nowait(_CLOSED)

        proxies = [create_proxy(f) for f in (on_open, on_message, on_close)]
        try:
            ws = websocket.new(url)
        except Exception as exc:
            for p in proxies:
                p.destroy()
            raise TransportError(f"WebSocket {shown}: {exc}") from exc
        ws.onopen, ws.onmessage, ws.onclose = proxies
        try:
            await asyncio.wait_for(opened, 10)
        except BaseException as exc:
            _dispose(ws, proxies)
            if isinstance(exc, TimeoutError):
                raise TransportError(f"WebSocket {shown}: no answer in 10 s") from exc
            raise
        return _BrowserSocket(ws, queue, proxies)

    async def aclose(self) -> None:
        return None


def _response(status: int, text: str, headers: Any) -> Response:
    body = None
    if text:
        try:
            body = loads_strict(text)
        except ProtocolError:
            body = None
    return Response(status, body, {str(k).lower(): str(v) for k, v in dict(headers).items()})


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
