"""The rebase's two shortcuts, against the long way round (plasma_nb/client/rebase.py).

- A patch that no pending mutation depends on (no row or table its trace read or wrote)
  is applied alone: undoing and replaying them would end in the same place.
- A long outbox replays from its traces with the capture triggers dropped, the
  pre-images recorded in bulk, re-running and re-recording where a read changed.

Each case runs twice, once the long way (no traces: every mutator runs again under the
triggers) as the reference, and must end with the same rows, undo log, outbox, verdicts
and net change; and each says which way it expects the rebase to take.
"""

from __future__ import annotations

from typing import Any

import pytest

from plasma_nb import MutationError, Mutators, Schema, col, table
from plasma_nb.client import rebase as rebase_module
from plasma_nb.client.change import Change
from plasma_nb.client.replica import Replica
from plasma_nb.client.storage import MemoryStorage, SQLiteStorage
from plasma_nb.client.storage.base import Storage
from plasma_nb.client.synchronizer import Synchronizer
from plasma_nb.core.protocol import DelOp, PatchOp, PullResponse, PutOp

notes = table("notes", id=col.id(), text=col.text())
schema = Schema([notes], version="1")
mutators = Mutators(schema)


@mutators.register
async def write(tx: Any, *, id: str, text: str) -> None:
    await tx.upsert(notes).values(id=id, text=text)


@mutators.register
async def route(tx: Any, *, src: str) -> None:
    """Writes the note whose id is note ``src``'s text: which row depends on a read."""
    row = await tx.get(notes, src)
    if row is None:
        raise MutationError(f"no note {src!r}")
    await tx.upsert(notes).values(id=row["text"], text=f"from {src}")


@mutators.register
async def copy(tx: Any, *, src: str, dst: str) -> None:
    """Copies note ``src``'s text to ``dst``; a text ``->x`` stands for note x's."""
    row = await tx.get(notes, src)
    if row is not None and row["text"].startswith("->"):
        row = await tx.get(notes, row["text"][2:])
    await tx.upsert(notes).values(id=dst, text=row["text"] if row else "?")


@mutators.register
async def tally(tx: Any, *, dst: str) -> None:
    """Reads the whole table."""
    count = len(await tx.select(notes).all())
    await tx.upsert(notes).values(id=dst, text=str(count))


@mutators.register
async def shout(tx: Any, *, text: str) -> None:
    """Writes rows by their text, not their key."""
    await tx.update(notes).set(text=text.upper()).where(notes.text == text)


@mutators.register
async def relabel(tx: Any, *, src: str) -> None:
    """Writes by key, unless note ``src`` says "all": then by text."""
    row = await tx.get(notes, src)
    if row is not None and row["text"] == "all":
        await tx.update(notes).set(text="ALL").where(notes.text == "x")
    else:
        await tx.upsert(notes).values(id=f"{src}!", text="one")


def note(id: str, text: str) -> PutOp:
    return PutOp(f"notes/{id}", {"id": id, "text": text})


async def open_sync(storage: Storage | None = None, *, watched: bool = True) -> Synchronizer:
    replica = Replica(storage or MemoryStorage(), schema)
    reshaped = await replica.open()
    # With a subscriber every rebase works out its change; without, the capture serves
    # the undo log alone.
    replica.observed = lambda: watched
    sync = Synchronizer(replica, mutators, now_ms=lambda: 1_700_000_000_000)
    sync.start(reshaped=reshaped)
    return sync


def pull(sync: Synchronizer, patch: list[PatchOp], lmc: dict[str, int] | None = None) -> Any:
    cookie = (sync.cookie or 0) + 1
    return sync.pull_done(sync.pull_request(), PullResponse(cookie, lmc or {}, tuple(patch)))


def normal(change: Change) -> dict[str, Any]:
    return {kind: {t: sorted(map(repr, rows)) for t, rows in part.items()}
            for kind, part in (("added", change.added), ("removed", change.removed),
                               ("changed", change.changed))}


def state(sync: Synchronizer) -> dict[str, Any]:
    read = sync.replica.read
    return {
        "notes": read("SELECT * FROM notes ORDER BY id"),
        "undo": read("SELECT * FROM _plasma_undo_notes ORDER BY id"),
        "outbox": read("SELECT seq, name FROM _plasma_outbox ORDER BY seq"),
    }


async def scenario(
    initial: list[tuple[str, str]], pending: list[tuple[str, dict[str, Any]]],
    patch: list[PatchOp], *, traced: bool, confirm: int = 0,
    before: list[PatchOp] = (), watched: bool = True,  # type: ignore[assignment]
) -> tuple[dict[str, Any], list[str]]:
    """Pull ``initial``, queue ``pending``, pull ``before`` if given, then ``patch``
    (confirming the first ``confirm`` entries); the outcome, and the SQL the last rebase
    ran."""
    sync = await open_sync(watched=watched)
    try:
        pull(sync, [note(k, v) for k, v in initial])
        for name, args in pending:
            try:
                sync.mutate(name, args)
            except MutationError:
                pass
        if before:
            if not traced:
                sync.traces.clear()
            pull(sync, list(before))
        if not traced:
            sync.traces.clear()
        assert sync.client_id is not None
        statements: list[str] = []
        sync.replica.conn.set_trace_callback(statements.append)
        result = pull(sync, patch, {sync.client_id: confirm} if confirm else None)
        sync.replica.conn.set_trace_callback(None)
        outcome = {**state(sync), "change": normal(result.change), "skipped": result.skipped,
                   "verdicts": [(v.seq, v.error) for v in result.verdicts]}
        # The undo log left behind is right too: one more rebase, undoing and replaying.
        sync.traces.clear()
        again = pull(sync, [note("zz", "last")])
        outcome["again"] = (state(sync), normal(again.change))
        return outcome, statements
    finally:
        await sync.replica.close()


def replayed(statements: list[str]) -> bool:
    return any("plasma_replay_all" in s for s in statements)


def untriggered(statements: list[str]) -> bool:
    """Whether the replay recorded pre-images ahead (the restore may do so too)."""
    return any(") j LEFT JOIN main." in s for s in statements)


BASE = [("a", "b"), ("b", "x"), ("c", "x"), ("p", "->b")]


@pytest.mark.parametrize(("pending", "before"), [
    ([("route", {"src": "a"}), ("copy", {"src": "a", "dst": "c"}),
      ("write", {"id": "n", "text": "new"})], []),
    ([("copy", {"src": "p", "dst": "d"})], []),  # reads p, then the row p names
    # route failed on the last replay (a is gone): from its reads, it fails again.
    ([("route", {"src": "a"}), ("write", {"id": "n", "text": "new"})], [DelOp("notes/a")]),
])
async def test_a_patch_no_pending_mutation_depends_on_is_applied_alone(pending, before):
    patch = [note("z", "elsewhere"), note("y", "too")]
    fast, statements = await scenario(BASE, pending, patch, traced=True, before=before)
    slow, _ = await scenario(BASE, pending, patch, traced=False, before=before)
    assert not replayed(statements)
    assert fast == slow


@pytest.mark.parametrize("watched", [True, False])
async def test_a_big_patch_beside_many_pending_mutations_is_applied_alone(watched):
    # 300 operations: the patch runs without the triggers (patch.py), and with nothing
    # else writing in the transaction it works out its own change when watched.
    pending = [("write", {"id": f"w{i}", "text": "mine"}) for i in range(40)]
    patch = [note(f"s{i}", "theirs") for i in range(300)] + [note("a", "moved")]
    fast, statements = await scenario(BASE, pending, patch, traced=True, watched=watched)
    slow, _ = await scenario(BASE, pending, patch, traced=False, watched=watched)
    assert not replayed(statements)
    assert fast == slow


@pytest.mark.parametrize(("pending", "patch"), [
    ([("copy", {"src": "a", "dst": "c"})], [note("a", "read only")]),
    ([("copy", {"src": "p", "dst": "d"})], [note("b", "read second")]),
    ([("write", {"id": "c", "text": "mine"})], [note("c", "theirs")]),  # written
    ([("route", {"src": "missing"})], [note("missing", "b")]),  # now succeeds
    ([("tally", {"dst": "t"})], [note("z", "one more row")]),  # read whole
    ([("shout", {"text": "x"})], [note("z", "unrelated")]),  # writes not by key
    ([("write", {"id": "n", "text": "new"})], [note("z", "z")] * 9),  # big for K
])
async def test_a_patch_some_pending_mutation_may_depend_on_replays_them(pending, patch):
    fast, statements = await scenario(BASE, pending, patch, traced=True)
    slow, _ = await scenario(BASE, pending, patch, traced=False)
    assert replayed(statements)
    assert fast == slow


async def test_confirming_an_entry_replays_the_rest():
    pending = [("write", {"id": "n", "text": "new"}), ("write", {"id": "m", "text": "2"})]
    fast, statements = await scenario(BASE, pending, [note("z", "z")], traced=True,
                                      confirm=1)
    slow, _ = await scenario(BASE, pending, [note("z", "z")], traced=False, confirm=1)
    assert replayed(statements)
    assert fast == slow and fast["outbox"] == [(2, "write")]


async def test_traces_are_not_trusted_after_another_process_rebased(tmp_path):
    # Two processes on one file. A's trace of copy(p -> d) read p ("->b") and b; B's
    # rebase, on p = "x" now, reads x instead. A's next patch writes x: A's old trace
    # says copy does not depend on x, and A must not believe it.
    a = await open_sync(SQLiteStorage(path=tmp_path / "shared.db"))
    b = await open_sync(SQLiteStorage(path=tmp_path / "shared.db"))
    try:
        pull(a, [note(k, v) for k, v in BASE])
        a.mutate("copy", {"src": "p", "dst": "d"})
        pull(b, [note("p", "->c")])
        assert dict(b.replica.read("SELECT id, text FROM notes"))["d"] == "x"
        statements: list[str] = []
        a.replica.conn.set_trace_callback(statements.append)
        pull(a, [note("c", "changed")])
        a.replica.conn.set_trace_callback(None)
        assert replayed(statements)
        assert dict(a.replica.read("SELECT id, text FROM notes"))["d"] == "changed"
        # A's own rebase made its traces current again: the next one may go short.
        statements.clear()
        a.replica.conn.set_trace_callback(statements.append)
        pull(a, [note("z", "unrelated")])
        assert not replayed(statements)
    finally:
        await a.replica.close()
        await b.replica.close()


# -- a long outbox replays without the triggers -------------------------------------


@pytest.fixture
def bulk(monkeypatch):
    monkeypatch.setattr(rebase_module, "BULK_REPLAY", 0)


@pytest.mark.parametrize(("pending", "patch", "bypassed"), [
    # Traces replay as they are.
    ([("write", {"id": "n", "text": "new"}), ("route", {"src": "b"}),
      ("copy", {"src": "a", "dst": "c"})], [note("c", "server")], True),
    # A read changed: route runs again and writes another row (recorded then), not the
    # one it wrote before (whose recorded pre-image is dropped).
    ([("route", {"src": "a"}), ("write", {"id": "n", "text": "new"})],
     [note("a", "c")], True),
    # route now fails: its rows are not written at all.
    ([("write", {"id": "n", "text": "new"}), ("route", {"src": "a"})],
     [DelOp("notes/a")], True),
    # relabel runs again and now writes by text: it and the rest go under the triggers.
    ([("write", {"id": "n", "text": "new"}), ("relabel", {"src": "a"}),
      ("write", {"id": "m", "text": "x"})], [note("a", "all")], True),
    # A trace that writes not by key: the replay goes under the triggers from there.
    ([("shout", {"text": "x"}), ("write", {"id": "n", "text": "new"})],
     [note("b", "x")], False),
])
@pytest.mark.parametrize("watched", [True, False])
async def test_a_long_outbox_replays_as_the_triggers_would_record_it(
    bulk, pending, patch, bypassed, watched
):
    fast, statements = await scenario(BASE, pending, patch, traced=True, watched=watched)
    slow, _ = await scenario(BASE, pending, patch, traced=False, watched=watched)
    assert replayed(statements)
    assert untriggered(statements) == bypassed
    assert fast == slow


async def test_a_long_outbox_replays_a_failed_trace_as_a_failure(bulk):
    # The first rebase deletes a: route fails, its trace keeps its reads. The second
    # one writes c, which copy wrote: everything replays, route failing again.
    pending = [("route", {"src": "a"}), ("copy", {"src": "b", "dst": "c"})]
    before = [DelOp("notes/a")]
    fast, statements = await scenario(BASE, pending, [note("c", "server")], traced=True,
                                      before=before)
    slow, _ = await scenario(BASE, pending, [note("c", "server")], traced=False,
                             before=before)
    assert replayed(statements) and untriggered(statements)
    assert fast == slow and fast["skipped"] == [1]
