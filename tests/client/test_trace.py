"""Rebases replay pending mutations from their traces while the traces' reads agree."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from plasma_nb import MutationError, Mutators, Schema, col, table
from plasma_nb.client.replica import Replica
from plasma_nb.client.storage import MemoryStorage
from plasma_nb.client.synchronizer import Synchronizer
from plasma_nb.core.protocol import DelOp, PullResponse, PutOp

notes = table("notes", id=col.id(), text=col.text(), n=col.integer(default=0))
schema = Schema([notes], version="1")
mutators = Mutators(schema)
runs: Counter[str] = Counter()


@mutators.register
async def add(tx: Any, *, id: str, text: str) -> None:
    runs["add"] += 1
    await tx.insert(notes).values(id=id, text=text)


@mutators.register
async def append(tx: Any, *, id: str, more: str) -> None:
    runs["append"] += 1
    row = await tx.get(notes, id)
    if row is None:
        raise MutationError(f"no note {id!r}")
    await tx.update(notes).set(text=row["text"] + more).where(notes.id == id)


@mutators.register
async def count(tx: Any, *, id: str) -> None:
    """Uses the row count of its write: a trace checks it too."""
    runs["count"] += 1
    if await tx.update(notes).set(n=1).where(notes.id == id) == 0:
        await tx.insert(notes).values(id=id, text="counted", n=1)


@pytest.fixture
async def sync():
    runs.clear()
    replica = Replica(MemoryStorage(), schema)
    reshaped = await replica.open()
    synchronizer = Synchronizer(replica, mutators, now_ms=lambda: 1_700_000_000_000)
    synchronizer.start(reshaped=reshaped)
    yield synchronizer
    await replica.close()


def pull(sync: Synchronizer, *patch: Any) -> Any:
    cookie = (sync.cookie or 0) + 1
    return sync.pull_done(sync.pull_request(), PullResponse(cookie, {}, tuple(patch)))


def note(id: str, text: str, n: int = 0) -> PutOp:
    return PutOp(f"notes/{id}", {"id": id, "text": text, "n": n})


def texts(sync: Synchronizer) -> dict[str, str]:
    return dict(sync.replica.read("SELECT id, text FROM notes ORDER BY id"))


async def test_an_unaffected_mutation_replays_without_running(sync):
    pull(sync, note("a", "x"))
    sync.mutate("append", {"id": "a", "more": "!"})
    sync.mutate("add", {"id": "b", "text": "new"})
    assert runs == {"append": 1, "add": 1}
    pull(sync, note("other", "elsewhere"))
    assert runs == {"append": 1, "add": 1}  # replayed from traces
    assert texts(sync) == {"a": "x!", "b": "new", "other": "elsewhere"}


async def test_a_changed_read_runs_the_mutator_again(sync):
    pull(sync, note("a", "x"))
    sync.mutate("append", {"id": "a", "more": "!"})
    pull(sync, note("a", "y"))  # what append read is different now
    assert runs["append"] == 2
    assert texts(sync) == {"a": "y!"}
    pull(sync, note("other", "z"))  # and its new trace serves the next rebase
    assert runs["append"] == 2


async def test_a_changed_row_count_starts_the_replay_over(sync):
    pull(sync, note("a", "x"))
    sync.mutate("count", {"id": "a"})
    sync.mutate("append", {"id": "a", "more": "!"})
    pull(sync, DelOp("notes/a"))  # count's update now touches no row: it inserts instead
    assert runs == {"count": 2, "append": 2}
    assert texts(sync) == {"a": "counted!"}


async def test_a_mutation_that_fails_again_is_skipped_from_its_trace(sync):
    pull(sync, note("a", "x"))
    h = sync.mutate("append", {"id": "a", "more": "!"})
    result = pull(sync, DelOp("notes/a"))
    assert result.skipped == [h.seq] and runs["append"] == 2
    result = pull(sync, note("other", "y"))
    assert result.skipped == [h.seq] and runs["append"] == 2  # failed again, from its trace
    result = pull(sync, note("a", "back"))
    assert result.skipped == [] and runs["append"] == 3
    assert texts(sync) == {"a": "back!", "other": "y"}


async def test_another_user_runs_the_mutators(sync):
    pull(sync, note("a", "x"))
    sync.mutate("append", {"id": "a", "more": "!"})
    sync.set_user("ann")
    pull(sync, note("other", "y"))
    assert runs["append"] == 2


async def test_traces_of_confirmed_entries_are_dropped(sync):
    sync.mutate("add", {"id": "a", "text": "x"})
    sync.mutate("add", {"id": "b", "text": "y"})
    assert len(sync.traces) == 2
    assert sync.client_id is not None
    sync.pull_done(sync.pull_request(), PullResponse(9, {sync.client_id: 1}, (note("a", "x"),)))
    assert list(sync.traces) == [2]
