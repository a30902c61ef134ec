"""The client's ``tx``: mutators run synchronously against the replica.

Every operation executes SQL on the replica's connection and completes without
suspending, so ``core.drive`` runs a mutator's coroutine to its end inside the
caller's write transaction; a mutator that awaits anything else is refused by
``drive`` with an error naming it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any, Literal

from ..core.dialect import SQLiteDialect, integrity_message
from ..core.errors import MutationError
from ..core.mutators import Context, Mutators, Transaction, drive
from ..core.query import Delete, Insert, Select, Update
from .trace import READ, WRITE, Op

__all__ = ["ClientTransaction", "run_mutator"]


class ClientTransaction(Transaction):
    location: Literal["client", "server"] = "client"

    def __init__(
        self, conn: sqlite3.Connection, dialect: SQLiteDialect, *, ctx: Context,
        timestamp: float, mutation_name: str = "", trace: list[Op] | None = None,
    ) -> None:
        super().__init__(ctx=ctx, timestamp=timestamp, mutation_name=mutation_name)
        self._conn = conn
        self._dialect = dialect
        self._trace = trace  # each statement and its result is appended (trace.py)

    async def _write(self, stmt: Insert | Update | Delete) -> int:
        compiled = self._dialect.compile(stmt, {"user": self.ctx.user})
        params = tuple(compiled.params)
        try:
            count: int = self._conn.execute(compiled.sql, params).rowcount
        except sqlite3.IntegrityError as exc:
            if self._trace is not None:
                self._trace.append((WRITE, compiled.sql, params, str(exc)))
            raise MutationError(integrity_message(stmt, exc)) from None
        if self._trace is not None:
            self._trace.append((WRITE, compiled.sql, params, count))
        return count

    async def _read(self, stmt: Select) -> list[dict[str, Any]]:
        compiled = self._dialect.compile(stmt, {"user": self.ctx.user})
        decode = compiled.decode
        assert decode is not None
        params = tuple(compiled.params)
        rows = self._conn.execute(compiled.sql, params).fetchall()
        if self._trace is not None:
            self._trace.append((READ, compiled.sql, params, rows))
        return [decode(row) for row in rows]




def run_mutator(
    conn: sqlite3.Connection, dialect: SQLiteDialect, mutators: Mutators, name: str,
    args: Mapping[str, Any], *, ctx: Context, timestamp: float,
    trace: list[Op] | None = None,
) -> Any:
    """Run mutator ``name`` on ``conn`` to its end (in the caller's transaction);
    ``trace`` collects the statements it ran (trace.py).

    Raises what the mutator raises: ``MutationError`` to reject, ``MutatorError``
    for bad arguments or a mutator that awaits something but ``tx``.
    """
    tx = ClientTransaction(conn, dialect, ctx=ctx, timestamp=timestamp, mutation_name=name,
                           trace=trace)
    return drive(mutators.start(tx, name, args), name)
