"""Helpers for the tests inside Pyodide (importable: the harness puts this folder on sys.path)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pyodide.code import run_js

T = TypeVar("T")


async def eventually(check: Callable[[], Awaitable[T]], within: float = 10.0) -> T:
    """``await check()`` until it stops raising AssertionError, for ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)


_DUMP_JS = """
(async (name, store) => {
  const db = await new Promise((ok, fail) => {
    const r = indexedDB.open(name);
    r.onsuccess = () => ok(r.result);
    r.onerror = () => fail(r.error);
  });
  try {
    if (!db.objectStoreNames.contains(store)) return "{}";
    const tx = db.transaction([store], "readonly");
    const s = tx.objectStore(store);
    const keys = s.getAllKeys(), values = s.getAll();
    await new Promise((ok, fail) => { tx.oncomplete = ok; tx.onerror = () => fail(tx.error); });
    const out = {};
    keys.result.forEach((k, i) => { out[k] = values.result[i]; });
    return JSON.stringify(out);
  } finally {
    db.close();
  }
})
"""


async def idb_dump(database: str, store: str = "rows") -> dict[str, Any]:
    """Every key and value of an IndexedDB store, read by plain JavaScript (not through
    plasma_nb's helper): a check independent of the backend. Values are decoded JSON."""
    dump = await run_js(_DUMP_JS)(database, store)
    return {k: json.loads(v) for k, v in json.loads(str(dump)).items()}


async def idb_databases() -> list[str]:
    """The names of every IndexedDB database (fake-indexeddb, this Node process)."""
    names = await run_js("(async () => (await indexedDB.databases()).map((d) => d.name))")()
    return [str(n) for n in names.to_py()]
