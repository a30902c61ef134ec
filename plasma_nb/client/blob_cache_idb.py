"""The blob cache in Pyodide: an IndexedDB database of its own, one record per blob.

The database is ``<the replica's IndexedDB name>:blobs`` with one object store,
``blobs``: key the hash, value the bytes (a ``Uint8Array``). It is separate from
the replica's database so that the replica's schema and its write-through stay
as they are. As in storage/indexeddb.py, a small JavaScript helper does the
IndexedDB work; bytes cross the boundary as one ``Uint8Array`` copy each way.
A write resolves on its transaction's ``complete`` (strict durability), so a
blob is in the cache before ``put()`` queues its upload.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ..core.errors import StorageError
from .blob_cache import BlobCache, BlobWriter
from .storage.indexeddb_format import PROMISES_JS

__all__ = ["IndexedDBBlobCache"]

STORE = "blobs"

_HELPER_JS = r"""
(() => {
@PROMISES@
  return {
    open(factory, name) {
      const r = factory.open(name, 1);
      r.onupgradeneeded = () => {
        if (!r.result.objectStoreNames.contains("blobs")) r.result.createObjectStore("blobs");
      };
      return request(r);
    },
    get(db, key) {
      const tx = db.transaction(["blobs"], "readonly");
      const got = tx.objectStore("blobs").get(key);
      // undefined when absent: it reaches Python as None (null would be a JsNull).
      return finished(tx, () => got.result);
    },
    has(db, key) {
      const tx = db.transaction(["blobs"], "readonly");
      const got = tx.objectStore("blobs").count(key);
      return finished(tx, () => got.result > 0);
    },
    put(db, key, bytes) {
      const tx = db.transaction(["blobs"], "readwrite", { durability: "strict" });
      tx.objectStore("blobs").put(bytes, key);
      return finished(tx, () => null);
    },
    remove(db, key) {
      const tx = db.transaction(["blobs"], "readwrite");
      tx.objectStore("blobs").delete(key);
      return finished(tx, () => null);
    },
  };
})()
""".replace("@PROMISES@\n", PROMISES_JS)


class _IDBWriter(BlobWriter):
    def __init__(self, cache: IndexedDBBlobCache, hash: str | None) -> None:
        super().__init__(hash)
        self._cache = cache
        self._parts: list[bytes] = []

    def _write(self, chunk: bytes) -> None:
        self._parts.append(bytes(chunk))

    async def commit(self) -> None:
        data, self._parts = b"".join(self._parts), []
        if not self.verified():
            raise StorageError(f"the bytes received for blob {self.hash} do not hash to it")
        await self._cache.store(self.hash, data)

    async def abort(self) -> None:
        self._parts = []


class IndexedDBBlobCache(BlobCache):
    """Blobs in the IndexedDB database ``name``; ``factory`` overrides ``indexedDB``."""

    kind = "indexeddb"

    def __init__(self, name: str, *, factory: Any = None) -> None:
        self.name = name
        self._factory = factory
        self._helper: Any = None
        self._db: Any = None

    async def _open(self) -> Any:
        if self._db is None:
            import js
            from pyodide.code import run_js

            self._helper = run_js(_HELPER_JS)
            factory = self._factory if self._factory is not None else js.indexedDB
            try:
                self._db = await self._helper.open(factory, self.name)
            except Exception as exc:
                raise StorageError(f"cannot open IndexedDB {self.name!r}: {exc}") from exc
        return self._db

    async def store(self, hash: str, data: bytes) -> None:
        from pyodide.ffi import to_js

        db = await self._open()
        try:
            await self._helper.put(db, hash, to_js(data))
        except Exception as exc:
            raise StorageError(f"cannot write blob {hash} to IndexedDB {self.name!r}: {exc}") \
                from exc

    async def contains(self, hash: str) -> bool:
        db = await self._open()
        return bool(await self._helper.has(db, hash))

    def writer(self, hash: str | None) -> BlobWriter:
        return _IDBWriter(self, hash)

    async def read(self, hash: str) -> bytes | None:
        db = await self._open()
        try:
            value = await self._helper.get(db, hash)
        except Exception as exc:
            raise StorageError(f"cannot read blob {hash} from IndexedDB {self.name!r}: {exc}") \
                from exc
        if value is None:
            return None
        data = bytes(value.to_bytes()) if hasattr(value, "to_bytes") else bytes(value)
        if hashlib.sha256(data).hexdigest() != hash:
            await self.remove(hash)
            return None
        return data

    async def remove(self, hash: str) -> None:
        db = await self._open()
        await self._helper.remove(db, hash)

    async def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def describe(self) -> str:
        return f"indexeddb:{self.name}"
