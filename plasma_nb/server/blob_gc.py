"""``plasma-nb blobs gc``: delete the blobs that no row references, sparing recent ones.

It needs no schema file: a blob column is a text column holding a sha256 hex, so
a blob counts as referenced when any text column of any user table (every table
not named ``_plasma_*``) holds its hash. That errs on the safe side.

How it stays safe while the server runs:

1. read the known blobs (``_plasma_blobs``), then list the store;
2. candidates are blobs no row references, older than the grace period both in the
   store and in the known blobs (a client offline for a while may still hold
   mutations that reference a blob it uploaded; they get 409 and upload it again
   should it be gone, as long as their cache has it);
3. under the lock pushes take (SQLite's write lock; the version counter's row lock
   on Postgres), the references are read again and the candidates' known-blob rows
   deleted, so no push can store a candidate's hash from then on without the
   blob being uploaded again;
4. each candidate's object is deleted unless it was written again meanwhile.

Temporary objects of writes that never finished (a crashed server) are deleted
once older than the grace period too, and known-blob rows whose object is gone are
forgotten, so that pushes referencing them get 409 again rather than a blob no one
can fetch.
"""

from __future__ import annotations

import datetime as _dt
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..core.dialect import quote
from ..core.errors import ConfigError
from .blob_store import TMP_PREFIX, BlobInfo, BlobStore, is_hash, open_blob_store

__all__ = ["DEFAULT_GRACE", "GcResult", "collect_garbage", "describe"]

#: Blobs younger than this are spared: offline clients may still reference them.
DEFAULT_GRACE = 24 * 3600.0


@dataclass
class GcResult:
    """What a gc found and did (with ``dry_run``, what it would delete)."""

    dry_run: bool
    deleted: list[BlobInfo] = field(default_factory=list)
    spared: list[BlobInfo] = field(default_factory=list)  # unreferenced, newer than grace
    referenced: int = 0
    temporary: list[BlobInfo] = field(default_factory=list)  # stale temporary writes
    forgotten: list[str] = field(default_factory=list)  # known rows without an object

    @property
    def freed_bytes(self) -> int:
        return sum(b.size for b in self.deleted) + sum(b.size for b in self.temporary)


async def collect_garbage(
    database: str, blobs: str | BlobStore, *, grace: float = DEFAULT_GRACE,
    dry_run: bool = False, now: _dt.datetime | None = None,
) -> GcResult:
    """Delete (or with ``dry_run`` only list) the blobs of ``blobs`` that no row of
    ``database`` references and that are older than ``grace`` seconds."""
    if grace < 0:
        raise ConfigError(f"grace must be a number of seconds >= 0, got {grace!r}")
    store = open_blob_store(blobs) if isinstance(blobs, str) else blobs
    now = now or _dt.datetime.now(_dt.UTC)
    cutoff = now - _dt.timedelta(seconds=grace)
    cutoff_ms = int(cutoff.timestamp() * 1000)
    result = GcResult(dry_run=dry_run)
    catalog = await _open_catalog(database)
    try:
        known = await catalog.known()  # before listing: a row's object exists before it
        objects = await store.list()
        referenced = await catalog.referenced()
        present = {o.key for o in objects if o.is_blob}
        candidates: list[BlobInfo] = []
        for obj in sorted(objects, key=lambda o: o.key):
            if not obj.is_blob:
                if obj.key.startswith(TMP_PREFIX + "/") and obj.modified < cutoff:
                    result.temporary.append(obj)
                continue
            if obj.key in referenced:
                result.referenced += 1
            elif obj.modified >= cutoff or known.get(obj.key, 0) >= cutoff_ms:
                result.spared.append(obj)
            else:
                candidates.append(obj)
        orphans = sorted(h for h, created in known.items()
                         if h not in present and created < cutoff_ms)
        if dry_run:
            result.deleted = candidates
            result.forgotten = orphans
            return result
        claimed = await catalog.claim([c.key for c in candidates] + orphans, cutoff_ms)
        result.forgotten = [h for h in orphans if h in claimed]
        for obj in candidates:
            if obj.key not in claimed:
                result.referenced += 1  # referenced meanwhile
                continue
            again = await store.head(obj.key)
            if again is not None and again.modified >= cutoff:
                result.spared.append(again)  # uploaded again meanwhile
                continue
            await store.delete(obj.key)
            result.deleted.append(obj)
        for tmp in result.temporary:
            await store.delete(tmp.key)
    finally:
        await catalog.close()
    return result


# -- the database, without a schema ----------------------------------------------------------


class _Catalog:
    async def known(self) -> dict[str, int]:
        """The known blobs and when each was first stored (ms since the epoch)."""
        raise NotImplementedError

    async def referenced(self) -> set[str]:
        raise NotImplementedError

    async def claim(self, hashes: list[str], cutoff_ms: int) -> set[str]:
        """Under the push lock: forget the known-blob rows of the given hashes that no
        row references and that are older than ``cutoff_ms``; return the hashes whose
        objects may go (those, and the unreferenced ones without a row)."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


def _hashes(values: Iterable[Any]) -> set[str]:
    return {v for v in values if isinstance(v, str) and is_hash(v)}


async def _open_catalog(database: str) -> _Catalog:
    if not isinstance(database, str):
        raise ConfigError(f"database must be a URL string, got {database!r}")
    scheme = urlsplit(database).scheme
    if scheme == "sqlite":
        return _SQLiteCatalog(database)
    if scheme in ("postgres", "postgresql"):
        catalog = _PostgresCatalog(database)
        await catalog.connect()
        return catalog
    raise ConfigError(
        f"unsupported database URL {database!r}: expected sqlite:///PATH or postgresql://..."
    )


class _SQLiteCatalog(_Catalog):
    def __init__(self, url: str) -> None:
        from .database import sqlite_path

        path = sqlite_path(url)
        if path.startswith("file:"):
            raise ConfigError("blobs gc needs a database file, not sqlite:///:memory:")
        try:
            # mode=rw: a mistyped path is an error, not a new empty database.
            self._conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=10.0,
                                         isolation_level=None)
        except sqlite3.OperationalError as exc:
            raise ConfigError(f"cannot open the database {path!r}: {exc}") from None
        found = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_plasma_blobs'"
        ).fetchone()
        if found is None:
            self._conn.close()
            raise ConfigError(f"{path!r} is not a plasma_nb database with blobs (no "
                              "_plasma_blobs table): has a server with blobs used it?")

    def _text_columns(self) -> list[tuple[str, str]]:
        tables = [r[0] for r in self._conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE '\\_plasma\\_%' ESCAPE '\\' AND name NOT LIKE 'sqlite\\_%' "
            "ESCAPE '\\'")]
        return [(t, r[1]) for t in tables
                for r in self._conn.execute(f"PRAGMA table_info({quote(t)})")
                if str(r[2]).upper() == "TEXT"]

    def _referenced(self) -> set[str]:
        found: set[str] = set()
        for t, c in self._text_columns():
            found |= _hashes(r[0] for r in self._conn.execute(
                f"SELECT DISTINCT {quote(c)} FROM {quote(t)} WHERE length({quote(c)}) = 64"))
        return found

    async def known(self) -> dict[str, int]:
        return dict(self._conn.execute("SELECT hash, created FROM _plasma_blobs").fetchall())

    async def referenced(self) -> set[str]:
        return self._referenced()

    async def claim(self, hashes: list[str], cutoff_ms: int) -> set[str]:
        if not hashes:
            return set()
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            referenced = self._referenced()
            free = [h for h in hashes if h not in referenced]
            young = {r[0] for h in free for r in conn.execute(
                "SELECT hash FROM _plasma_blobs WHERE hash = ? AND created >= ?", (h, cutoff_ms))}
            claimed = [h for h in free if h not in young]
            conn.executemany("DELETE FROM _plasma_blobs WHERE hash = ?", [(h,) for h in claimed])
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return set(claimed)

    async def close(self) -> None:
        self._conn.close()


class _PostgresCatalog(_Catalog):
    def __init__(self, url: str) -> None:
        from .storage.postgres_sql import split_url

        self.url, self.namespace = split_url(url)
        self._conn: Any = None

    async def connect(self) -> None:
        import asyncpg

        self._conn = await asyncpg.connect(
            self.url, server_settings={"search_path": quote(self.namespace),
                                       "application_name": "plasma_nb blobs gc"})
        if await self._conn.fetchval("SELECT to_regclass('_plasma_blobs')") is None:
            await self._conn.close()
            raise ConfigError(f"schema {self.namespace!r} of the database has no "
                              "_plasma_blobs table: has a server with blobs used it?")

    async def _referenced(self) -> set[str]:
        columns = await self._conn.fetch(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = $1 AND data_type = 'text' AND table_name NOT LIKE "
            "'\\_plasma\\_%'", self.namespace)
        found: set[str] = set()
        for t, c in columns:
            rows = await self._conn.fetch(
                f"SELECT DISTINCT {quote(c)} FROM {quote(t)} WHERE length({quote(c)}) = 64")
            found |= _hashes(r[0] for r in rows)
        return found

    async def known(self) -> dict[str, int]:
        rows = await self._conn.fetch("SELECT hash, created FROM _plasma_blobs")
        return {r[0]: r[1] for r in rows}

    async def referenced(self) -> set[str]:
        return await self._referenced()

    async def claim(self, hashes: list[str], cutoff_ms: int) -> set[str]:
        if not hashes:
            return set()
        async with self._conn.transaction():
            # The counter's row lock: pushes (and operator writes) take it first, so
            # none can store a hash between the check below and the commit.
            await self._conn.execute("SELECT 1 FROM _plasma_meta FOR UPDATE")
            referenced = await self._referenced()
            free = [h for h in hashes if h not in referenced]
            young = {r[0] for r in await self._conn.fetch(
                "SELECT hash FROM _plasma_blobs WHERE hash = ANY($1::text[]) AND created >= $2",
                free, cutoff_ms)}
            claimed = [h for h in free if h not in young]
            await self._conn.execute(
                "DELETE FROM _plasma_blobs WHERE hash = ANY($1::text[])", claimed)
        return set(claimed)

    async def close(self) -> None:
        await self._conn.close()


def describe(result: GcResult, *, grace: float) -> list[str]:
    """The lines ``plasma-nb blobs gc`` prints."""
    verb = "would delete" if result.dry_run else "deleted"
    lines = [f"{verb} {b.key} ({b.size} bytes, stored {b.modified:%Y-%m-%d %H:%M:%S}Z)"
             for b in result.deleted]
    lines += [f"{verb} unfinished upload {t.key} ({t.size} bytes)" for t in result.temporary]
    forget = "would forget" if result.dry_run else "forgot"
    lines += [f"{forget} {h} (known, but its object is gone)" for h in result.forgotten]
    hours = grace / 3600
    lines.append(
        f"{verb} {len(result.deleted)} unreferenced blob(s), {result.freed_bytes} bytes; "
        f"kept {result.referenced} referenced and {len(result.spared)} newer than "
        f"{hours:g} h"
    )
    return lines
