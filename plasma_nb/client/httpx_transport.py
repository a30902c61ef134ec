"""The CPython transport: httpx for requests, ``websockets`` for the poke socket.

``HttpxTransport(url, transport=httpx.ASGITransport(app))`` talks to an ASGI app
in-process (tests, notebooks that embed a server); httpx's ASGI transport speaks
only HTTP, so pokes are unavailable there and the engine pulls on a timer.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Mapping
from typing import Any
from urllib.parse import urlencode

import httpx

from ..core.errors import ProtocolError
from ..core.protocol import dumps, loads_strict
from .transport import (
    PokesUnavailable,
    Progress,
    Response,
    TransportError,
    WebSocketConnection,
    websocket_url,
)

__all__ = ["HttpxTransport"]


class HttpxTransport:
    """``Transport`` over httpx; created lazily on the engine's loop."""

    def __init__(
        self, url: str, *, token: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None, timeout: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self._transport = transport
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        # Created on first use, so it belongs to the loop that uses it (the engine's).
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.url, transport=self._transport, timeout=self._timeout
            )
        return self._client

    def _headers(self) -> dict[str, str]:
        headers = {"accept": "application/json"}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        return headers

    async def request(
        self, method: str, path: str, *, json: Any = None, params: Mapping[str, str] | None = None,
        progress: Progress | None = None,
    ) -> Response:
        headers = self._headers()
        content = None
        if json is not None:
            content = dumps(json)
            headers["content-type"] = "application/json"
        try:
            if progress is None:
                answer = await self._http().request(
                    method, path, content=content, params=params, headers=headers
                )
                data = answer.content
            else:
                request = self._http().build_request(
                    method, path, content=content, params=params, headers=headers
                )
                answer = await self._http().send(request, stream=True)
                data = await _read(answer, progress)
        except httpx.HTTPError as exc:
            raise TransportError(f"{method} {self.url}{path}: {type(exc).__name__}: {exc}") from exc
        body = None
        if data:
            try:
                body = loads_strict(data)
            except ProtocolError:
                body = None  # an HTML error page from a proxy, say: the status tells
        return Response(answer.status_code, body, {k.lower(): v for k, v in answer.headers.items()})

    async def put_bytes(
        self, path: str, body: bytes | AsyncIterable[bytes], *, size: int
    ) -> Response:
        headers = {**self._headers(), "content-type": "application/octet-stream",
                   "content-length": str(size)}
        try:
            answer = await self._http().request("PUT", path, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise TransportError(f"PUT {self.url}{path}: {type(exc).__name__}: {exc}") from exc
        return _response(answer.status_code, answer.content, answer.headers)

    async def get_bytes(
        self, path: str, write: Callable[[bytes], object], *,
        started: Callable[[int | None], object] | None = None,
    ) -> Response:
        try:
            async with self._http().stream("GET", path, headers=self._headers()) as answer:
                if 200 <= answer.status_code < 300:
                    if started is not None:
                        length = answer.headers.get("content-length", "")
                        started(int(length) if length.isdigit() else None)
                    async for chunk in answer.aiter_bytes():
                        write(chunk)
                    return _response(answer.status_code, b"", answer.headers)
                content = await answer.aread()
        except httpx.HTTPError as exc:
            raise TransportError(f"GET {self.url}{path}: {type(exc).__name__}: {exc}") from exc
        return _response(answer.status_code, content, answer.headers)

    async def websocket(self, path: str, params: Mapping[str, str]) -> WebSocketConnection:
        if self._transport is not None:
            raise PokesUnavailable("this transport has no WebSocket (in-process ASGI app)")
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus, WebSocketException

        query = dict(params)
        if self.token:
            query["token"] = self.token
        shown = websocket_url(self.url, path)  # in messages: never the token
        url = shown + "?" + urlencode(query)
        try:
            ws = await connect(url, open_timeout=10, max_size=2**20)
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (404, 405, 501):
                raise PokesUnavailable(f"the server has no poke socket ({status})") from exc
            raise TransportError(f"WebSocket {shown}: HTTP {status}") from exc
        except (OSError, WebSocketException, TimeoutError) as exc:
            raise TransportError(f"WebSocket {shown}: {type(exc).__name__}: {exc}") from exc
        return _Socket(ws)

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


def _response(status: int, content: bytes, headers: httpx.Headers) -> Response:
    body = None
    if content:
        try:
            body = loads_strict(content)
        except ProtocolError:
            body = None
    return Response(status, body, {k.lower(): v for k, v in headers.items()})


class _Socket:
    def __init__(self, ws: Any) -> None:
        self._ws = ws

    async def receive(self) -> str:
        from websockets.exceptions import WebSocketException

        try:
            message = await self._ws.recv()
        except (OSError, WebSocketException) as exc:
            raise TransportError(f"the poke socket closed: {exc}") from exc
        return message if isinstance(message, str) else bytes(message).decode("utf-8", "replace")

    async def close(self) -> None:
        await self._ws.close()


async def _read(answer: httpx.Response, progress: Progress) -> bytes:
    """The whole body of a streamed answer, telling ``progress`` as it arrives."""
    length = answer.headers.get("content-length", "")
    total = int(length) if length.isdigit() else None
    chunks: list[bytes] = []
    try:
        progress(0, total)
        async for chunk in answer.aiter_bytes():
            chunks.append(chunk)
            # Content-Length counts the bytes on the wire (compressed, if so).
            progress(answer.num_bytes_downloaded, total)
    finally:
        await answer.aclose()
    return b"".join(chunks)
