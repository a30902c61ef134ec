"""Blobs on the client: ``client.blobs``, the local cache and the durable upload queue.

``await client.blobs.put(path_or_bytes)`` stores the bytes in the local blob cache
(blob_cache.py) and queues their upload in the replica (``_plasma_blob_uploads``,
durable like the outbox: it survives a kernel restart or a page reload), then
returns the sha256 hex to put in a blob column. The sync loop uploads:

- before it pushes a batch of mutations, the queued blobs whose hashes appear in
  their arguments, so the server never sees a row naming a blob it lacks;
- when a push answers 409 (the server lacks a blob a mutation stores, say after
  ``blobs gc``), the blob it names, and then it pushes again;
- after each cycle, whatever else is queued.

An upload asks first whether the server has the blob (``HEAD``), so a blob goes up
once however often it is queued. Failures are recorded on the queue entry
(``client.blobs.status()``) and retried with the sync loop's backoff.

``await client.blobs.get(hash)`` reads the cache, checking the bytes against the
hash; a missing or corrupted entry is downloaded again and checked before it is
cached. Large transfers show a progress bar when ``tqdm`` is installed.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import os
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import PlasmaError, StorageError, SyncError
from ..core.protocol import Mutation
from .blob_cache import BlobCache
from .outcome import call_soon
from .transport import BlobTransport, Response

if TYPE_CHECKING:
    from .client import Client
    from .engine import Engine

__all__ = ["BlobNotFound", "BlobSync", "Blobs", "InvalidHash", "PendingUpload", "blob_path"]

_HASH = re.compile(r"[0-9a-f]{64}\Z")
_HASH_IN_TEXT = re.compile(r"\b[0-9a-f]{64}\b")
#: Transfers at least this large show a progress bar (``progress=None``).
PROGRESS_MIN_BYTES = 8 * 1024 * 1024
#: How often one push may name the same missing blob before the loop gives up.
MAX_MISSING_REPEATS = 2


class BlobNotFound(SyncError, LookupError):
    """Neither the local cache nor the server has the blob (or the client cannot ask)."""

    def __init__(self, hash: str, message: str) -> None:
        self.hash = hash
        super().__init__(message)


class InvalidHash(PlasmaError, ValueError):
    """A blob hash that is not 64 lowercase hex characters."""


@dataclass(frozen=True)
class PendingUpload:
    """A blob waiting in the upload queue: ``client.blobs.status()``."""

    hash: str
    size: int
    added: _dt.datetime
    attempts: int
    error: str | None


def blob_path(hash: str) -> str:
    return f"/sync/blob/{check_hash(hash)}"


def check_hash(hash: object) -> str:
    if not isinstance(hash, str) or not _HASH.match(hash):
        raise InvalidHash(f"a blob hash is 64 lowercase hex characters, got {hash!r}")
    return hash


def _strings(value: Any) -> Iterator[str]:
    """Every string inside a JSON value (mutation arguments)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _progress(total: int | None, desc: str, progress: bool | None) -> Any:
    """A tqdm bar (``tqdm.auto``), or None: when not asked for, when ``progress`` is None
    and the transfer is small, or when tqdm is not installed."""
    if progress is False:
        return None
    if progress is None and (total is None or total < PROGRESS_MIN_BYTES):
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                leave=False)


async def _counted(chunks: AsyncIterator[bytes], bar: Any) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        if bar is not None:
            bar.update(len(chunk))
        yield chunk


class BlobSync:
    """The engine's side of blobs: the queue, uploads and downloads.

    Queue methods work from any thread (they go through the replica's lock);
    transfers run on the engine's loop.
    """

    def __init__(self, engine: Engine, cache: BlobCache) -> None:
        self.engine = engine
        self.cache = cache
        self._uploads: dict[str, asyncio.Future[None]] = {}
        self._downloads: dict[str, asyncio.Future[None]] = {}
        self._missing: dict[str, int] = {}
        #: PUT requests sent (tests count them: a blob goes up once).
        self.puts = 0

    @property
    def transport(self) -> BlobTransport:
        transport = self.engine.transport
        if transport is None or not hasattr(transport, "put_bytes"):
            raise SyncError("this client has no server to transfer blobs with")
        return transport  # type: ignore[return-value]

    # -- the queue (any thread) -----------------------------------------------------------

    def enqueue(self, hash: str, size: int) -> Any:
        """Queue an upload; returns the write, whose ``durable`` resolves once the entry
        is durable."""
        replica = self.engine.replica
        with replica.write() as w:
            w.conn.execute(
                "INSERT INTO _plasma_blob_uploads (hash, size, added, attempts) "
                "VALUES (?, ?, ?, 0) ON CONFLICT (hash) DO NOTHING",
                (hash, size, self.engine.clock.now_ms()),
            )
        return w

    def queued(self) -> dict[str, int]:
        return dict(self.engine.replica.read(
            "SELECT hash, size FROM _plasma_blob_uploads ORDER BY added, hash"))

    def pending(self) -> list[PendingUpload]:
        rows = self.engine.replica.read(
            "SELECT hash, size, added, attempts, error FROM _plasma_blob_uploads "
            "ORDER BY added, hash")
        return [PendingUpload(h, size, _dt.datetime.fromtimestamp(added / 1000, _dt.UTC),
                              attempts, error)
                for h, size, added, attempts, error in rows]

    def _uploaded(self, hash: str) -> None:
        if self.engine.replica.read("SELECT 1 FROM _plasma_blob_uploads WHERE hash = ?",
                                    (hash,)):
            with self.engine.replica.write() as w:
                w.conn.execute("DELETE FROM _plasma_blob_uploads WHERE hash = ?", (hash,))

    def _failed(self, hash: str, exc: BaseException) -> None:
        replica = self.engine.replica
        if not replica.read("SELECT 1 FROM _plasma_blob_uploads WHERE hash = ?", (hash,)):
            return
        with replica.write() as w:
            w.conn.execute(
                "UPDATE _plasma_blob_uploads SET attempts = attempts + 1, error = ? "
                "WHERE hash = ?", (f"{type(exc).__name__}: {exc}", hash))

    # -- the sync loop (engine loop) --------------------------------------------------------

    async def before_push(self, mutations: Sequence[Mutation]) -> None:
        """Upload the queued blobs that these mutations' arguments name."""
        queued = self.queued()
        if not queued:
            return
        named = dict.fromkeys(s for m in mutations for s in _strings(m.args) if s in queued)
        for hash in named:
            await self.upload(hash)

    async def upload_queued(self) -> None:
        """Upload everything still queued (after a successful cycle)."""
        self._missing.clear()
        for hash in self.queued():
            if self.engine.offline:
                return  # offline(): the rest stay queued for the next cycle
            await self.upload(hash)

    async def missing(self, body: Any) -> None:
        """A push answered 409: upload the blob it names (from the cache), so that the
        push can go again; raise when that cannot help."""
        message = body.get("message", "") if isinstance(body, dict) else ""
        hash = body.get("hash") if isinstance(body, dict) else None
        if not isinstance(hash, str) or not _HASH.match(hash):
            found = _HASH_IN_TEXT.search(str(message))
            if found is None:
                raise SyncError(f"POST /sync/push: HTTP 409: {message or body!r}")
            hash = found.group(0)
        count = self._missing[hash] = self._missing.get(hash, 0) + 1
        if count > MAX_MISSING_REPEATS:
            raise SyncError(f"the server keeps answering that it lacks blob {hash}, "
                            "though it was uploaded")
        if not await self.cache.contains(hash):
            raise BlobNotFound(hash, (
                f"the server lacks blob {hash}, which a pending mutation stores, and this "
                "client's blob cache does not have it either: it must be put() again "
                "(by a client that has the bytes) before the mutation can be pushed"))
        # No HEAD first: the server may hold the bytes but have forgotten the blob (gc).
        await self.upload(hash, check=False)

    # -- transfers (engine loop) ------------------------------------------------------------

    async def upload(self, hash: str, *, check: bool = True, progress: bool | None = False
                     ) -> None:
        """Upload one blob from the cache (once at a time per hash); drop it from the
        queue when the server has it."""
        running = self._uploads.get(hash)
        if running is not None:
            await asyncio.shield(running)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._uploads[hash] = future
        try:
            await self._upload(hash, check=check, progress=progress)
        except BaseException as exc:
            self._failed(hash, exc)
            if not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: waiters, if any, get it too
            raise
        else:
            future.set_result(None)
        finally:
            del self._uploads[hash]

    async def _upload(self, hash: str, *, check: bool, progress: bool | None) -> None:
        from .engine import RetryLater

        transport = self.transport
        path = blob_path(hash)
        if check:
            head = await transport.request("HEAD", path)  # type: ignore[attr-defined]
            if head.status == 200:
                self._uploaded(hash)
                return
            if head.status != 404:
                _raise_for(head, "HEAD", path, RetryLater)
        size = await self.cache.size(hash)
        chunks = await self.cache.chunks(hash)
        if size is None or chunks is None:
            raise BlobNotFound(hash, f"blob {hash} is queued for upload but no longer in "
                                     f"the local blob cache ({self.cache.describe()})")
        bar = _progress(size, f"upload {hash[:12]}", progress)
        try:
            self.puts += 1
            answer = await transport.put_bytes(path, _counted(chunks, bar), size=size)
        finally:
            await chunks.aclose()
            if bar is not None:
                bar.close()
        if answer.status in (200, 201):
            self._uploaded(hash)
            return
        body = answer.body if isinstance(answer.body, dict) else {}
        if answer.status == 400 and body.get("error") == "HashMismatch":
            await self.cache.remove(hash)
            raise StorageError(f"the cached bytes of blob {hash} are corrupted (the server "
                               "says they hash to something else); the entry was removed")
        _raise_for(answer, "PUT", path, RetryLater)

    async def download(self, hash: str, *, progress: bool | None = None) -> None:
        """Fetch one blob into the cache, checked against its hash."""
        running = self._downloads.get(hash)
        if running is not None:
            await asyncio.shield(running)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._downloads[hash] = future
        try:
            await self._download(hash, progress)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()
            raise
        else:
            future.set_result(None)
        finally:
            del self._downloads[hash]

    async def _download(self, hash: str, progress: bool | None) -> None:
        from .engine import RetryLater

        path = blob_path(hash)
        writer = self.cache.writer(hash)
        bar: Any = None

        def write(chunk: bytes) -> None:
            nonlocal bar
            writer.write(chunk)
            if bar is not None:
                bar.update(len(chunk))

        def started(size: int | None) -> None:
            nonlocal bar
            bar = _progress(size, f"download {hash[:12]}", progress)

        try:
            answer = await self.transport.get_bytes(path, write, started=started)
        except BaseException:
            await writer.abort()
            raise
        finally:
            if bar is not None:
                bar.close()
        if answer.status != 200:
            await writer.abort()
            if answer.status == 404:
                raise BlobNotFound(hash, f"the server has no blob {hash}")
            _raise_for(answer, "GET", path, RetryLater)
        try:
            await writer.commit()
        except StorageError:
            raise SyncError(f"the bytes the server sent for blob {hash} do not hash to it; "
                            "nothing was cached") from None

    async def close(self) -> None:
        await self.cache.close()


def _raise_for(answer: Response, method: str, path: str, retry: Any) -> None:
    message = f"{method} {path}: HTTP {answer.status}"
    if isinstance(answer.body, dict) and answer.body.get("message"):
        message += f": {answer.body['message']}"
    if answer.status in (408, 429) or answer.status >= 500:
        raise retry(message, answer.status, answer.retry_after)
    raise SyncError(message)


class Blobs:
    """``client.blobs``: content-addressed files, cached locally and synced by the loop."""

    def __init__(self, client: Client, sync: BlobSync) -> None:
        self._client = client
        self._sync = sync

    @property
    def cache(self) -> BlobCache:
        return self._sync.cache

    async def put(self, source: bytes | bytearray | memoryview | str | os.PathLike[str], *,
                  progress: bool | None = None) -> str:
        """Cache the bytes (or the file at a path) and queue their upload; return the
        sha256 hex to store in a blob column. Durable once it returns.

        >>> photo = await client.blobs.put("cat.jpg")
        >>> client.mutate.set_photo(id=todo_id, photo=photo)
        """
        client = self._client
        client._check_open()
        if isinstance(source, bytes | bytearray | memoryview):
            hash, size = await self.cache.add(bytes(source))
        elif isinstance(source, str | os.PathLike):
            hash, size = await self.cache.add_file(source)
        else:
            raise TypeError(f"put() takes bytes or a file path, got {type(source).__name__}")
        write = self._sync.enqueue(hash, size)
        await write.durable
        engine = client._engine
        if engine.transport is not None:
            call_soon(engine.loop, engine.want_push)
        return hash

    async def get(self, hash: str, *, progress: bool | None = None) -> bytes:
        """The blob's bytes: from the local cache if it has them intact, else downloaded,
        checked against the hash and cached. Raises ``BlobNotFound`` when neither has it."""
        check_hash(hash)
        self._client._check_open()
        data = await self.cache.read(hash)
        if data is not None:
            return data
        await self._fetch(hash, progress)
        data = await self.cache.read(hash)
        if data is None:
            raise BlobNotFound(hash, f"blob {hash} vanished from the cache just after its "
                                     "download")
        return data

    async def save(self, hash: str, path: str | os.PathLike[str], *,
                   progress: bool | None = None) -> Path:
        """Write the blob to a file (fetching it as ``get`` does); return the path."""
        check_hash(hash)
        self._client._check_open()
        if not await self.cache.save(hash, path):
            await self._fetch(hash, progress)
            if not await self.cache.save(hash, path):
                raise BlobNotFound(hash, f"blob {hash} vanished from the cache just after "
                                         "its download")
        return Path(path)

    async def _fetch(self, hash: str, progress: bool | None) -> None:
        client = self._client
        engine = client._engine
        if engine.transport is None:
            raise BlobNotFound(hash, f"blob {hash} is not in the local cache, and this client "
                                     "is local only")
        if engine.offline:
            raise BlobNotFound(hash, f"blob {hash} is not in the local cache, and the client "
                                     "is offline: call client.online() first")
        sync = self._sync
        await client._runner.call(lambda: sync.download(hash, progress=progress))

    async def upload(self, *, progress: bool | None = None) -> None:
        """Upload every queued blob now (the sync loop does so on its own)."""
        client = self._client
        client._check_open()
        if client._engine.transport is None:
            raise SyncError("this client is local only (connect() without a URL)")
        sync = self._sync

        async def run() -> None:
            for hash in sync.queued():
                await sync.upload(hash, progress=progress)

        await client._runner.call(run)

    def status(self) -> list[PendingUpload]:
        """The uploads still queued, oldest first, with their sizes and last errors."""
        self._client._check_open()
        return self._sync.pending()

    def __repr__(self) -> str:
        pending = len(self._sync.queued())
        return f"<Blobs cache={self.cache.describe()} pending={pending}>"
