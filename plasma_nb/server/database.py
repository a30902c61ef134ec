"""Database URLs: which storage backend a ``database=`` string selects."""

from __future__ import annotations

import itertools
from urllib.parse import urlsplit

from ..core.errors import ConfigError
from ..core.mutators import Mutators
from ..core.schema import Schema
from .storage.base import Storage

__all__ = ["open_storage", "sqlite_path"]

_memory_ids = itertools.count(1)


def sqlite_path(url: str) -> str:
    """The path (or SQLite URI) of ``sqlite:///relative.db``, ``sqlite:////abs.db``
    or ``sqlite:///:memory:``."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise ConfigError(
            f"database URL {url!r} must look like sqlite:///plasma.db (three slashes, "
            "then a path)"
        )
    path = url[len(prefix):]
    if not path:
        raise ConfigError(f"database URL {url!r} has no path")
    if path == ":memory:":
        # Shared-cache memory database: the reader and writer connections see one database.
        return f"file:plasma-memory-{next(_memory_ids)}?mode=memory&cache=shared"
    return path


def open_storage(url: str, schema: Schema, mutators: Mutators) -> Storage:
    if not isinstance(url, str):
        raise ConfigError(f"database must be a URL string, got {url!r}")
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from .storage.sqlite import SQLiteStorage

        return SQLiteStorage(sqlite_path(url), schema, mutators)
    if scheme in ("postgres", "postgresql"):
        try:
            from .storage.postgres import PostgresStorage
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ConfigError(
                f"database URL {url!r} needs asyncpg: pip install 'plasma-nb[server]'"
            ) from exc

        return PostgresStorage(url, schema, mutators)
    raise ConfigError(
        f"unsupported database URL {url!r}: expected sqlite:///PATH or postgresql://..."
    )
