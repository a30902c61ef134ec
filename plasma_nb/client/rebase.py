"""Rebase: bring a pull's changes into the replica under the pending mutations.

In one write transaction: undo the pending mutations, apply the patch, drop the
outbox entries the pull confirms (recording their verdicts), and replay the
rest in order. Subscribers then get one net change, so a row that the server
and a pending mutation both set to the same value does not flicker.

A pending mutation that now raises ``MutationError`` on replay keeps its place
in the outbox (the server will reject it too and say why); only its local
effect is skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import MutationError, ProtocolError
from ..core.mutators import Context, Mutators
from ..core.protocol import ClearOp, DelOp, PatchOp, PullResponse, PutOp, split_key
from . import outbox, undo
from .change import Change
from .layout import TableInfo
from .outbox import Entry, Verdict
from .outcome import Outcome
from .replica import Replica, Write
from .transaction import run_mutator

__all__ = ["RebaseResult", "apply_patch", "rebase", "replay"]

logger = logging.getLogger("plasma_nb.client")


@dataclass
class RebaseResult:
    """What a rebase did. ``applied`` is False when the response was stale (the
    cookie or the client group changed since the request) and was dropped."""

    applied: bool
    change: Change = field(default_factory=Change)
    durable: Outcome[None] = field(default_factory=Outcome)
    verdicts: list[Verdict] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)


def apply_patch(w: Write, replica: Replica, patch: Sequence[PatchOp]) -> None:
    """Apply a patch's operations in order. Consecutive puts (and dels) of one table go
    to SQLite in one ``executemany``: a snapshot is thousands of them."""
    batch = _Batch(w)
    for index, op in enumerate(patch):
        if isinstance(op, ClearOp):
            batch.flush()
            for info in replica.user_tables:
                w.conn.execute(f"DELETE FROM {info.quoted}")
            continue
        name, pk_text = split_key(op.key, field=f"patch[{index}].key")
        t = replica.tables.get(name)
        if t is None or t.declared is None:
            # A table this client's schema does not have (a newer server): not ours to show.
            continue
        if isinstance(op, DelOp):
            pk = _pk(t, pk_text, index, op.key)
            batch.add(f'DELETE FROM {t.quoted} WHERE "{t.key[0]}" = ?', (pk,))
            continue
        assert isinstance(op, PutOp)
        fast = replica.wire_decoder(name)(op.value, pk_text)
        if fast is not None:
            batch.add(_full_upsert(t), fast)
            continue
        # The slow path names what is wrong, and takes rows with missing or extra columns.
        pk = _pk(t, pk_text, index, op.key)
        declared = t.declared
        known = {n: v for n, v in op.value.items() if n in declared._columns}
        try:
            row = declared._row_from_wire(known)
        except MutationError as exc:
            raise ProtocolError(f"patch[{index}]", f"{op.key}: {exc.message}") from None
        row[t.key[0]] = pk
        columns = declared._columns
        stored = {n: replica.dialect.to_db(columns[n].type, v) for n, v in row.items()}
        batch.add(undo.upsert_sql(t, tuple(stored)), tuple(stored.values()))
    batch.flush()


class _Batch:
    """Runs of one statement with different parameters, sent with ``executemany``."""

    def __init__(self, w: Write) -> None:
        self._w = w
        self._sql: str | None = None
        self._params: list[tuple[Any, ...]] = []

    def add(self, sql: str, params: tuple[Any, ...]) -> None:
        if sql != self._sql:
            self.flush()
            self._sql = sql
        self._params.append(params)

    def flush(self) -> None:
        if self._sql is not None and self._params:
            self._w.conn.executemany(self._sql, self._params)
        self._sql = None
        self._params = []


def _pk(t: TableInfo, text: str, index: int, key: str) -> Any:
    assert t.declared is not None
    try:
        return t.declared._pk_from_text(text)
    except MutationError as exc:
        raise ProtocolError(f"patch[{index}]", f"{key}: {exc.message}") from None


def _full_upsert(t: TableInfo) -> str:
    return undo.upsert_sql(t, t.columns)


def replay(
    w: Write, replica: Replica, mutators: Mutators, entries: Iterable[Entry], ctx: Context,
) -> list[int]:
    """Run pending entries again, in order, and log the pre-images of what they changed;
    return the seqs whose mutator raised (their effect is skipped)."""
    skipped = []
    w.segment(1)
    conn = w.conn
    for entry in entries:
        # A bare savepoint per entry (not Write.savepoint): this loop runs a thousand
        # times in a big rebase.
        conn.execute("SAVEPOINT plasma_replay")
        try:
            run_mutator(
                conn, replica.dialect, mutators, entry.name, entry.args,
                ctx=ctx, timestamp=entry.timestamp,
            )
        except BaseException as exc:
            conn.execute("ROLLBACK TO plasma_replay")
            conn.execute("RELEASE plasma_replay")
            if not isinstance(exc, Exception):
                raise
            skipped.append(entry.seq)
            if not isinstance(exc, MutationError):
                # Not the user's rejection but a bug or a mutator this process lacks:
                # the server decides; locally the entry just has no effect.
                logger.warning("replaying mutation %r (seq %d) failed", entry.name,
                               entry.seq, exc_info=True)
            continue
        conn.execute("RELEASE plasma_replay")
    undo.record(w, 1, replica.user_tables)
    return skipped


def rebase(
    replica: Replica, mutators: Mutators, response: PullResponse, *, group_id: str,
    request_cookie: int | None, now_ms: int,
) -> RebaseResult:
    """Apply ``response`` (the answer to a pull sent with ``request_cookie``)."""
    result = RebaseResult(applied=False)
    with replica.write() as w:
        if (w.get_meta("client_group_id") != group_id
                or w.get_meta("cookie") != request_cookie):
            # Another process (or an earlier response) moved the replica on meanwhile.
            return result
        result.applied = True
        lmc = response.last_mutation_id_changes
        pending = outbox.entries(w.conn)
        covered = [e for e in pending if lmc.get(e.client_id, 0) >= e.mutation_id]
        if response.patch or covered:
            # Segment 0's pre-images only serve the net change; the undo log is rebuilt
            # from the replay's segment. Unwatched, a 10k-row patch skips the triggers.
            w.segment(0, active=replica.needs_capture)
            undo.restore(w, replica)
            apply_patch(w, replica, response.patch)
            undo.clear(w, replica)
            result.verdicts = outbox.confirm(w, covered, response.mutation_errors, now_ms)
            done = {v.seq for v in result.verdicts}
            ctx = Context(user=w.get_meta("user"))
            remaining = [e for e in pending if e.seq not in done]
            result.skipped = replay(w, replica, mutators, remaining, ctx)
        w.set_meta("cookie", response.cookie)
    result.change = w.change
    result.durable = w.durable
    return result
