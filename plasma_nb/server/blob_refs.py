"""Blob references in pushes: a row may store a blob's hash only once the server has the blob.

``process_push`` (push.py) wraps each mutation's ``tx`` in a ``BlobGuard`` when the
schema has blob columns. Before an insert, upsert or update that stores hashes in
blob columns, the guard asks the push session which of them are not known blobs
(``_plasma_blobs``, in the push's own transaction). If one is missing, the
mutation is undone and the push stops there with ``MissingBlob`` (409 naming the
hash): the mutations before it stay applied, the client uploads the blob and
pushes again. A mutator that catches the error and carries on is stopped all the
same.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..core.errors import Conflict
from ..core.mutators import Transaction
from ..core.protocol import Mutation
from ..core.query import Delete, Insert, Select, Update
from ..core.schema import ColumnType, Schema

if TYPE_CHECKING:
    from .push import PushSession

__all__ = ["BlobGuard", "MissingBlob", "blob_columns", "guard_blobs"]


class MissingBlob(Conflict):
    """A mutation stores the hash of a blob the server does not have (409)."""

    error = "MissingBlob"

    def __init__(self, hash: str, mutation: Mutation) -> None:
        self.hash = hash
        self.client_id = mutation.client_id
        self.mutation_id = mutation.id
        super().__init__(
            f"mutation {mutation.id} of client {mutation.client_id!r} stores blob {hash}, "
            f"which the server does not have: upload it (PUT /sync/blob/{hash}), then push "
            "again"
        )

    @property
    def details(self) -> Mapping[str, Any]:
        """Extra fields of the 409 answer, for clients that upload and retry."""
        return {"hash": self.hash, "clientID": self.client_id, "id": self.mutation_id}


_columns_cache: dict[int, tuple[Schema, dict[str, frozenset[str]]]] = {}


def blob_columns(schema: Schema) -> dict[str, frozenset[str]]:
    """The blob columns of each table that has any."""
    cached = _columns_cache.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    found = {
        t._name: frozenset(c.name for c in t if c.type is ColumnType.BLOB) for t in schema
    }
    columns = {name: cols for name, cols in found.items() if cols}
    _columns_cache[id(schema)] = (schema, columns)
    return columns


class BlobGuard(Transaction):
    """A mutation's ``tx`` that checks blob references before each write."""

    location = "server"

    def __init__(self, inner: Transaction, session: PushSession, mutation: Mutation,
                 columns: Mapping[str, frozenset[str]]) -> None:
        super().__init__(ctx=inner.ctx, timestamp=inner.timestamp,
                         mutation_name=inner.mutation_name)
        self._inner = inner
        self._session = session
        self._mutation = mutation
        self._columns = columns
        #: Set when a write referenced a blob the server does not have.
        self.missing: MissingBlob | None = None

    def __getattr__(self, name: str) -> Any:
        # Anything else a backend's transaction offers (called only for missing names).
        return getattr(self._inner, name)

    async def _write(self, stmt: Insert | Update | Delete) -> int:
        names = self._columns.get(stmt.table._name)
        if names and not isinstance(stmt, Delete):
            values = stmt.row if isinstance(stmt, Insert) else stmt.values
            hashes = [v for k, v in values.items() if k in names and isinstance(v, str)]
            if hashes:
                missing = await self._session.missing_blobs(hashes)
                if missing:
                    self.missing = MissingBlob(missing[0], self._mutation)
                    raise self.missing
        return await self._inner._write(stmt)

    async def _read(self, stmt: Select) -> list[dict[str, Any]]:
        return await self._inner._read(stmt)


def guard_blobs(tx: Transaction, session: PushSession, mutation: Mutation,
                schema: Schema) -> Transaction:
    """``tx`` wrapped in a ``BlobGuard`` if the schema has blob columns and the session
    checks blobs; else ``tx`` itself."""
    columns = blob_columns(schema)
    if not columns or not session.checks_blobs:
        return tx
    return BlobGuard(tx, session, mutation, columns)
