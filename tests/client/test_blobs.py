"""``client.blobs`` end to end, in process (the real app through httpx's ASGI transport):
the local cache, the durable upload queue and the sync loop's uploads, downloads that
check the hash, and a corrupted cache entry fetched again."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
from collections import Counter
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

import plasma_nb as plasma
from plasma_nb import select
from plasma_nb.client import Client
from plasma_nb.client.blob_cache import DirectoryBlobCache, MemoryBlobCache
from plasma_nb.client.blobs import BlobNotFound
from plasma_nb.core.errors import StorageError, SyncError
from plasma_nb.server import create_app
from tests import blob_app
from tests.client.one_loop import OneLoopASGI

photos = blob_app.photos


class CountingASGI(httpx.AsyncBaseTransport):
    """The app in process, counting requests by (method, path prefix); can go down."""

    def __init__(self, app: Starlette) -> None:
        self.inner: httpx.ASGITransport | OneLoopASGI = httpx.ASGITransport(app)
        self.count: Counter[tuple[str, str]] = Counter()
        self.down = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        path = request.url.path
        self.count[(request.method, "/sync/blob/" if path.startswith("/sync/blob/") else path)] += 1
        return await self.inner.handle_async_request(request)

    def blob_requests(self, method: str) -> int:
        return self.count[(method, "/sync/blob/")]


@pytest.fixture
async def server(tmp_path: Path):
    app = create_app(blob_app.schema, blob_app.mutators, database=f"sqlite:///{tmp_path}/s.db",
                     blobs=f"file:{tmp_path}/server-blobs")
    yield app
    await app.state.plasma.close()


@pytest.fixture
def transport(server: Starlette) -> CountingASGI:
    return CountingASGI(server)


async def connect(transport: CountingASGI, name: str, **kwargs) -> Client:
    kwargs.setdefault("pokes", False)
    kwargs.setdefault("thread", False)
    return await plasma.connect("http://server", schema=blob_app.schema,
                                mutators=blob_app.mutators, name=name, transport=transport,
                                **kwargs)


def blob(size: int = 50_000, seed: str = "x") -> tuple[str, bytes]:
    data = (hashlib.sha256(seed.encode()).digest() * (size // 32 + 1))[:size]
    return hashlib.sha256(data).hexdigest(), data


async def test_offline_put_and_mutation_upload_once_then_reach_a_second_client(
        transport, tmp_path, plasma_home):
    hash, data = blob()
    a = await connect(transport, "a")
    b = await connect(transport, "b")
    try:
        a.offline()
        assert await a.blobs.put(data) == hash
        assert await a.blobs.put(data) == hash  # queued once
        h = a.mutate.add_photo(id="p1", title="cat", photo=hash)
        await h
        [pending] = a.blobs.status()
        assert (pending.hash, pending.size, pending.attempts, pending.error) == (
            hash, len(data), 0, None)
        assert transport.blob_requests("PUT") == 0
        # The blob is in A's cache, a directory beside its database.
        assert (plasma_home / "a.blobs" / hash).read_bytes() == data

        # B does not see the row before the blob is on the server.
        await b.sync()
        assert await b.query(select(photos)) == []

        a.online()
        await a.sync()
        await h.confirmed
        assert a.blobs.status() == []
        assert transport.blob_requests("PUT") == 1  # uploaded exactly once
        await a.sync()
        await a.blobs.upload()
        assert transport.blob_requests("PUT") == 1

        await b.sync()
        [row] = await b.query(select(photos))
        assert row["photo"] == hash
        gets = transport.blob_requests("GET")
        assert await b.blobs.get(hash) == data
        assert transport.blob_requests("GET") == gets + 1
        assert (plasma_home / "b.blobs" / hash).read_bytes() == data
        assert await b.blobs.get(hash) == data  # from the cache now
        assert transport.blob_requests("GET") == gets + 1
    finally:
        await a.close()
        await b.close()


async def test_a_corrupted_cache_entry_is_detected_and_fetched_again(transport, plasma_home,
                                                                     tmp_path):
    hash, data = blob(200_000)
    a = await connect(transport, "a")
    b = await connect(transport, "b")
    try:
        await a.blobs.put(data)
        await a.sync()
        assert await b.blobs.get(hash) == data
        entry = plasma_home / "b.blobs" / hash
        entry.write_bytes(b"bit rot" + data[7:])
        gets = transport.blob_requests("GET")
        assert await b.blobs.get(hash) == data
        assert transport.blob_requests("GET") == gets + 1
        assert entry.read_bytes() == data
        # save() checks too.
        entry.write_bytes(data[:-1])
        saved = await b.blobs.save(hash, tmp_path / "out.bin")
        assert saved.read_bytes() == data and entry.read_bytes() == data
    finally:
        await a.close()
        await b.close()


async def test_the_memory_backend_caches_in_memory(transport):
    hash, data = blob()
    a = await connect(transport, "a", storage="memory")
    b = await connect(transport, "b", storage="memory")
    try:
        assert isinstance(a.blobs.cache, MemoryBlobCache)
        await a.blobs.put(data)
        await a.sync()
        assert await b.blobs.get(hash) == data
        assert isinstance(b.blobs.cache, MemoryBlobCache)
        b.blobs.cache.entries[hash] = b"corrupted"
        assert await b.blobs.get(hash) == data
    finally:
        await a.close()
        await b.close()


async def test_the_upload_queue_survives_a_restart(transport, plasma_home):
    hash, data = blob()
    a = await connect(transport, "a")
    a.offline()
    await a.blobs.put(data)
    h = a.mutate.add_photo(id="p1", title="cat", photo=hash)
    await h
    await a.close()
    assert transport.blob_requests("PUT") == 0

    again = await connect(transport, "a")
    try:
        assert [p.hash for p in again.blobs.status()] == [hash]
        await again.sync()
        assert again.blobs.status() == [] and again.status().pending == 0
        assert transport.blob_requests("PUT") == 1
    finally:
        await again.close()


async def test_a_put_without_a_mutation_is_uploaded_by_the_loop(transport):
    hash, data = blob()
    a = await connect(transport, "a")
    try:
        await a.blobs.put(data)
        for _ in range(200):  # the sync loop, on its own
            if not a.blobs.status():
                break
            await asyncio.sleep(0.02)
        assert a.blobs.status() == []
        assert transport.blob_requests("PUT") == 1
    finally:
        await a.close()


async def test_failed_uploads_are_listed_with_their_errors_and_retried(transport):
    hash, data = blob()
    a = await connect(transport, "a", max_retry_delay=0.5)
    try:
        await a.sync()
        a.offline()
        await a.blobs.put(data)
        h = a.mutate.add_photo(id="p1", title="cat", photo=hash)
        transport.down = True
        a.online()
        with pytest.raises(SyncError):
            await a.sync()
        [pending] = a.blobs.status()
        assert pending.attempts >= 1
        assert "ConnectError" in (pending.error or "")
        transport.down = False
        await asyncio.wait_for(h.confirmed, 10)  # the loop retries with its backoff
        assert a.blobs.status() == []
    finally:
        await a.close()


async def test_a_409_uploads_the_named_blob_and_pushes_again(transport, server, tmp_path):
    """The server lost a blob it had (gc, say) while a client still had it cached and not
    queued: the push gets 409, the client uploads it from the cache and pushes again."""
    hash, data = blob()
    a = await connect(transport, "a")
    try:
        await a.blobs.put(data)
        await a.sync()
        assert a.blobs.status() == []
        (tmp_path / "server-blobs" / hash).unlink()
        conn = sqlite3.connect(tmp_path / "s.db")
        with conn:
            conn.execute("DELETE FROM _plasma_blobs")
        conn.close()
        h = a.mutate.add_photo(id="p1", title="cat", photo=hash)
        await a.sync()
        await h.confirmed
        assert transport.count[("POST", "/sync/push")] >= 2
        assert (tmp_path / "server-blobs" / hash).read_bytes() == data
    finally:
        await a.close()


async def test_a_409_for_a_blob_nobody_has_is_reported(transport):
    hash, _ = blob(seed="never stored")
    a = await connect(transport, "a")
    try:
        a.mutate.add_photo(id="p1", title="cat", photo=hash)
        with pytest.raises(BlobNotFound, match=f"the server lacks blob {hash}"):
            await a.sync()
        assert a.status().pending == 1
    finally:
        await a.close()


async def test_a_corrupted_entry_is_not_uploaded(transport, plasma_home):
    hash, data = blob()
    a = await connect(transport, "a")
    try:
        a.offline()
        await a.blobs.put(data)
        (plasma_home / "a.blobs" / hash).write_bytes(b"rotten")
        a.online()
        with pytest.raises(StorageError, match="corrupted"):
            await a.blobs.upload()
        [pending] = a.blobs.status()
        assert "corrupted" in (pending.error or "")
        assert not (plasma_home / "a.blobs" / hash).exists()
    finally:
        await a.close()


async def test_get_and_put_refuse_what_they_cannot_do(transport, tmp_path):
    a = await connect(transport, "a")
    local = await plasma.connect(None, schema=blob_app.schema, mutators=blob_app.mutators,
                                 name="local", thread=False)
    try:
        with pytest.raises(ValueError, match="64 lowercase hex characters"):
            await a.blobs.get("ABC")
        missing, _ = blob(seed="nowhere")
        with pytest.raises(BlobNotFound, match="the server has no blob"):
            await a.blobs.get(missing)
        a.offline()
        with pytest.raises(BlobNotFound, match="the client is offline"):
            await a.blobs.get(missing)
        with pytest.raises(TypeError, match="put\\(\\) takes bytes or a file path"):
            await a.blobs.put(42)  # type: ignore[arg-type]
        with pytest.raises(StorageError, match="cannot read"):
            await a.blobs.put(tmp_path / "nope.bin")

        # Local only: the cache works, the queue waits for a server.
        hash, data = blob()
        assert await local.blobs.put(data) == hash
        assert await local.blobs.get(hash) == data
        assert [p.hash for p in local.blobs.status()] == [hash]
        with pytest.raises(BlobNotFound, match="local only"):
            await local.blobs.get(missing)
    finally:
        await a.close()
        await local.close()


async def test_put_a_file_and_save_it_elsewhere_with_a_progress_bar(transport, tmp_path,
                                                                      capsys):
    source = tmp_path / "big.bin"
    data = os.urandom(9 * 1024 * 1024)
    source.write_bytes(data)
    # b's engine thread is a loop of its own: the app gets one too (one_loop.py).
    transport.inner = OneLoopASGI(transport.inner.app)
    a = await connect(transport, "a")
    b = await connect(transport, "b", thread=True)
    try:
        hash = await a.blobs.put(source)
        assert hash == hashlib.sha256(data).hexdigest()
        await a.blobs.upload(progress=True)
        saved = await b.blobs.save(hash, tmp_path / "copy.bin")  # over 8 MiB: a bar
        assert saved.read_bytes() == data
        assert isinstance(b.blobs.cache, DirectoryBlobCache)
    finally:
        await a.close()
        await b.close()
        await transport.inner.close_app()
    err = capsys.readouterr().err
    assert f"upload {hash[:12]}" in err and f"download {hash[:12]}" in err
