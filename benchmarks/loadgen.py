"""A small HTTP/1.1 load generator: N keep-alive connections on raw asyncio streams.

httpx's async client spends more CPU per request than a Starlette endpoint does, so on a
small machine it saturates before the server; this client does the least a client can: it
writes a request with ``Content-Length``, reads the status line and headers, then the body
(``Content-Length`` or chunked). Each connection sends its requests one after another (no
pipelining); ``clients`` connections run at once. Every request's latency is kept.

    generator = LoadGenerator("127.0.0.1", port, clients=16)
    await generator.open()
    run = await generator.run(50, lambda client, n: ("POST", "/echo", b"{}"))
    print(run.requests / run.seconds, run.percentile(0.99))
    await generator.close()
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Connection", "HTTPError", "LoadGenerator", "LoadRun", "Response", "percentile"]

#: What one request is: method, path and body; built by the caller for client i's request n.
RequestFactory = Callable[[int, int], tuple[str, str, bytes]]
MAX_HEADER_BYTES = 64 * 1024


class HTTPError(Exception):
    """A malformed or unexpected answer (the message names what was wrong)."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


class Connection:
    """One keep-alive HTTP/1.1 connection; reopened if the server closes it."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.opened = 0  # how many times a socket was opened (1 when keep-alive held)

    async def open(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(
            self.host, self.port, limit=MAX_HEADER_BYTES)
        self.opened += 1

    async def request(self, method: str, path: str, body: bytes = b"",
                      content_type: str = "application/json") -> Response:
        if (self._writer is None or self._writer.is_closing()
                or (self._reader is not None and self._reader.at_eof())):
            # Never opened, or the server closed it while idle (its keep-alive timeout).
            await self.close()
            await self.open()
        assert self._reader is not None and self._writer is not None
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n")
        self._writer.write(head.encode("latin-1") + body)
        response = await self._read_response()
        if response.headers.get("connection", "").lower() == "close":
            await self.close()
        return response

    async def _read_response(self) -> Response:
        assert self._reader is not None
        try:
            raw = await self._reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            raise HTTPError(f"the server closed the connection ({len(exc.partial)} bytes "
                            "of a response read)") from None
        except asyncio.LimitOverrunError:
            raise HTTPError(f"response headers over {MAX_HEADER_BYTES} bytes") from None
        lines = raw.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise HTTPError(f"expected an HTTP/1.x status line, got {lines[0]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await self._reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self._read_chunked()
        else:
            body = b""
        return Response(int(parts[1]), headers, body)

    async def _read_chunked(self) -> bytes:
        assert self._reader is not None
        chunks: list[bytes] = []
        while True:
            size_line = await self._reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                await self._reader.readuntil(b"\r\n")  # no trailers are sent to us
                return b"".join(chunks)
            chunks.append(await self._reader.readexactly(size))
            await self._reader.readexactly(2)

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass


@dataclass
class LoadRun:
    """One run: its wall time and every request's latency (seconds)."""

    seconds: float
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else float("inf")

    def percentile(self, q: float) -> float:
        return percentile(self.latencies, q)


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile ``q`` (0 to 1) of ``values``."""
    if not values:
        raise ValueError("no values to take a percentile of")
    if not 0 <= q <= 1:
        raise ValueError(f"a percentile is between 0 and 1, got {q!r}")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class LoadGenerator:
    """``clients`` keep-alive connections to one server, kept open across runs."""

    def __init__(self, host: str, port: int, *, clients: int,
                 check: Callable[[Response], None] | None = None) -> None:
        if clients < 1:
            raise ValueError(f"clients must be at least 1, got {clients!r}")
        self.connections = [Connection(host, port) for _ in range(clients)]
        self.check = check or _expect_200

    async def open(self) -> None:
        for connection in self.connections:
            await connection.open()

    async def run(self, per_client: int, make: RequestFactory) -> LoadRun:
        """Every connection sends ``per_client`` requests; returns when all are answered."""
        latencies: list[list[float]] = [[] for _ in self.connections]
        statuses: dict[int, int] = {}

        async def client(i: int, connection: Connection) -> None:
            for n in range(per_client):
                method, path, body = make(i, n)
                start = time.perf_counter()
                response = await connection.request(method, path, body)
                latencies[i].append(time.perf_counter() - start)
                statuses[response.status] = statuses.get(response.status, 0) + 1
                self.check(response)

        start = time.perf_counter()
        await asyncio.gather(*(client(i, c) for i, c in enumerate(self.connections)))
        seconds = time.perf_counter() - start
        return LoadRun(seconds, [t for each in latencies for t in each], statuses)

    async def close(self) -> None:
        for connection in self.connections:
            await connection.close()


def _expect_200(response: Response) -> None:
    if response.status != 200:
        raise HTTPError(f"expected 200, got {response.status}: {response.body[:200]!r}")
