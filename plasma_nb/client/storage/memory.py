"""The memory backend: an in-memory SQLite replica that persists nothing.

For tests, scratch work and local-only experiments: every commit is "durable" at
once because there is nothing to survive; closing the client discards the data.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable

from ...core.errors import StorageClosed
from .base import CommitRecord, Storage, connect_sqlite

__all__ = ["MemoryStorage"]


class MemoryStorage(Storage):
    """``connect(storage="memory")``: nothing outlives the client."""

    kind = "memory"

    def __init__(self, name: str = "default") -> None:
        self.name = name
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    async def open(self) -> sqlite3.Connection:
        if self._closed:
            raise StorageClosed(f"memory storage {self.name!r} is closed")
        if self._conn is None:
            self._conn = connect_sqlite(":memory:")
        return self._conn

    def persist(self, record: CommitRecord) -> Awaitable[None] | None:
        if self._closed:
            raise StorageClosed(f"memory storage {self.name!r} is closed")
        return None

    async def close(self) -> None:
        self._closed = True
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def describe(self) -> str:
        return f"memory:{self.name}"
