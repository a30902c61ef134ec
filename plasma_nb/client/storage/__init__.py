"""Storage backends for the replica; the contract is in ``base.py``."""

from __future__ import annotations

import sys

from ...core.errors import StorageError
from .base import CommitRecord, Storage
from .memory import MemoryStorage
from .sqlite import SQLiteStorage, default_directory

__all__ = [
    "CommitRecord",
    "MemoryStorage",
    "SQLiteStorage",
    "Storage",
    "default_directory",
    "make_storage",
]

KINDS = ("sqlite", "memory", "indexeddb")


def make_storage(storage: Storage | str | None, name: str) -> Storage:
    """The backend ``connect(storage=...)`` asks for; None is the platform's default."""
    if isinstance(storage, Storage):
        return storage
    if storage is None:
        storage = "indexeddb" if sys.platform == "emscripten" else "sqlite"
    if storage == "memory":
        return MemoryStorage(name)
    if storage == "sqlite":
        return SQLiteStorage(name)
    if storage == "indexeddb":
        # Imported here: the module reaches for `js` when it opens.
        from .indexeddb import IndexedDBStorage

        return IndexedDBStorage(name)
    raise StorageError(f"unknown storage {storage!r}; expected one of {', '.join(KINDS)}")
