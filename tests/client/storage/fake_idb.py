"""A stand-in for the browser, enough to run ``IndexedDBStorage``'s Python side in CPython.

It replaces ``js`` and ``pyodide.code`` with fakes whose JavaScript helper has the
same four functions as ``_HELPER_JS`` and keeps each database in a dict. A write
applies at once but resolves ("complete") on a later loop iteration, as IndexedDB
does. The real helper runs under Pyodide in Node with fake-indexeddb (see the
``pyodide`` marker).
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
        self.locks: set[str] = set()
        self.fail_writes = False
        self.writes = 0


class _DB:
    def __init__(self, store: dict[str, str]) -> None:
        self.store = store
        self.closed = False

    def close(self) -> None:
        self.closed = True


def _resolved(value: Any) -> asyncio.Future[Any]:
    fut = asyncio.get_running_loop().create_future()
    fut.set_result(value)
    return fut


class FakeHelper:
    def __init__(self, factory: FakeIndexedDB) -> None:
        self.factory = factory

    def acquire(self, name: str) -> asyncio.Future[Any]:
        if name in self.factory.locks:
            return _resolved(None)
        self.factory.locks.add(name)
        return _resolved(lambda: self.factory.locks.discard(name))

    def open(self, factory: FakeIndexedDB, name: str, store: str) -> asyncio.Future[Any]:
        return _resolved(_DB(factory.databases.setdefault(name, {})))

    def loadAll(self, db: _DB, store: str) -> asyncio.Future[Any]:
        keys = sorted(db.store)
        return _resolved(json.dumps([keys, [db.store[k] for k in keys]]))

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
        self.factory.writes += 1
        loop.call_soon(fut.set_result, None)
        return fut


def install(monkeypatch: Any, factory: FakeIndexedDB) -> None:
    js = types.ModuleType("js")
    js.indexedDB = factory  # type: ignore[attr-defined]
    pyodide = types.ModuleType("pyodide")
    code = types.ModuleType("pyodide.code")
    code.run_js = lambda source: FakeHelper(factory)  # type: ignore[attr-defined]
    pyodide.code = code  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "js", js)
    monkeypatch.setitem(sys.modules, "pyodide", pyodide)
    monkeypatch.setitem(sys.modules, "pyodide.code", code)
