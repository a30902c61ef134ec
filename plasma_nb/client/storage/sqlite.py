"""The SQLite file backend: the replica is a file, and SQLite's COMMIT is durability.

The default in CPython. The file lives at ``~/.plasma_nb/<name>.db`` unless
``PLASMA_NB_HOME`` names another directory or a path is given. WAL mode lets
readers in other processes proceed while one process writes, and
``synchronous=FULL`` makes every COMMIT survive a power cut, not just a crash.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Awaitable
from pathlib import Path

from ...core.errors import StorageClosed, StorageError
from .base import CommitRecord, Storage, connect_sqlite

__all__ = ["SQLiteStorage", "default_directory"]

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")


def default_directory() -> Path:
    """``$PLASMA_NB_HOME``, or ``~/.plasma_nb``."""
    home = os.environ.get("PLASMA_NB_HOME")
    return Path(home).expanduser() if home else Path.home() / ".plasma_nb"


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > 200:
        raise StorageError(
            f"database name {name!r} must be letters, digits, '_', '.' or '-' "
            "(it names a file), not starting with '.' or '-'"
        )
    return name


class SQLiteStorage(Storage):
    """``connect(storage="sqlite")``: a SQLite file shared by every process that opens it."""

    kind = "sqlite"
    shared = True

    def __init__(
        self, name: str = "default", *, path: str | os.PathLike[str] | None = None
    ) -> None:
        self.name = name
        if path is None:
            self.path = default_directory() / f"{check_name(name)}.db"
        else:
            self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    async def open(self) -> sqlite3.Connection:
        if self._closed:
            raise StorageClosed(f"storage {self.describe()} is closed")
        if self._conn is not None:
            return self._conn
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = connect_sqlite(str(self.path))
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot open {str(self.path)!r}: {exc}") from exc
        try:
            mode = _set_wal(conn)
            if mode != "wal":
                raise StorageError(
                    f"cannot put {str(self.path)!r} in WAL mode (got {mode!r}); "
                    "is it on a network file system?"
                )
            conn.execute("PRAGMA synchronous=FULL")
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def persist(self, record: CommitRecord) -> Awaitable[None] | None:
        # The engine's COMMIT already wrote the record to the file.
        if self._closed:
            raise StorageClosed(f"storage {self.describe()} is closed")
        return None

    async def close(self) -> None:
        self._closed = True
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def describe(self) -> str:
        return str(self.path)


def _set_wal(conn: sqlite3.Connection, wait: float = 30.0) -> str:
    """``PRAGMA journal_mode=WAL``, retried: switching modes needs the database to itself,
    and another process opening the same file at that moment makes SQLite answer
    "database is locked" at once rather than through the busy timeout."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(0.05)
