"""How the IndexedDB storage lays out its data, and the JavaScript helper that does its
IndexedDB work.

The helper (:data:`HELPER_JS`, evaluated once with ``pyodide.code.run_js``) opens the
database, loads every row, writes one commit with its journal entry, reads the journal
since a number, reads rows by key, takes the Web Lock and opens the BroadcastChannel.
Only strings, numbers and handles cross the boundary, so it is easy to test under Node
with fake-indexeddb; Python encodes and decodes those strings here.

Keys are ``"<table>/<JSON array of the primary key>"``; values are the row as a
JSON object of SQLite values. JavaScript never parses a value, so integers and
reals round-trip exactly.
"""

from __future__ import annotations

import json
from typing import Any

from .base import CommitRecord, Key, StoredRow

__all__ = [
    "HELPER_JS",
    "KEEP",
    "LOG",
    "PROMISES_JS",
    "STORE",
    "decode_key",
    "decode_rows",
    "encode_key",
    "encode_record",
]

STORE = "rows"
LOG = "log"
#: Journal entries kept; a tab further behind reloads every row instead.
KEEP = 2000

#: IndexedDB's requests and transactions as promises, for this helper and the blob cache's.
PROMISES_JS = r"""
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
"""

HELPER_JS = r"""
(() => {
  const LOG = "log";
  const KEEP = @KEEP@;
@PROMISES@
  // Journal numbers are numeric keys of the log store; "head" (a string) sorts after them.
  const after = (seen) => IDBKeyRange.bound(seen, Infinity, true, false);
  return {
    open(factory, name, store) {
      const r = factory.open(name, 2);
      r.onupgradeneeded = () => {
        const db = r.result;
        if (!db.objectStoreNames.contains(store)) db.createObjectStore(store);
        if (!db.objectStoreNames.contains(LOG)) db.createObjectStore(LOG);
      };
      r.onblocked = () => console.warn("plasma_nb: IndexedDB open blocked", name);
      return request(r);
    },
    loadAll(db, store) {
      const tx = db.transaction([store, LOG], "readonly");
      const s = tx.objectStore(store);
      const keys = s.getAllKeys();
      const values = s.getAll();
      const head = tx.objectStore(LOG).get("head");
      return finished(tx, () => JSON.stringify([keys.result, values.result, head.result || 0]));
    },
    write(db, store, payload) {
      const { puts, deletes, seq } = JSON.parse(payload);
      const names = seq === undefined ? [store] : [store, LOG];
      const tx = db.transaction(names, "readwrite", { durability: "strict" });
      const s = tx.objectStore(store);
      // Every request is issued before this function returns: nothing awaits in between.
      for (const [k, v] of puts) s.put(v, k);
      for (const k of deletes) s.delete(k);
      if (seq !== undefined) {
        const log = tx.objectStore(LOG);
        log.put(JSON.stringify(puts.map((p) => p[0]).concat(deletes)), seq);
        log.put(seq, "head");
        if (seq > KEEP) log.delete(IDBKeyRange.upperBound(seq - KEEP));
      }
      return finished(tx, () => null);
    },
    since(db, seen) {
      const tx = db.transaction([LOG], "readonly");
      const log = tx.objectStore(LOG);
      const head = log.get("head");
      const numbers = log.getAllKeys(after(seen));
      const entries = log.getAll(after(seen));
      return finished(tx, () => JSON.stringify(
        [head.result || 0, numbers.result, entries.result]));
    },
    getMany(db, store, keys) {
      const tx = db.transaction([store], "readonly");
      const s = tx.objectStore(store);
      const got = JSON.parse(keys).map((k) => s.get(k));
      return finished(tx, () => JSON.stringify(
        got.map((r) => (r.result === undefined ? null : r.result))));
    },
    lock(name) {
      const locks = globalThis.navigator && globalThis.navigator.locks;
      if (!locks) return Promise.resolve(null);
      return new Promise((resolve, reject) => {
        locks.request(name, () => new Promise((release) => resolve(release))).catch(reject);
      });
    },
    channel(name, onMessage) {
      if (typeof BroadcastChannel === "undefined") return null;
      const ch = new BroadcastChannel(name);
      ch.onmessage = (event) => onMessage(event.data);
      if (typeof ch.unref === "function") ch.unref();  // Node: do not keep the process alive
      return ch;
    },
  };
})()
""".replace("@KEEP@", str(KEEP)).replace("@PROMISES@\n", PROMISES_JS)


def encode_key(table: str, key: Key) -> str:
    return table + "/" + json.dumps(list(key), separators=(",", ":"))


def decode_key(text: str) -> tuple[str, Key]:
    table, _, rest = text.partition("/")
    return table, tuple(json.loads(rest))


def encode_record(record: CommitRecord, seq: int | None = None) -> str:
    """The ``payload`` string that ``helper.write`` takes."""
    puts = [
        [encode_key(table, key), json.dumps(row, separators=(",", ":"), allow_nan=False)]
        for table, rows in record.puts.items()
        for key, row in rows.items()
    ]
    deletes = [encode_key(table, key) for table, keys in record.deletes.items() for key in keys]
    payload: dict[str, Any] = {"puts": puts, "deletes": deletes}
    if seq is not None:
        payload["seq"] = seq
    return json.dumps(payload, separators=(",", ":"))


def decode_rows(keys: list[str], values: list[str]) -> list[StoredRow]:
    """The rows in ``helper.loadAll``'s answer."""
    return [(decode_key(k)[0], json.loads(v)) for k, v in zip(keys, values, strict=True)]
