"""The IndexedDB backend (Pyodide): an in-memory replica written through to IndexedDB.

The replica is an in-memory SQLite database. Every commit's record (the rows it
put or deleted, in every table, internal ones included) is written to IndexedDB
in one ``readwrite`` transaction with ``durability: "strict"``; all its requests
are issued in one synchronous JavaScript call, and the commit is durable when
that transaction fires ``complete``. At start every stored row is loaded back.

JavaScript interop is deliberately narrow so that it is easy to test under Node
with fake-indexeddb: a small JavaScript helper (``_HELPER_JS`` below, evaluated
once with ``pyodide.code.run_js``) does all the IndexedDB work, and only strings
and the database handle cross the boundary:

- ``helper.open(factory, name, store)`` -> Promise of an ``IDBDatabase``;
- ``helper.loadAll(db, store)`` -> Promise of a JSON string ``[[key, ...], [value, ...]]``;
- ``helper.write(db, store, payload)`` -> Promise resolved on ``complete``, where
  ``payload`` is a JSON string ``{"puts": [[key, value], ...], "deletes": [key, ...]}``;
- ``helper.acquire(lockName)`` -> Promise of a release function, or null when another
  tab holds the lock (Web Locks; always granted where ``navigator.locks`` is absent).

Keys are ``"<table>/<JSON array of the primary key>"``; values are the row as a
JSON object of SQLite values. JavaScript never parses a value, so integers and
reals round-trip exactly.

One tab owns a database at a time: a second tab that opens the same name gets a
``StorageError`` (two in-memory replicas written through to one store would
overwrite each other's rebases).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any

from ...core.errors import StorageClosed, StorageError
from .base import CommitRecord, Key, Storage, StoredRow, connect_sqlite, insert_rows

__all__ = ["IndexedDBStorage", "decode_key", "encode_key", "encode_record"]

STORE = "rows"

_HELPER_JS = r"""
(() => {
  function request(r) {
    return new Promise((resolve, reject) => {
      r.onsuccess = () => resolve(r.result);
      r.onerror = () => reject(r.error);
    });
  }
  function finished(tx, value) {
    return new Promise((resolve, reject) => {
      tx.oncomplete = () => resolve(value());
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error || new Error("IndexedDB transaction aborted"));
    });
  }
  return {
    open(factory, name, store) {
      const r = factory.open(name, 1);
      r.onupgradeneeded = () => {
        if (!r.result.objectStoreNames.contains(store)) r.result.createObjectStore(store);
      };
      r.onblocked = () => console.warn("plasma_nb: IndexedDB open blocked", name);
      return request(r);
    },
    loadAll(db, store) {
      const tx = db.transaction([store], "readonly");
      const s = tx.objectStore(store);
      const keys = s.getAllKeys();
      const values = s.getAll();
      return finished(tx, () => JSON.stringify([keys.result, values.result]));
    },
    write(db, store, payload) {
      const { puts, deletes } = JSON.parse(payload);
      const tx = db.transaction([store], "readwrite", { durability: "strict" });
      const s = tx.objectStore(store);
      // Every request is issued before this function returns: nothing awaits in between.
      for (const [k, v] of puts) s.put(v, k);
      for (const k of deletes) s.delete(k);
      return finished(tx, () => null);
    },
    acquire(name) {
      const locks = globalThis.navigator && globalThis.navigator.locks;
      if (!locks) return Promise.resolve(() => {});
      return new Promise((resolve, reject) => {
        locks.request(name, { ifAvailable: true }, (lock) => {
          if (!lock) { resolve(null); return undefined; }
          return new Promise((release) => resolve(release));
        }).catch(reject);
      });
    },
  };
})()
"""


def encode_key(table: str, key: Key) -> str:
    return table + "/" + json.dumps(list(key), separators=(",", ":"))


def decode_key(text: str) -> tuple[str, Key]:
    table, _, rest = text.partition("/")
    return table, tuple(json.loads(rest))


def encode_record(record: CommitRecord) -> str:
    """The ``payload`` string that ``helper.write`` takes."""
    puts = [
        [encode_key(table, key), json.dumps(row, separators=(",", ":"), allow_nan=False)]
        for table, rows in record.puts.items()
        for key, row in rows.items()
    ]
    deletes = [encode_key(table, key) for table, keys in record.deletes.items() for key in keys]
    return json.dumps({"puts": puts, "deletes": deletes}, separators=(",", ":"))


def decode_rows(dump: str) -> list[StoredRow]:
    """The rows in ``helper.loadAll``'s answer."""
    keys, values = json.loads(dump)
    return [(decode_key(k)[0], json.loads(v)) for k, v in zip(keys, values, strict=True)]


def _site_base() -> str:
    # The kernel runs in a worker under <site>/extensions/...; the site's base path
    # keeps two lite sites on one origin apart (DESIGN section 3).
    import js

    location = getattr(js, "location", None)
    if location is None:
        return ""
    return str(location.pathname).split("/extensions/")[0].rstrip("/")


class IndexedDBStorage(Storage):
    """``connect(storage="indexeddb")``, the default in Pyodide.

    ``database`` overrides the IndexedDB database name (``plasma_nb:<base>:<name>``);
    ``factory`` overrides ``indexedDB`` (tests pass fake-indexeddb's).
    """

    kind = "indexeddb"
    needs_records = True

    def __init__(
        self, name: str = "default", *, database: str | None = None, factory: Any = None
    ) -> None:
        self.name = name
        self._database = database
        self._factory = factory
        self._helper: Any = None
        self._db: Any = None
        self._release: Any = None
        self._conn: sqlite3.Connection | None = None
        self._pending: set[asyncio.Future[None]] = set()
        self._broken: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    @property
    def database(self) -> str:
        if self._database is None:
            self._database = f"plasma_nb:{_site_base()}:{self.name}"
        return self._database

    async def open(self) -> sqlite3.Connection:
        if self._closed:
            raise StorageClosed(f"storage {self.describe()} is closed")
        if self._conn is not None:
            return self._conn
        import js
        from pyodide.code import run_js

        self._loop = asyncio.get_running_loop()
        self._helper = run_js(_HELPER_JS)
        release = await self._helper.acquire(f"plasma_nb-lock:{self.database}")
        if release is None:
            raise StorageError(
                f"IndexedDB database {self.database!r} is open in another tab; "
                "close that tab's client first (one tab owns a local database at a time)"
            )
        self._release = release
        factory = self._factory if self._factory is not None else js.indexedDB
        try:
            self._db = await self._helper.open(factory, self.database, STORE)
        except Exception as exc:
            self._release_lock()
            raise StorageError(f"cannot open IndexedDB {self.database!r}: {exc}") from exc
        self._conn = connect_sqlite(":memory:")
        return self._conn

    async def load(self, conn: sqlite3.Connection, columns: Mapping[str, Sequence[str]]) -> None:
        try:
            dump = await self._helper.loadAll(self._db, STORE)
        except Exception as exc:
            raise StorageError(f"cannot read IndexedDB {self.database!r}: {exc}") from exc
        conn.execute("BEGIN")
        try:
            insert_rows(conn, decode_rows(str(dump)), columns)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def persist(self, record: CommitRecord) -> Awaitable[None] | None:
        if self._closed:
            raise StorageClosed(f"storage {self.describe()} is closed")
        if self._broken is not None:
            raise StorageError(
                f"an earlier write to IndexedDB {self.database!r} failed ({self._broken}); "
                "later commits cannot be made durable: reopen the client"
            )
        if not record:
            return None
        assert self._loop is not None
        promise = self._helper.write(self._db, STORE, encode_record(record))
        done: asyncio.Future[None] = self._loop.create_future()
        written = asyncio.ensure_future(promise, loop=self._loop)
        self._pending.add(done)

        def settle(fut: asyncio.Future[Any]) -> None:
            self._pending.discard(done)
            exc = fut.exception()
            if exc is not None:
                if self._broken is None:
                    self._broken = exc
                done.set_exception(StorageError(f"IndexedDB write failed: {exc}"))
            else:
                done.set_result(None)

        written.add_done_callback(settle)
        return done

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        if self._db is not None:
            self._db.close()
            self._db = None
        self._release_lock()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _release_lock(self) -> None:
        if self._release is not None:
            self._release()
            self._release = None

    def describe(self) -> str:
        return f"indexeddb:{self._database or self.name}"
