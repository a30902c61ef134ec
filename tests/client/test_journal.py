"""Subscribers hear commits made through another connection to the same SQLite file.

Two clients in this process, each with its own connection, stand in for two processes
(tests/client/test_processes.py runs the same with real ones).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import pytest

import plasma_nb as plasma
from plasma_nb import MutationError
from plasma_nb.client import Change, Client
from plasma_nb.core.protocol import PullResponse, PutOp
from tests.client.app import counters, mutators, schema, todos


async def local(name: str = "shared", **kwargs: Any) -> Client:
    kwargs.setdefault("thread", False)
    return await plasma.connect(schema=schema, mutators=mutators, name=name, storage="sqlite",
                                **kwargs)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Client, Client]]:
    a = await local()
    b = await local()
    yield a, b
    await a.close()
    await b.close()


async def heard(calls: list[Change], count: int, within: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while len(calls) < count:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"heard {len(calls)} changes, expected {count}: {calls}")
        await asyncio.sleep(0.02)


def row(id: str, title: str, done: bool = False) -> dict[str, Any]:
    return {"id": id, "title": title, "done": done, "owner": None, "score": None, "tags": None}


def journal_rows(plasma_home: Any, table: str) -> int:
    conn = sqlite3.connect(plasma_home / "shared.db")
    try:
        return int(conn.execute(f"SELECT count(*) FROM _plasma_journal_{table}").fetchone()[0])
    finally:
        conn.close()


async def test_another_connections_commits_reach_subscribers(pair, plasma_home):
    a, b = pair
    calls: list[Change] = []
    b.subscribe(todos, calls.append)
    a.mutate.add_todo(id="t1", title="from a")
    await heard(calls, 1)
    assert calls[0].added == {"todos": [row("t1", "from a")]}
    a.mutate.mark_done(id="t1")
    await heard(calls, 2)
    assert calls[1].changed == {"todos": [(row("t1", "from a"), row("t1", "from a", True))]}
    a.mutate.delete_todo(id="t1")
    await heard(calls, 3)
    assert calls[2].removed == {"todos": [row("t1", "from a", True)]}
    # A table nobody watches is not journaled, and read entries are pruned.
    a.mutate.bump(id="c")
    await asyncio.sleep(0.3)
    assert len(calls) == 3
    assert journal_rows(plasma_home, "counters") == 0
    assert journal_rows(plasma_home, "todos") == 0


async def test_one_net_change_for_commits_read_together(pair):
    a, b = pair
    calls: list[Change] = []
    b.subscribe(todos, calls.append)
    # No loop iteration between these: B reads them in one go.
    a.mutate.add_todo(id="gone", title="added then deleted")
    a.mutate.delete_todo(id="gone")
    a.mutate.add_todo(id="t1", title="first")
    a.mutate.set_title(id="t1", title="second")
    await heard(calls, 1)
    await asyncio.sleep(0.3)
    assert calls == [Change(added={"todos": [row("t1", "second")]})]


async def test_foreign_changes_come_before_the_next_local_one(pair):
    a, b = pair
    calls: list[Change] = []
    b.subscribe(todos, calls.append)
    a.mutate.add_todo(id="t1", title="from a")
    b.mutate.mark_done(id="t1")  # before B polled: B catches up as its write begins
    await heard(calls, 2)
    assert calls[0].added == {"todos": [row("t1", "from a")]}
    assert calls[1].changed == {"todos": [(row("t1", "from a"), row("t1", "from a", True))]}
    await asyncio.sleep(0.3)
    assert len(calls) == 2


async def test_a_failed_local_write_does_not_repeat_a_foreign_change(pair):
    a, b = pair
    calls: list[Change] = []
    b.subscribe(todos, calls.append)
    a.mutate.add_todo(id="t1", title="from a")
    with pytest.raises(MutationError, match="already exists"):
        b.mutate.add_todo(id="t1", title="again")
    await heard(calls, 1)
    await asyncio.sleep(0.3)
    assert len(calls) == 1


async def test_a_rebase_elsewhere_is_heard_once_with_its_net_change(pair):
    a, b = pair
    calls: list[Change] = []
    b.subscribe(todos, calls.append)
    a.mutate.add_todo(id="mine", title="pending")
    await heard(calls, 1)
    # A's pull: the server added a row and confirmed nothing. The rebase undoes and
    # replays A's pending row (no net change) and adds the server's.
    sync = a._engine.sync
    request = sync.pull_request()
    response = PullResponse(cookie=5, last_mutation_id_changes={},
                            patch=(PutOp("todos/srv", row("srv", "from the server")),))
    assert sync.pull_done(request, response).applied
    await heard(calls, 2)
    await asyncio.sleep(0.3)
    assert calls[1] == Change(added={"todos": [row("srv", "from the server")]})


async def test_nothing_is_journaled_once_nobody_watches(pair, plasma_home):
    a, b = pair
    calls: list[Change] = []
    unsubscribe = b.subscribe([todos, counters], calls.append)
    a.mutate.add_todo(id="t1", title="x")
    await heard(calls, 1)
    unsubscribe()
    a.mutate.add_todo(id="t2", title="y")
    await asyncio.sleep(0.3)
    assert len(calls) == 1
    assert journal_rows(plasma_home, "todos") == 0
    # Watching again starts from now, not from what was missed.
    b.subscribe(todos, calls.append)
    a.mutate.add_todo(id="t3", title="z")
    await heard(calls, 2)
    assert calls[1].added == {"todos": [row("t3", "z")]}


async def test_closing_a_watcher_unregisters_it(plasma_home):
    a = await local()
    b = await local()
    try:
        b.subscribe(todos, lambda change: None)
        await b.close()
        a.mutate.add_todo(id="t1", title="x")
        assert journal_rows(plasma_home, "todos") == 0
        conn = sqlite3.connect(plasma_home / "shared.db")
        try:
            assert conn.execute("SELECT count(*) FROM _plasma_watchers").fetchone()[0] == 0
        finally:
            conn.close()
    finally:
        await a.close()
        await b.close()


async def test_the_engine_thread_polls_too():
    a = await local()
    b = await local(thread=True)
    got: list[Change] = []
    event = asyncio.Event()
    loop = asyncio.get_running_loop()

    def callback(change: Change) -> None:
        got.append(change)
        loop.call_soon_threadsafe(event.set)

    try:
        b.subscribe(todos, callback)
        a.mutate.add_todo(id="t1", title="x")
        await asyncio.wait_for(event.wait(), 3)
        assert got[0].added == {"todos": [row("t1", "x")]}
    finally:
        await a.close()
        await b.close()


async def test_a_big_pull_elsewhere_is_heard_whole(pair):
    a, b = pair
    calls: list[Change] = []
    b.subscribe(todos, calls.append)
    sync = a._engine.sync
    patch = tuple(PutOp(f"todos/r{i:03d}", row(f"r{i:03d}", "bulk")) for i in range(300))
    assert sync.pull_done(sync.pull_request(), PullResponse(7, {}, patch)).applied
    await heard(calls, 1)
    assert sorted(r["id"] for r in calls[0].added["todos"]) == [f"r{i:03d}" for i in range(300)]


async def test_commit_hooks_hear_other_connections_too(pair):
    """Live queries take changes through the replica's commit hooks."""
    a, b = pair
    hooked: list[Change] = []
    b._engine.replica.commit_hooks.append(hooked.append)
    calls: list[Change] = []
    b.subscribe(todos, calls.append)
    a.mutate.add_todo(id="t1", title="x")
    await heard(calls, 1)
    assert [c for c in hooked if c] == [Change(added={"todos": [row("t1", "x")]})]
