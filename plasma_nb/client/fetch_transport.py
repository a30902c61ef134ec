"""The Pyodide transport: ``pyodide.http.pyfetch`` for requests, ``js.WebSocket`` for pokes.

Browser networking is asynchronous on the page's loop, so nothing here blocks
or needs threads. Only strings cross into JavaScript: bodies go out as JSON
text and come back as text, decoded with the protocol's strict decoder.

A fetch the browser refuses tells the page nothing but "Failed to fetch": the
server may be down, or it may have answered without allowing the page's origin
(CORS). When the server is on another origin, a ``no-cors`` probe of ``/healthz``
tells the two apart: its answer is opaque, but that it arrives at all shows the
server is up, so the refusal was (most likely) CORS, and ``OriginRefused`` says
which ``--cors-origin`` to start the server with.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Callable, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

from ..core.errors import ProtocolError
from ..core.protocol import dumps, loads_strict
from .transport import (
    OriginRefused,
    PokesUnavailable,
    Progress,
    Response,
    TransportError,
    WebSocketConnection,
    join_url,
    websocket_url,
)

__all__ = ["FetchTransport"]

_CLOSED = object()
#: How long the probe that tells a down server from a CORS refusal may take.
PROBE_TIMEOUT = 5.0
_DEFAULT_PORTS = {"http": 80, "https": 443}


class FetchTransport:
    """``Transport`` over the browser's fetch and WebSocket."""

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self._timeout = timeout

    async def request(
        self, method: str, path: str, *, json: Any = None, params: Mapping[str, str] | None = None,
        progress: Progress | None = None,
    ) -> Response:
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
        answer = await self._fetch(url, self._timeout, **options)
        try:
            text = await (answer.string() if progress is None else _read_text(answer, progress))
        except Exception as exc:  # the connection broke while the body came
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

        if not isinstance(body, bytes):  # fetch takes one buffer (streamed bodies need HTTP/2)
            body = b"".join([chunk async for chunk in body])
        url = join_url(self.url, path)
        headers = {"accept": "application/json", "content-type": "application/octet-stream"}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        # At least 256 KiB/s before giving up on a large body.
        timeout = max(self._timeout, size / (256 * 1024))
        answer = await self._fetch(url, timeout, method="PUT", headers=headers,
                                   body=to_js(body))
        try:
            text = await answer.string()
        except Exception as exc:
            raise TransportError(f"PUT {url}: {exc}") from exc
        return _response(int(answer.status), text, answer.headers)

    async def get_bytes(
        self, path: str, write: Callable[[bytes], object], *,
        started: Callable[[int | None], object] | None = None,
    ) -> Response:
        url = join_url(self.url, path)
        headers = {}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        answer = await self._fetch(url, self._timeout, method="GET", headers=headers)
        try:
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
                opened.set_exception(PokesUnavailable(f"WebSocket {shown} closed at once"
                                                      + self._origin_hint()))
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

    # -- when no answer came --------------------------------------------------------------

    async def _fetch(self, url: str, within: float, **options: Any) -> Any:
        """``pyfetch``, raising the TransportError that says best why no answer came."""
        from pyodide.http import pyfetch

        method = options.setdefault("method", "GET")
        try:
            return await asyncio.wait_for(pyfetch(url, **options), within)
        except TimeoutError as exc:
            raise TransportError(f"{method} {url}: no answer in {within:g} s") from exc
        except Exception as exc:  # a JsException or OSError ("Failed to fetch")
            raise await self._no_answer(f"{method} {url}", exc) from exc

    async def _no_answer(self, what: str, exc: Exception) -> TransportError:
        page, server = page_origin(), origin_of(self.url)
        if page is None or server is None or page == server:
            return TransportError(f"{what}: {exc}")  # no CORS involved: down or unreachable
        if (page.startswith("https:") and server.startswith("http:")
                and not _loopback(server)):
            return TransportError(
                f"{what}: {exc}: this page ({page}) is served over https, and browsers block "
                f"its calls to an http:// server (mixed content): serve {server} over https")
        if await self._answers():
            return OriginRefused(what, server=self.url, page=page)
        return TransportError(f"{what}: {exc}: the server is down or unreachable from here")

    async def _answers(self) -> bool:
        """Whether the server answers a ``no-cors`` GET of ``/healthz`` (any answer)."""
        from pyodide.http import pyfetch

        try:
            await asyncio.wait_for(
                pyfetch(join_url(self.url, "/healthz"), method="GET", mode="no-cors",
                        cache="no-store"),
                PROBE_TIMEOUT)
        except Exception:
            return False
        return True

    def _origin_hint(self) -> str:
        page, server = page_origin(), origin_of(self.url)
        if page is None or server is None or page == server:
            return ""
        return (f" (a server that does not allow this page's origin {page} refuses it: "
                f"start it with --cors-origin {page})")


def page_origin() -> str | None:
    """The origin of the page this kernel runs for (None outside a browser)."""
    import js

    location = getattr(js, "location", None)
    origin = getattr(location, "origin", None) if location is not None else None
    text = str(origin) if origin is not None else ""
    return text if text.startswith(("http://", "https://")) else None


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of ``url`` as browsers write origins (no default port)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def _loopback(origin: str) -> bool:
    # Browsers let an https page call these over http (potentially trustworthy origins).
    host = urlsplit(origin).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.") or host.endswith(
        ".localhost")


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


async def _read_text(answer: Any, progress: Progress) -> str:
    """A fetch answer's body as text, read chunk by chunk so that ``progress`` hears
    how much arrived (the browser gives no other way to watch a download)."""
    length = str(dict(answer.headers).get("content-length", ""))
    total = int(length) if length.isdigit() else None
    stream = answer.js_response.body
    progress(0, total)
    if stream is None:  # an empty body
        return ""
    reader = stream.getReader()
    chunks: list[bytes] = []
    received = 0
    while True:
        step = await reader.read()
        if step.done:
            break
        chunk = step.value.to_bytes()
        chunks.append(chunk)
        received += len(chunk)
        progress(received, total)
    return b"".join(chunks).decode("utf-8")
