"""A push whose response is really lost: the server commits and answers, but the answer
never reaches the client. The client retries the same push; it applies exactly once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.server.helpers import add, errors, last_mutation_ids, push_body, query


class DroppingProxy:
    """A TCP proxy on 127.0.0.1 that forwards one HTTP request to the server, reads the
    server's whole response, and then closes the client's connection without sending it."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.dropped: list[tuple[bytes, bytes]] = []  # (status line, body) never delivered
        self._server: asyncio.Server | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[DroppingProxy]:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            self._server.close()
            await self._server.wait_closed()

    @staticmethod
    async def _read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        return head, await reader.readexactly(length)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        try:
            head, body = await self._read_message(reader)
            up_writer.write(head + body)
            await up_writer.drain()
            response_head, response_body = await self._read_message(up_reader)
            self.dropped.append((response_head.split(b"\r\n")[0], response_body))
        finally:
            up_writer.close()
            await up_writer.wait_closed()
            writer.close()  # the client never sees the response
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@pytest.mark.slow
async def test_a_push_whose_response_is_lost_is_applied_exactly_once(serve, tmp_path):
    served = serve()
    body = push_body(add("c1", 1, "t1", "Buy milk"), add("c1", 2, "t2", " "),
                     add("c1", 3, "t3", "Walk"))

    async with DroppingProxy(served.port).running() as proxy:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{proxy.port}") as c:
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                await c.post("/sync/push", json=body)

    # The server did commit and answer; the answer was lost on the way back.
    [(status, dropped)] = proxy.dropped
    assert status == b"HTTP/1.1 200 OK"
    assert b'"mutationErrors"' in dropped
    db = tmp_path / "p.db"
    assert query(db, "SELECT id FROM todos ORDER BY id") == [("t1",), ("t3",)]

    # The client retries the same push, with one more mutation queued meanwhile.
    retry = push_body(*body["mutations"], add("c1", 4, "t4", "Read"))
    async with httpx.AsyncClient(base_url=served.url) as c:
        response = await c.post("/sync/push", json=retry)
        assert response.status_code == 200
        assert errors(response.json()) == [("c1", 2, "add_todo", "title must not be empty")]
        again = await c.post("/sync/push", json=retry)
        assert again.json() == response.json()
        pulled = (await c.post("/sync/pull", json={
            "pullVersion": 1, "clientGroupID": "cg1", "cookie": None, "profileID": "p1",
            "schemaVersion": "1"})).json()

    assert query(db, "SELECT id, title FROM todos ORDER BY id") == [
        ("t1", "Buy milk"), ("t3", "Walk"), ("t4", "Read")]
    assert query(db, "SELECT count(*) FROM _plasma_mutation_errors") == [(1,)]
    assert last_mutation_ids(db) == {"c1": 4}
    assert pulled["lastMutationIDChanges"] == {"c1": 4}
    assert served.interrupt() == 0
