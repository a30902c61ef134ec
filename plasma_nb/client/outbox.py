"""The outbox: mutations applied locally and not yet confirmed by a pull.

Entries are ordered by ``seq``, the local order in which they were applied; that
is the order they are replayed and pushed in. An entry leaves the outbox only
when a pull's ``lastMutationIDChanges`` covers it; the server's verdict is then
kept in ``_plasma_verdicts`` so that the handle, in whichever process made it,
learns the outcome.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import starmap
from typing import Any

from ..core.protocol import Mutation, MutationErrorInfo
from .replica import Write

__all__ = ["Entry", "Verdict", "append", "confirm", "count", "entries", "note_errors",
           "prune_verdicts", "renumber", "verdicts"]

#: Verdicts older than this are dropped; a handle whose process slept longer
#: reports its mutation as confirmed without an error message.
VERDICT_TTL_MS = 7 * 24 * 3600 * 1000


@dataclass(slots=True)
class Entry:
    """One outbox entry. Not frozen: a rebase reads a thousand of them, and a frozen
    dataclass pays a call per field to build one."""

    seq: int
    client_id: str
    mutation_id: int
    name: str
    args_json: str  # as stored; parsed on first use (a trace replay needs no args)
    timestamp: float
    error: str | None = None
    _args: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def args(self) -> dict[str, Any]:
        if self._args is None:
            self._args = json.loads(self.args_json)
        return self._args

    def to_mutation(self) -> Mutation:
        return Mutation(self.client_id, self.mutation_id, self.name, self.args, self.timestamp)


@dataclass(frozen=True)
class Verdict:
    """The server's word on one mutation: ``error`` is None when it was applied."""

    seq: int
    client_id: str
    mutation_id: int
    name: str
    error: str | None


_COLUMNS = "seq, client_id, mutation_id, name, args, timestamp, error"


def append(
    w: Write, client_id: str, mutation_id: int, name: str, args_json: str, timestamp: float
) -> int:
    seq = int(w.get_meta("next_seq", 1))
    w.set_meta("next_seq", seq + 1)
    w.conn.execute(
        f"INSERT INTO _plasma_outbox ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, NULL)",
        (seq, client_id, mutation_id, name, args_json, timestamp),
    )
    return seq


def entries(conn: sqlite3.Connection, limit: int | None = None) -> list[Entry]:
    sql = f"SELECT {_COLUMNS} FROM _plasma_outbox ORDER BY seq"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return list(starmap(Entry, conn.execute(sql)))  # Entry's fields are the columns


def count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM _plasma_outbox").fetchone()[0])


def note_errors(w: Write, errors: Iterable[MutationErrorInfo]) -> None:
    """Remember rejections a push reported, until a pull confirms those entries."""
    w.conn.executemany(
        "UPDATE _plasma_outbox SET error = ? WHERE client_id = ? AND mutation_id = ?",
        [(e.message, e.client_id, e.id) for e in errors],
    )


def confirm(
    w: Write, covered: Iterable[Entry], errors: Iterable[MutationErrorInfo], now_ms: int,
) -> list[Verdict]:
    """Drop the entries a pull covers (by its last mutation ids) and record their
    verdicts: the pull's error for it, else the one its push reported, else None."""
    messages = {(e.client_id, e.id): e.message for e in errors}
    verdicts = [
        Verdict(e.seq, e.client_id, e.mutation_id, e.name,
                messages.get((e.client_id, e.mutation_id), e.error))
        for e in covered
    ]
    w.conn.executemany(
        "INSERT OR REPLACE INTO _plasma_verdicts "
        "(seq, client_id, mutation_id, name, error, at) VALUES (?, ?, ?, ?, ?, ?)",
        [(v.seq, v.client_id, v.mutation_id, v.name, v.error, now_ms) for v in verdicts],
    )
    w.conn.executemany(
        "DELETE FROM _plasma_outbox WHERE seq = ?", [(v.seq,) for v in verdicts]
    )
    return verdicts


def verdicts(conn: sqlite3.Connection, seqs: Iterable[int]) -> dict[int, str | None]:
    """The recorded verdicts among ``seqs``: seq -> error message or None."""
    wanted = list(seqs)
    found: dict[int, str | None] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start:start + 500]
        marks = ", ".join("?" for _ in chunk)
        for seq, error in conn.execute(
            f"SELECT seq, error FROM _plasma_verdicts WHERE seq IN ({marks})", chunk
        ):
            found[seq] = error
    return found


def prune_verdicts(w: Write, now_ms: int) -> None:
    w.conn.execute("DELETE FROM _plasma_verdicts WHERE at < ?", (now_ms - VERDICT_TTL_MS,))


def renumber(w: Write, client_id: str) -> int:
    """Give every entry to ``client_id``, numbered from 1 in local order (after the
    server lost the group); return the next mutation id."""
    number = 0
    for number, entry in enumerate(entries(w.conn), start=1):
        w.conn.execute(
            "UPDATE _plasma_outbox SET client_id = ?, mutation_id = ?, error = NULL "
            "WHERE seq = ?",
            (client_id, number, entry.seq),
        )
    return number + 1
