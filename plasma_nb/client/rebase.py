"""Rebase: bring a pull's changes into the replica under the pending mutations.

In one write transaction: undo the pending mutations, apply the patch (patch.py),
drop the outbox entries the pull confirms (recording their verdicts), and replay
the rest in order, each from its trace while the trace's reads agree (trace.py).
Subscribers then get one net change, so a row that the server and a pending
mutation both set to the same value does not flicker.

A pending mutation that now raises ``MutationError`` on replay keeps its place
in the outbox (the server will reject it too and say why); only its local
effect is skipped.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..core.errors import MutationError
from ..core.mutators import Context, Mutators
from ..core.protocol import PullResponse
from . import outbox, undo
from .change import Change
from .outbox import Entry, Verdict
from .outcome import Outcome
from .patch import apply_patch
from .replica import Replica, Write
from .trace import DIRTY, OK, Op, Trace
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


def replay(
    w: Write, replica: Replica, mutators: Mutators, entries: Iterable[Entry], ctx: Context,
    traces: dict[int, Trace] | None = None,
) -> list[int]:
    """Run pending entries again, in order, and log the pre-images of what they changed;
    return the seqs whose mutator raised (their effect is skipped).

    ``traces`` (by seq) lets an entry replay as the statements it ran last time while its
    reads agree (trace.py); it is updated with the runs made here.
    """
    entries = list(entries)
    w.segment(1)
    conn = w.conn
    conn.execute("SAVEPOINT plasma_replay_all")
    try:
        skipped = _replay(conn, replica, mutators, entries, ctx, traces)
    except _Dirty:
        # A trace disagreed after it wrote: start over, running every mutator.
        conn.execute("ROLLBACK TO plasma_replay_all")
        skipped = _replay(conn, replica, mutators, entries, ctx, traces, use_traces=False)
    conn.execute("RELEASE plasma_replay_all")
    undo.record(w, 1, replica.user_tables)
    return skipped


class _Dirty(Exception):
    pass


def _replay(
    conn: sqlite3.Connection, replica: Replica, mutators: Mutators, entries: list[Entry],
    ctx: Context, traces: dict[int, Trace] | None, *, use_traces: bool = True,
) -> list[int]:
    skipped = []
    user = ctx.user
    cursor = conn.cursor()  # one for every trace: a cursor per statement costs
    for entry in entries:
        seq = entry.seq
        if use_traces and traces is not None:
            trace = traces.get(seq)
            if trace is not None and trace.runs(entry.name, entry.args_json, entry.timestamp,
                                                user):
                outcome = trace.replay(cursor)
                if outcome == OK:
                    if trace.failed:
                        skipped.append(seq)
                    continue
                if outcome == DIRTY:
                    raise _Dirty
                # STALE: nothing written yet; run the mutator on what is there now.
        ops: list[Op] | None = [] if traces is not None else None
        # A bare savepoint per entry (not Write.savepoint): this loop runs a thousand
        # times in a big rebase.
        conn.execute("SAVEPOINT plasma_replay")
        try:
            run_mutator(
                conn, replica.dialect, mutators, entry.name, entry.args,
                ctx=ctx, timestamp=entry.timestamp, trace=ops,
            )
        except BaseException as exc:
            conn.execute("ROLLBACK TO plasma_replay")
            conn.execute("RELEASE plasma_replay")
            if not isinstance(exc, Exception):
                raise
            skipped.append(seq)
            if traces is not None:
                failed = Trace(entry.name, entry.args_json, entry.timestamp, user,
                               tuple(ops or ()), failed=True)
                if isinstance(exc, MutationError) and not failed.wrote:
                    traces[seq] = failed
                else:
                    traces.pop(seq, None)
            if not isinstance(exc, MutationError):
                # Not the user's rejection but a bug or a mutator this process lacks:
                # the server decides; locally the entry just has no effect.
                logger.warning("replaying mutation %r (seq %d) failed", entry.name,
                               seq, exc_info=True)
            continue
        conn.execute("RELEASE plasma_replay")
        if traces is not None:
            traces[seq] = Trace(entry.name, entry.args_json, entry.timestamp, user,
                                tuple(ops or ()))
    return skipped


def rebase(
    replica: Replica, mutators: Mutators, response: PullResponse, *, group_id: str,
    request_cookie: int | None, now_ms: int, traces: dict[int, Trace] | None = None,
) -> RebaseResult:
    """Apply ``response`` (the answer to a pull sent with ``request_cookie``);
    ``traces`` are the pending entries' traces by seq (trace.py), kept up to date."""
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
            # With nothing pending, nothing but the patch writes the user's tables: a big
            # patch can then work out the net change itself, unless the shadow tables
            # must hold it (storage records, other processes' watchers).
            direct = not pending and not replica.storage.needs_records and not (
                replica.journal is not None and replica.journal.others
            )
            applied = apply_patch(w, replica, response.patch, direct=direct)
            w.add_change(applied.change)
            result.verdicts = outbox.confirm(w, covered, response.mutation_errors, now_ms)
            done = {v.seq for v in result.verdicts}
            remaining = [e for e in pending if e.seq not in done]
            if remaining and not applied.cleared:
                undo.forget(w, replica, applied.keys)
            else:
                undo.clear(w, replica)
            ctx = Context(user=w.get_meta("user"))
            result.skipped = replay(w, replica, mutators, remaining, ctx, traces)
            if traces is not None:
                kept = {e.seq for e in remaining}
                for seq in [s for s in traces if s not in kept]:
                    del traces[seq]
        w.set_meta("cookie", response.cookie)
    result.change = w.change
    result.durable = w.durable
    return result
