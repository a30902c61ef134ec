"""How the engine talks to a server: one small interface, one implementation per platform.

- ``HttpxTransport`` (CPython): httpx for HTTP, ``websockets`` for pokes; pass
  ``transport=httpx.ASGITransport(app)`` to talk to an app in-process (no pokes then).
- ``FetchTransport`` (Pyodide): ``pyodide.http.pyfetch`` and ``js.WebSocket``.

A transport only moves JSON. Deciding what a status means (retry, recover, give
up) is the engine's job; a transport raises ``TransportError`` only when no
answer arrived at all.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncIterable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..core.errors import SyncError

__all__ = [
    "BlobTransport",
    "OriginRefused",
    "PokesUnavailable",
    "Progress",
    "Response",
    "Transport",
    "TransportError",
    "WebSocketConnection",
    "join_url",
    "parse_retry_after",
]


class TransportError(SyncError):
    """No answer from the server: it is unreachable, the connection broke, or timed out."""


class OriginRefused(TransportError):
    """A browser withheld the server's answers from this page: the server answers, but
    (most likely) does not allow the page's origin. Start it with ``--cors-origin``."""

    def __init__(self, what: str, *, server: str, page: str) -> None:
        self.server = server
        self.page = page
        self.advice = (
            f"The server at {server} answers, but the browser withheld its answers from this "
            f"page: most likely the server does not allow this page's origin {page} (CORS). "
            f"Start it with --cors-origin {page}."
        )
        super().__init__(f"{what}: {self.advice}")


class PokesUnavailable(SyncError):
    """This transport or server offers no poke socket (the engine then pulls on a timer)."""


@dataclass(frozen=True)
class Response:
    """An HTTP answer: its status, decoded JSON body (None if empty or not JSON)
    and headers (lower-case names)."""

    status: int
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def retry_after(self) -> float | None:
        return parse_retry_after(self.headers.get("retry-after"))


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class WebSocketConnection(Protocol):
    async def receive(self) -> str:
        """The next text message; raises ``TransportError`` once the socket closed."""

    async def close(self) -> None: ...


#: Called as an answer's body arrives: bytes received so far, and the total when the
#: server said (Content-Length). For progress bars of large pulls.
Progress = Callable[[int, int | None], object]


class Transport(Protocol):
    """What the engine needs from the network."""

    async def request(
        self, method: str, path: str, *, json: Any = None, params: Mapping[str, str] | None = None,
        progress: Progress | None = None,
    ) -> Response:
        """Send one request with a JSON body (if any); raise ``TransportError`` when no
        answer arrived. ``progress``, when given, hears how much of the answer arrived."""

    async def websocket(self, path: str, params: Mapping[str, str]) -> WebSocketConnection:
        """Open a WebSocket; raise ``PokesUnavailable`` if the server or this transport has
        none, ``TransportError`` if it cannot be reached now."""

    async def aclose(self) -> None: ...


class BlobTransport(Protocol):
    """Raw bytes for the blob routes (client/blobs.py); the platform transports have it."""

    async def put_bytes(
        self, path: str, body: bytes | AsyncIterable[bytes], *, size: int
    ) -> Response:
        """PUT ``size`` bytes; the answer's JSON body comes back decoded. Raises
        ``TransportError`` when no answer arrived (the connection broke on the way)."""

    async def get_bytes(
        self, path: str, write: Callable[[bytes], object], *,
        started: Callable[[int | None], object] | None = None,
    ) -> Response:
        """GET raw bytes: a 2xx answer's body goes to ``write`` chunk by chunk (the
        returned body is None), after ``started(content length or None)``; any other
        answer comes back with its JSON body."""


def join_url(base: str, path: str) -> str:
    return base.rstrip("/") + "/" + path.lstrip("/")


def websocket_url(base: str, path: str) -> str:
    url = join_url(base, path)
    if url.startswith("https://"):
        return "wss://" + url[len("https://"):]
    if url.startswith("http://"):
        return "ws://" + url[len("http://"):]
    return url


def default_transport(url: str, *, token: str | None) -> Transport:
    """The platform's transport for ``url``."""
    import sys

    if sys.platform == "emscripten":
        from .fetch_transport import FetchTransport

        return FetchTransport(url, token=token)
    from .httpx_transport import HttpxTransport

    return HttpxTransport(url, token=token)
