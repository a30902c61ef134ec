"""Traces: replaying a pending mutation as the SQL it ran, while its reads still agree.

A mutator is deterministic (DESIGN.md section 3): given the same arguments, context
and reads, it issues the same statements. So a rebase need not run a pending mutator
again to replay it: it can run again the statements the mutator issued last time,
checking that every read returns the same rows and every write the same row count (or
the same integrity error) as then. If all agree, running the mutator would have done
exactly this, without building and compiling its statements in Python again.

- A read that disagrees before the trace wrote anything leaves nothing to undo: the
  mutator runs instead (``STALE``).
- A read or write count that disagrees after a write (``DIRTY``): the replay of every
  entry starts over the slow way, from a savepoint taken before the first.

A mutator that raised ``MutationError`` before writing anything keeps a trace of its
reads: while they agree, it fails again, and nothing needs undoing. Traces live in
memory, per process: an entry queued by another process, or by an earlier session, is
run once, then traced.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["DIRTY", "OK", "READ", "STALE", "WRITE", "Op", "Trace"]

READ: Literal[0] = 0
WRITE: Literal[1] = 1

# (READ, sql, params, rows) or (WRITE, sql, params, row count or integrity error text)
Op = tuple[int, str, tuple[Any, ...], Any]

OK, STALE, DIRTY = "ok", "stale", "dirty"


@dataclass(frozen=True, slots=True)
class Trace:
    """The statements one run of a mutator issued, and what they returned."""

    name: str  # the mutator, its arguments (as stored in the outbox) and timestamp:
    args_json: str  # what the trace is a run of, checked before it stands in for one
    timestamp: float
    user: str | None  # tx.ctx.user during that run: statements may depend on it
    ops: tuple[Op, ...]
    failed: bool = False  # it raised MutationError (and wrote nothing)

    def runs(self, name: str, args_json: str, timestamp: float, user: str | None) -> bool:
        """Whether this is a run of that mutation, as ``user``."""
        return (self.args_json == args_json and self.name == name
                and self.timestamp == timestamp and self.user == user)

    @property
    def wrote(self) -> bool:
        return any(op[0] == WRITE for op in self.ops)

    def replay(self, cursor: sqlite3.Cursor) -> str:
        """Run the statements again: ``OK``, ``STALE`` or ``DIRTY`` (see the module)."""
        written = False
        execute = cursor.execute
        for kind, sql, params, expected in self.ops:
            if kind == READ:
                if execute(sql, params).fetchall() != expected:
                    return DIRTY if written else STALE
                continue
            written = True
            try:
                outcome: Any = execute(sql, params).rowcount
            except sqlite3.IntegrityError as exc:
                outcome = str(exc)
            if outcome != expected:
                return DIRTY
        return OK
