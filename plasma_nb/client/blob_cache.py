"""The local blob cache: blob bytes by their sha256, next to the replica.

One cache per local database, chosen by its storage backend:

- SQLite file (CPython): a directory beside the file, ``~/.plasma_nb/<name>.blobs/``,
  one file per blob named by its hash; writes go to a temporary file that is
  renamed into place once complete, so several processes can share it;
- memory: a dict, gone with the client;
- IndexedDB (Pyodide): an IndexedDB database of its own (blob_cache_idb.py).

Every read checks the bytes against their hash: a corrupted entry (a disk error,
someone editing the file) is removed and reported as absent, so the client
fetches the blob again rather than handing out wrong bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import sys
import uuid
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from ..core.errors import StorageError

if TYPE_CHECKING:
    from .storage.base import Storage

__all__ = ["CHUNK", "BlobCache", "BlobWriter", "DirectoryBlobCache", "MemoryBlobCache",
           "make_blob_cache"]

#: Files are read and written in chunks of this size.
CHUNK = 1024 * 1024

T = TypeVar("T")


class BlobWriter:
    """Bytes of one blob arriving in pieces; ``commit()`` checks the hash and makes
    the entry visible, ``abort()`` drops it."""

    def __init__(self, hash: str | None) -> None:
        self.hash = hash or ""  # unknown (""): the bytes name themselves at commit
        self.size = 0
        self._digest = hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        self._digest.update(chunk)
        self.size += len(chunk)
        self._write(chunk)

    def _write(self, chunk: bytes) -> None:
        raise NotImplementedError

    def verified(self) -> bool:
        if not self.hash:
            self.hash = self._digest.hexdigest()
        return self._digest.hexdigest() == self.hash

    async def commit(self) -> None:
        """Keep the bytes; raises ``StorageError`` (and keeps nothing) when they do not
        hash to ``hash``."""
        raise NotImplementedError

    async def abort(self) -> None:
        raise NotImplementedError


class BlobCache:
    """The contract of a blob cache. Entries are immutable: a hash names its bytes."""

    kind = "abstract"

    async def contains(self, hash: str) -> bool:
        raise NotImplementedError

    async def add(self, data: bytes) -> tuple[str, int]:
        """Store ``data``; return its hash and size."""
        writer = self.writer(None)
        writer.write(data)
        await writer.commit()
        return writer.hash, writer.size

    async def add_file(self, path: str | os.PathLike[str]) -> tuple[str, int]:
        """Store a file's bytes; return their hash and size."""
        return await self.add(await blocking(_read_file, path))

    def writer(self, hash: str | None) -> BlobWriter:
        """A writer for the blob ``hash`` (None: whatever the bytes hash to)."""
        raise NotImplementedError

    async def read(self, hash: str) -> bytes | None:
        """The blob's bytes, checked against the hash; None if absent or corrupted (a
        corrupted entry is removed)."""
        raise NotImplementedError

    async def chunks(self, hash: str) -> AsyncGenerator[bytes, None] | None:
        """The blob's bytes in chunks, unchecked (the server checks uploads); None if
        absent. Only the directory cache streams; the others yield one chunk."""
        data = await self.read(hash)
        if data is None:
            return None
        return _one(data)

    async def size(self, hash: str) -> int | None:
        data = await self.read(hash)
        return None if data is None else len(data)

    async def remove(self, hash: str) -> None:
        raise NotImplementedError

    async def save(self, hash: str, dest: str | os.PathLike[str]) -> bool:
        """Write the blob to ``dest`` if the cache has it intact; False if not."""
        data = await self.read(hash)
        if data is None:
            return False
        await blocking(_write_file, dest, data)
        return True

    async def close(self) -> None:
        return None

    def describe(self) -> str:
        return self.kind


async def _one(data: bytes) -> AsyncGenerator[bytes, None]:
    yield data


async def blocking(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` off the event loop in CPython (file I/O of large blobs); inline in
    Pyodide, which has no threads (and whose files live in memory)."""
    if sys.platform == "emscripten":
        return fn(*args)
    return await asyncio.to_thread(fn, *args)


def _read_file(path: str | os.PathLike[str]) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise StorageError(f"cannot read {os.fspath(path)!r}: {exc}") from exc


def _write_file(path: str | os.PathLike[str], data: bytes) -> None:
    Path(path).expanduser().write_bytes(data)


def _valid(data: bytes, hash: str) -> bool:
    return hashlib.sha256(data).hexdigest() == hash


# -- memory ------------------------------------------------------------------------------


class _MemoryWriter(BlobWriter):
    def __init__(self, cache: MemoryBlobCache, hash: str | None) -> None:
        super().__init__(hash)
        self._cache = cache
        self._parts: list[bytes] = []

    def _write(self, chunk: bytes) -> None:
        self._parts.append(bytes(chunk))

    async def commit(self) -> None:
        if not self.verified():
            self._parts = []
            raise StorageError(f"the bytes received for blob {self.hash} do not hash to it")
        self._cache.entries[self.hash] = b"".join(self._parts)
        self._parts = []

    async def abort(self) -> None:
        self._parts = []


class MemoryBlobCache(BlobCache):
    """The memory backend's cache: nothing outlives the client."""

    kind = "memory"

    def __init__(self) -> None:
        self.entries: dict[str, bytes] = {}

    async def contains(self, hash: str) -> bool:
        return hash in self.entries

    def writer(self, hash: str | None) -> BlobWriter:
        return _MemoryWriter(self, hash)

    async def read(self, hash: str) -> bytes | None:
        data = self.entries.get(hash)
        if data is None:
            return None
        if not _valid(data, hash):
            del self.entries[hash]
            return None
        return data

    async def remove(self, hash: str) -> None:
        self.entries.pop(hash, None)


# -- a directory (CPython) -----------------------------------------------------------------


class _FileWriter(BlobWriter):
    def __init__(self, cache: DirectoryBlobCache, hash: str | None) -> None:
        super().__init__(hash)
        self._cache = cache
        cache.root.mkdir(parents=True, exist_ok=True)
        self._tmp = cache.root / f".tmp-{uuid.uuid4().hex}"
        self._file = self._tmp.open("wb")

    def _write(self, chunk: bytes) -> None:
        self._file.write(chunk)

    def finish(self) -> None:
        self._file.close()
        if not self.verified():
            self._tmp.unlink(missing_ok=True)
            raise StorageError(f"the bytes received for blob {self.hash} do not hash to it")
        os.replace(self._tmp, self._cache.path(self.hash))

    def discard(self) -> None:
        self._file.close()
        self._tmp.unlink(missing_ok=True)

    async def commit(self) -> None:
        await blocking(self.finish)

    async def abort(self) -> None:
        self.discard()


class DirectoryBlobCache(BlobCache):
    """The SQLite backend's cache: a directory of files named by their hash. Its
    file I/O runs in a worker thread, so a large blob never stalls a loop."""

    kind = "directory"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, hash: str) -> Path:
        return self.root / hash

    def writer(self, hash: str | None) -> BlobWriter:
        try:
            return _FileWriter(self, hash)
        except OSError as exc:
            raise StorageError(f"cannot write to the blob cache {str(self.root)!r}: {exc}") \
                from exc

    # The blocking cores, for worker threads.

    def _add_file(self, path: str | os.PathLike[str]) -> tuple[str, int]:
        # Copied in chunks while hashing: a large file is never held in memory.
        writer = _FileWriter(self, None)
        try:
            with Path(path).expanduser().open("rb") as f:
                while chunk := f.read(CHUNK):
                    writer.write(chunk)
        except BaseException as exc:
            writer.discard()
            if isinstance(exc, OSError):
                raise StorageError(f"cannot read {os.fspath(path)!r}: {exc}") from exc
            raise
        writer.finish()
        return writer.hash, writer.size

    def _read(self, hash: str) -> bytes | None:
        try:
            data = self.path(hash).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read the cached blob {hash}: {exc}") from exc
        if not _valid(data, hash):
            self.path(hash).unlink(missing_ok=True)
            return None
        return data

    def _verify(self, hash: str) -> bool:
        digest = hashlib.sha256()
        try:
            with self.path(hash).open("rb") as f:
                while chunk := f.read(CHUNK):
                    digest.update(chunk)
        except FileNotFoundError:
            return False
        if digest.hexdigest() != hash:
            self.path(hash).unlink(missing_ok=True)
            return False
        return True

    def _save(self, hash: str, dest: str | os.PathLike[str]) -> bool:
        if not self._verify(hash):
            return False
        shutil.copyfile(self.path(hash), Path(dest).expanduser())
        return True

    def _size(self, hash: str) -> int | None:
        try:
            return self.path(hash).stat().st_size
        except FileNotFoundError:
            return None

    def _open(self, hash: str) -> BinaryIO | None:
        try:
            return self.path(hash).open("rb")
        except FileNotFoundError:
            return None

    # The contract.

    async def contains(self, hash: str) -> bool:
        return await self.size(hash) is not None

    async def add_file(self, path: str | os.PathLike[str]) -> tuple[str, int]:
        return await blocking(self._add_file, path)

    async def read(self, hash: str) -> bytes | None:
        return await blocking(self._read, hash)

    async def verify(self, hash: str) -> bool:
        """Whether the entry exists and its bytes hash to ``hash`` (a corrupted entry
        is removed), read in chunks."""
        return await blocking(self._verify, hash)

    async def save(self, hash: str, dest: str | os.PathLike[str]) -> bool:
        return await blocking(self._save, hash, dest)

    async def chunks(self, hash: str) -> AsyncGenerator[bytes, None] | None:
        f = await blocking(self._open, hash)
        return None if f is None else _file_chunks(f)

    async def size(self, hash: str) -> int | None:
        return await blocking(self._size, hash)

    async def remove(self, hash: str) -> None:
        await blocking(self.path(hash).unlink, True)

    def describe(self) -> str:
        return str(self.root)


async def _file_chunks(f: BinaryIO) -> AsyncGenerator[bytes, None]:
    try:
        while chunk := await blocking(f.read, CHUNK):
            yield chunk
    finally:
        f.close()


def make_blob_cache(storage: Storage) -> BlobCache:
    """The cache that goes with a replica's storage backend."""
    from .storage.indexeddb import IndexedDBStorage

    if isinstance(storage, IndexedDBStorage):
        from .blob_cache_idb import IndexedDBBlobCache

        return IndexedDBBlobCache(f"{storage.database}:blobs")
    path = getattr(storage, "path", None)
    if storage.kind == "sqlite" and isinstance(path, Path):
        return DirectoryBlobCache(path.with_suffix(".blobs"))
    return MemoryBlobCache()
