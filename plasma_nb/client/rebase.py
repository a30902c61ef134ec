"""Rebase: bring a pull's changes into the replica under the pending mutations.

In one write transaction: undo the pending mutations, apply the patch (patch.py),
drop the outbox entries the pull confirms (recording their verdicts), and replay
the rest in order, each from its trace while the trace's reads agree (trace.py).
Subscribers then get one net change, so a row that the server and a pending
mutation both set to the same value does not flicker.

A pending mutation that now raises ``MutationError`` on replay keeps its place
in the outbox (the server will reject it too and say why); only its local
effect is skipped.

Two shortcuts end in the same state, undo log and net change as that long way:

- a patch that none of the pending mutations depends on (no row or table their
  traces read or wrote), confirming none of them, is applied alone (``_unaffected``);
- a long outbox replays with the capture triggers dropped, the rows its traces
  write recorded beforehand in bulk (``_replay_untriggered``).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import MutationError
from ..core.mutators import Context, Mutators
from ..core.protocol import PatchOp, PullResponse
from . import outbox, undo
from .change import Change
from .outbox import Entry, Verdict
from .outcome import Outcome
from .patch import apply_patch, patch_rows
from .replica import Replica, Write
from .trace import DIRTY, OK, Op, Trace
from .transaction import run_mutator

__all__ = ["RebaseResult", "apply_patch", "rebase", "replay"]

logger = logging.getLogger("plasma_nb.client")

#: From this many pending entries on, a replay from traces runs without the capture
#: triggers (``_replay_untriggered``). A trigger costs a few microseconds a write;
#: dropping and recreating them costs about half a millisecond, most of it in SQLite
#: preparing again the statements compiled with them. They break even near 200.
BULK_REPLAY = 256


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
        done = 0
        skipped: list[int] = []
        if traces is not None and len(entries) >= BULK_REPLAY:
            done, skipped = _replay_untriggered(w, replica, mutators, entries, ctx, traces)
        skipped += _replay(conn, replica, mutators, entries[done:], ctx, traces)
    except _Dirty:
        # A trace disagreed after it wrote: start over, running every mutator.
        conn.execute("ROLLBACK TO plasma_replay_all")
        skipped = _replay(conn, replica, mutators, entries, ctx, traces, use_traces=False)
    conn.execute("RELEASE plasma_replay_all")
    undo.record(w, 1, replica.user_tables)
    return skipped


class _Dirty(Exception):
    pass


def _replay_untriggered(
    w: Write, replica: Replica, mutators: Mutators, entries: list[Entry], ctx: Context,
    traces: dict[int, Trace],
) -> tuple[int, list[int]]:
    """Replay the leading entries whose traces say which rows they write, with the
    capture triggers of those tables dropped; return how many entries it replayed (the
    rest go the usual way) and the seqs skipped.

    The pre-images the triggers would record are recorded first, one statement a table
    for all the rows the traces name (less those nothing would read: rows the undo log
    has, and, for the net change, an earlier segment too). An entry whose reads now
    disagree runs its mutator: if that run writes rows not recorded yet, it is rolled
    back, their pre-images are recorded, and its new trace replays. Rows recorded but not
    written after all are forgotten at the end: the undo log and the net change end as
    the triggers would have left them.

    Raises ``_Dirty`` like ``_replay``; the caller's savepoint then takes back the
    recorded pre-images and the dropped triggers too.
    """
    keys = replica.key_types
    user = ctx.user
    plan: list[Trace] = []
    recorded: dict[str, set[Any]] = {}
    for entry in entries:
        trace = traces.get(entry.seq)
        if trace is None or not trace.runs(entry.name, entry.args_json, entry.timestamp, user):
            break
        touched = trace.touched(keys)
        if touched is None:
            break
        for table, key in touched:
            if table in recorded:
                recorded[table].add(key)
            else:
                recorded[table] = {key}
        plan.append(trace)
    if not plan or len(plan) < BULK_REPLAY:
        return 0, []
    conn = w.conn
    watched = replica.needs_capture
    for table, wanted in recorded.items():
        undo.record_pre_images(w, replica.tables[table], wanted, watched=watched)
    skipped: list[int] = []
    done = len(plan)
    dropped: set[tuple[str, Any]] = set()  # recorded for a write that did not happen
    capture = replica._capture
    assert capture is not None
    with capture.bypassed(list(recorded)):
        cursor = conn.cursor()
        for index, trace in enumerate(plan):
            outcome = trace.replay(cursor)
            if outcome == OK:
                if trace.failed:
                    skipped.append(entries[index].seq)
                continue
            if outcome == DIRTY:
                raise _Dirty
            # STALE: nothing written yet; run the mutator on what is there now.
            entry = entries[index]
            planned = set(trace.touched(keys) or ())
            ops = _run(conn, replica, mutators, entry, ctx, traces, skipped)
            if ops is None:
                dropped |= planned  # it raised: rolled back, skipped
                continue
            fresh = Trace(entry.name, entry.args_json, entry.timestamp, user, tuple(ops))
            touched = fresh.touched(keys)
            if touched is None or not _note_writes(w, replica, fresh, touched, recorded,
                                                   cursor):
                # Its rows are not known ahead: it and the rest run under the triggers.
                conn.execute("ROLLBACK TO plasma_replay")
                conn.execute("RELEASE plasma_replay")
                done = index
                for later in plan[index:]:
                    dropped.update(later.touched(keys) or ())
                break
            conn.execute("RELEASE plasma_replay")
            traces[entry.seq] = fresh
            dropped |= planned.difference(touched)
    if dropped:
        # Unless another entry wrote them, forget them: the capture then holds what the
        # triggers would have recorded (and the triggers record the rest, if written).
        for entry in entries[:done]:
            trace = traces.get(entry.seq)  # as run now; none if it raised after writing
            if trace is not None:
                dropped.difference_update(trace.touched(keys) or ())
        unused: dict[str, list[Any]] = {}
        for table, key in dropped:
            unused.setdefault(table, []).append(key)
        for table, lost in unused.items():
            undo.forget_pre_images(w, replica.tables[table], 1, lost)
    return done, skipped


def _note_writes(
    w: Write, replica: Replica, fresh: Trace, touched: list[tuple[str, Any]],
    recorded: dict[str, set[Any]], cursor: sqlite3.Cursor,
) -> bool:
    """After a mutator's run in savepoint ``plasma_replay`` with the triggers dropped:
    make sure the pre-images of the rows it wrote are recorded. If some are not, the run
    is rolled back, they are recorded, and its trace replays. False if that fails."""
    new: dict[str, set[Any]] = {}
    for table, key in touched:
        if key not in recorded.get(table, ()):
            new.setdefault(table, set()).add(key)
    if not new:
        return True
    w.conn.execute("ROLLBACK TO plasma_replay")
    for table, wanted in new.items():
        undo.record_pre_images(w, replica.tables[table], wanted,
                               watched=replica.needs_capture)
        recorded.setdefault(table, set()).update(wanted)
    return fresh.replay(cursor) == OK


def _run(
    conn: sqlite3.Connection, replica: Replica, mutators: Mutators, entry: Entry,
    ctx: Context, traces: dict[int, Trace] | None, skipped: list[int],
) -> list[Op] | None:
    """Run ``entry``'s mutator in savepoint ``plasma_replay`` and return the statements it
    ran (empty without ``traces``), leaving the savepoint to the caller. If it raises, its
    writes are rolled back, its seq joins ``skipped`` and None is returned."""
    ops: list[Op] | None = [] if traces is not None else None
    # A bare savepoint per entry (not Write.savepoint): this runs a thousand times in a
    # big rebase.
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
        seq = entry.seq
        skipped.append(seq)
        if traces is not None:
            failed = Trace(entry.name, entry.args_json, entry.timestamp, ctx.user,
                           tuple(ops or ()), failed=True)
            if isinstance(exc, MutationError) and not failed.wrote:
                traces[seq] = failed
            else:
                traces.pop(seq, None)
        if not isinstance(exc, MutationError):
            # Not the user's rejection but a bug or a mutator this process lacks: the
            # server decides; locally the entry just has no effect.
            logger.warning("replaying mutation %r (seq %d) failed", entry.name, seq,
                           exc_info=True)
        return None
    return ops if ops is not None else []


def _replay(
    conn: sqlite3.Connection, replica: Replica, mutators: Mutators, entries: list[Entry],
    ctx: Context, traces: dict[int, Trace] | None, *, use_traces: bool = True,
) -> list[int]:
    skipped: list[int] = []
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
        ops = _run(conn, replica, mutators, entry, ctx, traces, skipped)
        if ops is None:
            continue
        conn.execute("RELEASE plasma_replay")
        if traces is not None:
            traces[seq] = Trace(entry.name, entry.args_json, entry.timestamp, user,
                                tuple(ops))
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
        user = w.get_meta("user")
        # Whether this process's traces describe how the replica came to be: only if
        # the last rebase was its own (another process's or tab's moved the cookie).
        # Unknown until this one commits: a rollback leaves traces of runs undone.
        traced = traces is not None and replica.traced_cookie == (request_cookie,)
        replica.traced_cookie = None
        if (traced and pending and response.patch and not covered
                and _unaffected(replica, response.patch, pending, traces, user)):
            # Undoing, patching and replaying would end where patching alone does.
            w.segment(0, active=replica.needs_capture)
            direct = not replica.storage.needs_records and not (
                replica.journal is not None and replica.journal.others
            )
            applied = apply_patch(w, replica, response.patch, direct=direct)
            w.add_change(applied.change)
            # The undo log may still hold pre-images of the patched rows (left by entries
            # confirmed earlier): the patch moved those rows' base, so they go.
            undo.forget(w, replica, applied.keys)
            assert traces is not None
            result.skipped = [e.seq for e in pending if traces[e.seq].failed]
        elif response.patch or covered:
            # Segment 0's pre-images only serve the net change; the undo log is rebuilt
            # from the replay's segment. Unwatched, a 10k-row patch skips the triggers.
            w.segment(0, active=replica.needs_capture)
            undo.restore(w, replica, bulk=len(pending) >= BULK_REPLAY)
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
            ctx = Context(user=user)
            result.skipped = replay(w, replica, mutators, remaining, ctx, traces)
            traced = traces is not None
            if traces is not None:
                kept = {e.seq for e in remaining}
                for seq in [s for s in traces if s not in kept]:
                    del traces[seq]
        w.set_meta("cookie", response.cookie)
    if traced:
        replica.traced_cookie = (response.cookie,)
    result.change = w.change
    result.durable = w.durable
    return result


def _unaffected(
    replica: Replica, patch: Sequence[PatchOp], pending: list[Entry],
    traces: dict[int, Trace] | None, user: str | None,
) -> bool:
    """Whether ``patch`` leaves every pending entry's run as it is: no row or table that
    a run read or wrote (its trace's footprint) is one the patch writes. Replaying them
    on the patched base would then issue the same statements with the same results, so
    undo, patch and replay end where the patch alone ends. Conservative: an entry
    without a trace, or whose trace cannot say what it depends on, means no."""
    if traces is None or len(patch) > 8 * len(pending):
        return False  # checking a big patch key by key costs more than the replay
    rows = patch_rows(replica, patch)
    if rows is None:
        return False
    tables = {table for table, _ in rows}
    keys = replica.key_types
    for entry in pending:
        trace = traces.get(entry.seq)
        if trace is None or not trace.runs(entry.name, entry.args_json, entry.timestamp, user):
            return False
        footprint = trace.footprint(keys)
        if (footprint is None or not footprint[1].isdisjoint(tables)
                or not footprint[0].isdisjoint(rows)):
            return False
    return True
