"""A stand-in for the browser, enough to run ``IndexedDBStorage``'s Python side in CPython.

It replaces ``js``, ``pyodide.code`` and ``pyodide.ffi`` with fakes whose JavaScript
helper has the same functions as ``HELPER_JS`` (indexeddb_format.py) and keeps each
database in a dict (its rows, and the change journal with its head). A write applies
at once but resolves ("complete") on a later loop iteration, as IndexedDB does. The
real helper runs under Pyodide in Node with fake-indexeddb (see the ``pyodide`` marker).
"""

from __future__ import annotations

import asyncio
import json
import sys
import types
from typing import Any


class FakeIndexedDB:
    """The ``indexedDB`` factory: databases by name, each a dict key -> value."""

    def __init__(self) -> None:
        self.databases: dict[str, dict[str, str]] = {}
        self.logs: dict[str, dict[int, str]] = {}
        self.locks: dict[str, asyncio.Lock] = {}
        self.fail_writes = False
        self.writes = 0


class _DB:
    def __init__(self, store: dict[str, str], log: dict[int, str]) -> None:
        self.store = store
        self.log = log  # journal number -> JSON list of keys; the head is max(log)
        self.closed = False

    @property
    def head(self) -> int:
        return max(self.log, default=0)

    def close(self) -> None:
        self.closed = True


def _resolved(value: Any) -> asyncio.Future[Any]:
    fut = asyncio.get_running_loop().create_future()
    fut.set_result(value)
    return fut


class FakeHelper:
    def __init__(self, factory: FakeIndexedDB) -> None:
        self.factory = factory

    def lock(self, name: str) -> asyncio.Future[Any]:
        lock = self.factory.locks.setdefault(name, asyncio.Lock())

        async def acquire() -> Any:
            await lock.acquire()
            return lock.release

        return asyncio.ensure_future(acquire())

    def channel(self, name: str, on_message: Any) -> None:
        return None  # no BroadcastChannel: tabs catch up when they write

    def open(self, factory: FakeIndexedDB, name: str, store: str) -> asyncio.Future[Any]:
        return _resolved(_DB(factory.databases.setdefault(name, {}),
                             factory.logs.setdefault(name, {})))

    def loadAll(self, db: _DB, store: str) -> asyncio.Future[Any]:
        keys = sorted(db.store)
        return _resolved(json.dumps([keys, [db.store[k] for k in keys], db.head]))

    def since(self, db: _DB, seen: int) -> asyncio.Future[Any]:
        numbers = sorted(n for n in db.log if n > seen)
        return _resolved(json.dumps([db.head, numbers, [db.log[n] for n in numbers]]))

    def getMany(self, db: _DB, store: str, keys: str) -> asyncio.Future[Any]:
        return _resolved(json.dumps([db.store.get(k) for k in json.loads(keys)]))

    def write(self, db: _DB, store: str, payload: str) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if self.factory.fail_writes:
            loop.call_soon(fut.set_exception, RuntimeError("QuotaExceededError"))
            return fut
        data = json.loads(payload)
        for key, value in data["puts"]:
            db.store[key] = value
        for key in data["deletes"]:
            db.store.pop(key, None)
        if "seq" in data:
            db.log[data["seq"]] = json.dumps([k for k, _ in data["puts"]] + data["deletes"])
        self.factory.writes += 1
        loop.call_soon(fut.set_result, None)
        return fut


class _Proxy:
    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def destroy(self) -> None:
        self.fn = None


def install(monkeypatch: Any, factory: FakeIndexedDB) -> None:
    js = types.ModuleType("js")
    js.indexedDB = factory  # type: ignore[attr-defined]
    pyodide = types.ModuleType("pyodide")
    code = types.ModuleType("pyodide.code")
    code.run_js = lambda source: FakeHelper(factory)  # type: ignore[attr-defined]
    pyodide.code = code  # type: ignore[attr-defined]
    ffi = types.ModuleType("pyodide.ffi")
    ffi.create_proxy = _Proxy  # type: ignore[attr-defined]
    pyodide.ffi = ffi  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "js", js)
    monkeypatch.setitem(sys.modules, "pyodide", pyodide)
    monkeypatch.setitem(sys.modules, "pyodide.code", code)
    monkeypatch.setitem(sys.modules, "pyodide.ffi", ffi)
