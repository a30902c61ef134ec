"""Group commit on the SQLite backend: pushes that arrive together commit together, and each
gets exactly what it would have got alone.

The main check runs random mixes of pushes (new and known clients, repeats, gaps, unknown
clients, rejected and crashing mutators, duplicate keys, other users' groups and clients)
twice: all at once on one database, where they share a batch, and one after another on a
second, where each commits alone. The answers and the databases must be the same.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from plasma_nb import MutationError, Mutators, Schema, col, table
from plasma_nb.core.errors import ServerError, Unavailable
from plasma_nb.core.mutators import Context
from plasma_nb.core.protocol import Mutation, PushRequest
from plasma_nb.server.push import PushOutcome
from plasma_nb.server.storage import sqlite as sqlite_module
from plasma_nb.server.storage.sqlite import SQLiteStorage

notes = table("notes", id=col.id(), body=col.text())
schema = Schema([notes], version="1")
mutators = Mutators(schema)
#: Set by a test to hold ``add_held`` inside its batch.
held = asyncio.Event()


@mutators.register
async def add_note(tx: Any, *, id: str, body: str) -> None:
    await tx.insert(notes).values(id=id, body=body)


@mutators.register
async def add_then_reject(tx: Any, *, id: str, body: str) -> None:
    await tx.insert(notes).values(id=id, body=body)
    raise MutationError(f"note {id} rejected after writing")


@mutators.register
async def add_then_crash(tx: Any, *, id: str, body: str) -> None:
    await tx.insert(notes).values(id=id, body=body)
    raise RuntimeError("a mutator bug")


@mutators.register
async def add_held(tx: Any, *, id: str, body: str) -> None:
    await tx.insert(notes).values(id=id, body=body)
    await held.wait()


def request(group: str, *mutations: tuple[str, int, str, str]) -> PushRequest:
    """A push of ``(client, id, mutator, note id)`` mutations."""
    return PushRequest(1, group, "p1", "1", tuple(
        Mutation(client, n, name, {"id": note, "body": f"{client}/{n}"}, 1732590000000.0)
        for client, n, name, note in mutations))


async def opened(path: Path) -> SQLiteStorage:
    storage = SQLiteStorage(str(path), schema, mutators)
    await storage.open()
    return storage


def answer(result: PushOutcome | BaseException) -> tuple[Any, ...]:
    """What a push's caller sees, without the version (batches share theirs)."""
    if isinstance(result, BaseException):
        return ("raised", type(result).__name__, str(result))
    stopped = result.stopped_by
    return ("outcome", result.response.to_json(), result.processed,
            None if stopped is None else (type(stopped).__name__, str(stopped)))


def contents(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows that do not depend on how pushes were batched (no versions)."""
    with sqlite3.connect(path) as conn:
        return {name: sorted(conn.execute(sql).fetchall()) for name, sql in {
            "notes": "SELECT id, body FROM notes",
            "groups": "SELECT id, owner FROM _plasma_client_groups",
            "clients": "SELECT id, client_group_id, last_mutation_id FROM _plasma_clients",
            "errors": "SELECT client_id, mutation_id, client_group_id, name, message "
                      "FROM _plasma_mutation_errors",
            "changes": "SELECT tbl, pk, deleted FROM _plasma_changes",
        }.items()}


def version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT version FROM _plasma_meta").fetchone()[0])


def random_pushes(rng: random.Random, count: int) -> list[tuple[str, PushRequest]]:
    """``count`` pushes as ``(user, request)``: mostly good, with every kind of trouble."""
    groups = {f"g{i}": f"u{i % 2}" for i in range(4)}
    next_id: dict[str, int] = {}
    pushes = []
    for _ in range(count):
        group = rng.choice(list(groups))
        user = groups[group] if rng.random() < 0.85 else f"u{rng.randrange(3)}"
        mutations = []
        for _ in range(rng.randint(1, 4)):
            # Sometimes another group's client, which the server refuses.
            owner = group if rng.random() < 0.93 else rng.choice(list(groups))
            client = f"{owner}-c{rng.randrange(2)}"
            n = next_id.get(client, 0) + 1
            roll = rng.random()
            if roll < 0.08:
                n += 2  # a gap, or an unknown client starting past 1
            elif roll < 0.16 and n > 1:
                n -= 1  # already processed: answered again, never run twice
            else:
                next_id[client] = n
            name = rng.choices(["add_note", "add_then_reject", "add_then_crash"],
                               weights=[8, 1, 1])[0]
            note = f"n{rng.randrange(40)}"  # repeats: a duplicate key is a rejection too
            mutations.append((client, n, name, note))
        pushes.append((user, request(group, *mutations)))
    return pushes


@pytest.mark.parametrize("seed", range(40))
async def test_a_batch_answers_and_writes_what_pushes_one_at_a_time_do(tmp_path: Path,
                                                                      seed: int):
    pushes = random_pushes(random.Random(seed), 12)
    together, alone = await opened(tmp_path / "a.db"), await opened(tmp_path / "b.db")
    try:
        batched = await asyncio.gather(
            *(together.push(r, Context(user), limit=100) for user, r in pushes),
            return_exceptions=True)
        serial: list[PushOutcome | BaseException] = []
        for user, r in pushes:
            try:
                serial.append(await alone.push(r, Context(user), limit=100))
            except Exception as exc:
                serial.append(exc)
        assert together._group_commit.batches == 1, f"seed {seed}"
    finally:
        await together.close()
        await alone.close()
    assert [answer(r) for r in batched] == [answer(r) for r in serial], f"seed {seed}"
    assert contents(tmp_path / "a.db") == contents(tmp_path / "b.db"), f"seed {seed}"


async def test_pushes_that_arrive_together_share_one_commit_and_one_version(tmp_path: Path):
    storage = await opened(tmp_path / "p.db")
    before = version(tmp_path / "p.db")
    outcomes = await asyncio.gather(*(
        storage.push(request(f"g{i}", (f"c{i}", 1, "add_note", f"n{i}")), Context(), limit=10)
        for i in range(8)))
    assert storage._group_commit.batches == 1 and storage._group_commit.pushes == 8
    assert {o.version for o in outcomes} == {before + 1}
    assert all(o.processed == 1 for o in outcomes)
    # A push that arrives alone commits alone, one version later.
    alone = await storage.push(request("g0", ("c0", 2, "add_note", "n8")), Context(), limit=10)
    assert alone.version == before + 2 and storage._group_commit.batches == 2
    await storage.close()
    assert len(contents(tmp_path / "p.db")["notes"]) == 9


async def test_a_batch_where_nothing_counts_leaves_the_version_alone(tmp_path: Path):
    storage = await opened(tmp_path / "p.db")
    await storage.push(request("g0", ("c0", 1, "add_note", "n0")), Context(), limit=10)
    before = version(tmp_path / "p.db")
    outcomes = await asyncio.gather(
        storage.push(request("g0", ("c0", 1, "add_note", "n0")), Context(), limit=10),
        storage.push(request("g1", ("c1", 5, "add_note", "n1")), Context(), limit=10),
        return_exceptions=True)
    assert [o.processed for o in outcomes if isinstance(o, PushOutcome)] == [0, 0]
    await storage.close()
    assert version(tmp_path / "p.db") == before
    assert contents(tmp_path / "p.db")["groups"] == [("g0", None)]


async def test_a_cancelled_push_leaves_its_batch_to_the_others(tmp_path: Path):
    storage = await opened(tmp_path / "p.db")
    held.clear()
    first = asyncio.create_task(storage.push(
        request("g0", ("c0", 1, "add_held", "held")), Context(), limit=10))
    others = [asyncio.create_task(storage.push(
        request(f"g{i}", (f"c{i}", 1, "add_note", f"n{i}")), Context(), limit=10))
        for i in range(1, 4)]
    await asyncio.sleep(0.05)  # the batch has begun and waits in add_held
    assert not any(t.done() for t in others)
    first.cancel()
    outcomes = await asyncio.gather(*others)
    assert all(o.processed == 1 for o in outcomes)
    with pytest.raises(asyncio.CancelledError):
        await first
    await storage.close()
    rows = contents(tmp_path / "p.db")
    assert [r[0] for r in rows["notes"]] == ["n1", "n2", "n3"]  # nothing of the cancelled one
    assert [r[0] for r in rows["groups"]] == ["g1", "g2", "g3"]


async def test_a_busy_database_fails_the_whole_batch_and_writes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sqlite_module, "WRITE_WAIT_SECONDS", 0.2)
    storage = await opened(tmp_path / "p.db")
    other = sqlite3.connect(tmp_path / "p.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # an operator's long write transaction
    results = await asyncio.gather(*(
        storage.push(request(f"g{i}", (f"c{i}", 1, "add_note", f"n{i}")), Context(), limit=10)
        for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, Unavailable) and "busy" in str(r) for r in results)
    other.execute("ROLLBACK")
    other.close()
    assert contents(tmp_path / "p.db")["notes"] == []
    # Once the database is free the same pushes go through.
    again = await storage.push(request("g0", ("c0", 1, "add_note", "n0")), Context(), limit=10)
    assert again.processed == 1
    await storage.close()


async def test_close_answers_the_pushes_already_queued(tmp_path: Path):
    storage = await opened(tmp_path / "p.db")
    tasks = [asyncio.create_task(storage.push(
        request(f"g{i}", (f"c{i}", 1, "add_note", f"n{i}")), Context(), limit=10))
        for i in range(3)]
    await asyncio.sleep(0)  # they have queued
    await storage.close()
    assert all(t.done() and t.result().processed == 1 for t in tasks)


async def test_a_long_queue_is_committed_in_several_batches(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from plasma_nb.server.storage import sqlite_push

    monkeypatch.setattr(sqlite_push, "BATCH_MUTATIONS", 4)
    storage = await opened(tmp_path / "p.db")
    outcomes = await asyncio.gather(*(
        storage.push(request(f"g{i}", (f"c{i}", 1, "add_note", f"a{i}"),
                             (f"c{i}", 2, "add_note", f"b{i}")), Context(), limit=10)
        for i in range(6)))
    assert storage._group_commit.batches == 3  # two pushes of two mutations each
    assert len({o.version for o in outcomes}) == 3
    await storage.close()
    assert len(contents(tmp_path / "p.db")["notes"]) == 12


async def test_a_push_that_fails_after_writing_is_undone_alone(tmp_path: Path):
    storage = await opened(tmp_path / "p.db")
    with sqlite3.connect(tmp_path / "p.db") as conn:
        # An operator's trigger that refuses one client: its push fails in save_clients,
        # after its mutation wrote a note.
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON _plasma_clients "
                     "WHEN NEW.id = 'bad' BEGIN SELECT RAISE(ABORT, 'refused'); END")
    results = await asyncio.gather(
        storage.push(request("g1", ("c1", 1, "add_note", "n1")), Context(), limit=10),
        storage.push(request("g2", ("bad", 1, "add_note", "n2")), Context(), limit=10),
        storage.push(request("g3", ("c3", 1, "add_note", "n3")), Context(), limit=10),
        return_exceptions=True)
    assert isinstance(results[1], sqlite3.IntegrityError) and "refused" in str(results[1])
    assert [r.processed for r in (results[0], results[2])] == [1, 1]  # type: ignore[union-attr]
    await storage.close()
    rows = contents(tmp_path / "p.db")
    assert [r[0] for r in rows["notes"]] == ["n1", "n3"]
    assert [r[0] for r in rows["groups"]] == ["g1", "g3"]


async def test_a_push_from_a_second_event_loop_is_refused_while_a_batch_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    storage = await opened(tmp_path / "p.db")
    other = asyncio.new_event_loop()
    thread = threading.Thread(target=other.run_forever, daemon=True)
    thread.start()
    hold = asyncio.Event()  # add_held waits on it, on the other loop
    monkeypatch.setattr(sys.modules[__name__], "held", hold)

    async def held_push() -> PushOutcome:
        return await storage.push(request("g0", ("c0", 1, "add_held", "n0")), Context(),
                                  limit=10)

    try:
        running = asyncio.run_coroutine_threadsafe(held_push(), other)
        for _ in range(500):
            if not storage._group_commit._idle.is_set():
                break
            await asyncio.sleep(0.01)
        with pytest.raises(ServerError, match="another event loop"):
            await storage.push(request("g1", ("c1", 1, "add_note", "n1")), Context(),
                               limit=10)
        other.call_soon_threadsafe(hold.set)
        assert (await asyncio.wrap_future(running)).processed == 1
        # Once the other loop's batch is over, this loop may push.
        mine = await storage.push(request("g1", ("c1", 1, "add_note", "n1")), Context(),
                                  limit=10)
        assert mine.processed == 1
    finally:
        other.call_soon_threadsafe(other.stop)
        thread.join(5)
        other.close()
        await storage.close()
