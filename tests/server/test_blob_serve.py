"""Blobs through a real ``plasma-nb serve`` (uvicorn on 127.0.0.1): a connection dropped in
the middle of an upload leaves no blob, a client whose upload breaks off retries and the
blob arrives whole, and the S3 store behind the server (moto's S3 server mode)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

import plasma_nb as plasma
from tests import blob_app
from tests.server.s3 import CREDENTIALS, moto_server, new_bucket

pytestmark = pytest.mark.slow

BLOB_APP = str(Path(blob_app.__file__))
PUSH = {"pushVersion": 1, "clientGroupID": "g", "profileID": "p", "schemaVersion": "1"}


def files(root: Path) -> list[str]:
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def wait_until(check, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


@pytest.mark.parametrize("size", [300_000, 24 * 1024 * 1024])
def test_a_connection_dropped_mid_upload_leaves_no_blob(serve, tmp_path, size):
    served = serve("--blobs", "file:blobs", schema=BLOB_APP)
    data = os.urandom(size)
    hash = hashlib.sha256(data).hexdigest()
    with socket.create_connection(("127.0.0.1", served.port)) as sock:
        sock.sendall(f"PUT /sync/blob/{hash} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"Content-Length: {size}\r\n\r\n".encode())
        sock.sendall(data[:size // 2])
        time.sleep(0.3)  # let the server stream some of it into the store
    # The server notices the disconnect, aborts the write and removes what it wrote.
    blobs = tmp_path / "blobs"
    wait_until(lambda: files(blobs) == [])
    with httpx.Client(base_url=served.url) as c:
        assert c.get(f"/sync/blob/{hash}").status_code == 404
        assert c.head(f"/sync/blob/{hash}").status_code == 404
        # The push check agrees: the server does not have it.
        refused = c.post("/sync/push", json={**PUSH, "mutations": [
            {"clientID": "c", "id": 1, "name": "add_photo", "timestamp": 1,
             "args": {"id": "p", "title": "t", "photo": hash}}]})
        assert refused.status_code == 409
        # A whole upload afterwards works.
        assert c.put(f"/sync/blob/{hash}", content=data).status_code == 201
        assert c.get(f"/sync/blob/{hash}").content == data
    assert files(blobs) == [hash]
    assert served.interrupt() == 0
    assert "Traceback" not in served.stderr


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 that cuts the first blob upload after half its body and
    passes everything else through."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.cut = 0
        self.uploads = 0

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[CuttingProxy]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def downstream() -> None:
            with contextlib.suppress(ConnectionError):
                while chunk := await up_reader.read(65536):
                    writer.write(chunk)
                    await writer.drain()
            writer.close()

        back = asyncio.ensure_future(downstream())
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                if head.startswith(b"PUT /sync/blob/"):
                    self.uploads += 1
                    if self.cut == 0:
                        self.cut += 1
                        up_writer.write(head + await reader.readexactly(length // 2))
                        await up_writer.drain()
                        await asyncio.sleep(0.2)
                        return  # both connections close: the upload broke off
                up_writer.write(head + await reader.readexactly(length))
                await up_writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client closed (or the test ended): so does the proxy
        finally:
            up_writer.close()
            writer.close()
            back.cancel()
            with contextlib.suppress(BaseException):
                await back


async def test_the_client_retries_a_broken_upload_and_the_blob_arrives_whole(
        serve, tmp_path, monkeypatch):
    monkeypatch.setenv("PLASMA_NB_HOME", str(tmp_path / "home"))
    served = serve("--blobs", "file:blobs", schema=BLOB_APP)
    data = os.urandom(3 * 1024 * 1024)
    async with CuttingProxy(served.port).running() as proxy:
        client = await plasma.connect(
            f"http://127.0.0.1:{proxy.port}", schema=blob_app.schema,
            mutators=blob_app.mutators, name="retry", pokes=False, thread=False,
            storage="memory", max_retry_delay=1.0)
        try:
            client.offline()
            hash = await client.blobs.put(data)
            h = client.mutate.add_photo(id="p1", title="cat", photo=hash)
            client.online()
            await asyncio.wait_for(h.confirmed, 30)
            assert client.blobs.status() == []
            errors = client.status().errors
            assert any(f"/sync/blob/{hash}" in e for e in errors), errors
        finally:
            await client.close()
    assert proxy.cut == 1 and proxy.uploads == 2
    assert files(tmp_path / "blobs") == [hash]
    async with httpx.AsyncClient(base_url=served.url) as c:
        assert (await c.get(f"/sync/blob/{hash}")).content == data
    assert served.interrupt() == 0


async def test_the_server_stores_blobs_in_s3(serve, tmp_path, monkeypatch):
    with moto_server() as endpoint:
        for name, value in CREDENTIALS.items():
            monkeypatch.setenv(name, value)
        bucket = new_bucket(endpoint)
        served = serve("--blobs", f"s3://{bucket}/pfx?endpoint={endpoint}&region=us-east-1",
                       schema=BLOB_APP)
        data = os.urandom(9 * 1024 * 1024)  # uploaded in parts
        hash = hashlib.sha256(data).hexdigest()
        async with httpx.AsyncClient(base_url=served.url) as c:
            assert (await c.put(f"/sync/blob/{hash}", content=data)).status_code == 201
            got = await c.get(f"/sync/blob/{hash}", headers={"range": "bytes=-10"})
            assert got.status_code == 206 and got.content == data[-10:]
            assert (await c.get(f"/sync/blob/{hash}")).content == data
            pushed = await c.post("/sync/push", json={**PUSH, "mutations": [
                {"clientID": "c", "id": 1, "name": "add_photo", "timestamp": 1,
                 "args": {"id": "p", "title": "t", "photo": hash}}]})
            assert pushed.status_code == 200
            listing = (await c.get(f"{endpoint}/{bucket}?list-type=2")).text
        assert f"<Key>pfx/{hash}</Key>" in listing
        assert ".plasma-tmp" not in listing
        assert served.interrupt() == 0
        assert "Traceback" not in served.stderr
