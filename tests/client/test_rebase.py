"""Rebase against hand-made pull responses: no server, no I/O."""

from __future__ import annotations

import pytest

from plasma_nb.client.replica import Replica
from plasma_nb.client.storage import MemoryStorage
from plasma_nb.client.synchronizer import Synchronizer
from plasma_nb.core.errors import ProtocolError
from plasma_nb.core.protocol import ClearOp, DelOp, MutationErrorInfo, PullResponse, PutOp
from tests.client.app import mutators, schema


@pytest.fixture
async def sync():
    replica = Replica(MemoryStorage(), schema)
    reshaped = await replica.open()
    synchronizer = Synchronizer(replica, mutators, now_ms=lambda: 1_700_000_000_000)
    synchronizer.start(reshaped=reshaped)
    yield synchronizer
    await replica.close()


def todo(id: str, title: str, **extra) -> PutOp:
    value = {"id": id, "title": title, "done": False, "owner": None, "score": None,
             "tags": None}
    value.update(extra)
    return PutOp(f"todos/{id}", value)


def titles(sync: Synchronizer) -> dict[str, str]:
    return dict(sync.replica.read("SELECT id, title FROM todos ORDER BY id"))


def pull(sync: Synchronizer, cookie: int, patch=(), lmc=None, errors=()):
    request = sync.pull_request()
    response = PullResponse(cookie, lmc or {}, tuple(patch), tuple(errors))
    return sync.pull_done(request, response)


def outbox(sync: Synchronizer) -> list[tuple[str, int]]:
    return sync.replica.read("SELECT name, mutation_id FROM _plasma_outbox ORDER BY seq")


async def test_only_covered_entries_leave_the_outbox(sync):
    for i in range(3):
        sync.mutate("add_todo", {"id": f"t{i}", "title": f"n{i}"})
    cid = sync.client_id
    result = pull(sync, 10, [todo("t0", "n0"), todo("t1", "n1")], {cid: 2})
    assert result.applied
    assert [(v.mutation_id, v.error) for v in result.verdicts] == [(1, None), (2, None)]
    assert outbox(sync) == [("add_todo", 3)]
    assert titles(sync) == {"t0": "n0", "t1": "n1", "t2": "n2"}
    assert not result.change  # nothing anyone sees changed
    assert sync.cookie == 10
    # Another client's progress does not cover ours.
    pull(sync, 11, [todo("x", "other")], {"someone-else": 9})
    assert outbox(sync) == [("add_todo", 3)]


async def test_the_server_order_wins_in_one_net_change(sync):
    pull(sync, 5, [ClearOp(), todo("t1", "original")])
    sync.mutate("set_title", {"id": "t1", "title": "mine"})
    cid = sync.client_id
    # The server applied ours, then another client's edit on top of it.
    result = pull(sync, 7, [todo("t1", "theirs")], {cid: 1})
    assert titles(sync) == {"t1": "theirs"}
    assert list(result.change.changed) == ["todos"]
    [(before, after)] = result.change.changed["todos"]
    assert (before["title"], after["title"]) == ("mine", "theirs")
    assert not result.change.added and not result.change.removed
    assert outbox(sync) == []


async def test_pending_rows_do_not_flicker(sync):
    sync.mutate("add_todo", {"id": "mine", "title": "pending"})
    result = pull(sync, 3, [todo("theirs", "new")])
    assert titles(sync) == {"mine": "pending", "theirs": "new"}
    assert [r["id"] for r in result.change.added["todos"]] == ["theirs"]
    assert not result.change.changed
    assert outbox(sync) == [("add_todo", 1)]


async def test_a_rejected_mutation_disappears_with_its_message(sync):
    sync.mutate("picky", {"id": "t9", "title": "nope"})
    sync.mutate("add_todo", {"id": "t10", "title": "fine"})
    cid = sync.client_id
    error = MutationErrorInfo(cid, 1, "picky", "the server refuses 'nope'")
    result = pull(sync, 8, [todo("t10", "fine")], {cid: 2}, [error])
    assert titles(sync) == {"t10": "fine"}
    assert [(v.name, v.error) for v in result.verdicts] == [
        ("picky", "the server refuses 'nope'"), ("add_todo", None)
    ]
    assert [r["id"] for r in result.change.removed["todos"]] == ["t9"]
    assert sync.verdicts([1, 2]) == {1: "the server refuses 'nope'", 2: None}


async def test_an_error_reported_by_push_is_kept_until_the_pull(sync):
    from plasma_nb.core.protocol import PushResponse

    sync.mutate("picky", {"id": "t9", "title": "nope"})
    batch = sync.push_request()
    assert batch is not None and [m.id for m in batch.request.mutations] == [1]
    cid = sync.client_id
    sync.push_done(batch, PushResponse((MutationErrorInfo(cid, 1, "picky", "refused"),)))
    result = pull(sync, 8, [], {cid: 1})  # a pull that reports no errors itself
    assert [v.error for v in result.verdicts] == ["refused"]


async def test_a_replay_that_now_fails_keeps_its_entry_but_not_its_effect(sync):
    pull(sync, 2, [todo("t1", "a")])
    sync.mutate("set_title", {"id": "t1", "title": "renamed"})
    result = pull(sync, 4, [DelOp("todos/t1")])  # someone deleted it meanwhile
    assert titles(sync) == {}
    assert result.skipped == [1]
    assert outbox(sync) == [("set_title", 1)]  # the server rejects it and says why


async def test_replay_starts_from_the_new_base(sync):
    sync.mutate("bump", {"id": "c"})
    assert sync.replica.read("SELECT n FROM counters") == [(1,)]
    result = pull(sync, 3, [PutOp("counters/c", {"id": "c", "n": 5})])
    assert sync.replica.read("SELECT n FROM counters") == [(6,)]
    [(before, after)] = result.change.changed["counters"]
    assert (before["n"], after["n"]) == (1, 6)


async def test_many_pending_edits_of_one_row_undo_to_the_first_pre_image(sync):
    pull(sync, 1, [todo("t1", "base")])
    for title in ("one", "two", "three"):
        sync.mutate("set_title", {"id": "t1", "title": title})
    sync.mutate("add_todo", {"id": "t2", "title": "new"})
    result = pull(sync, 2, [todo("x", "unrelated")])
    assert titles(sync) == {"t1": "three", "t2": "new", "x": "unrelated"}
    assert result.change.tables == {"todos"} and not result.change.changed
    # With the edits confirmed and the server's value equal to ours, nothing changes.
    cid = sync.client_id
    result = pull(sync, 3, [todo("t1", "three"), todo("t2", "new")], {cid: 4})
    assert not result.change and outbox(sync) == []
    assert sync.replica.read("SELECT count(*) FROM _plasma_undo_todos") == [(0,)]


async def test_clear_replaces_everything_under_the_pending_mutations(sync):
    pull(sync, 1, [todo("old", "gone soon")])
    sync.mutate("add_todo", {"id": "mine", "title": "kept"})
    result = pull(sync, 9, [ClearOp(), todo("fresh", "snapshot")])
    assert titles(sync) == {"fresh": "snapshot", "mine": "kept"}
    assert [r["id"] for r in result.change.removed["todos"]] == ["old"]
    assert [r["id"] for r in result.change.added["todos"]] == ["fresh"]


async def test_a_stale_response_is_dropped(sync):
    first = sync.pull_request()
    second = sync.pull_request()
    sync.pull_done(second, PullResponse(5, {}, (todo("a", "new"),)))
    result = sync.pull_done(first, PullResponse(4, {}, (todo("a", "old"),)))
    assert not result.applied
    assert titles(sync) == {"a": "new"} and sync.cookie == 5


async def test_an_empty_pull_only_moves_the_cookie(sync):
    sync.mutate("add_todo", {"id": "t1", "title": "a"})
    result = pull(sync, 12)
    assert result.applied and not result.change and sync.cookie == 12
    assert outbox(sync) == [("add_todo", 1)]


async def test_bad_patch_values_are_refused_whole(sync):
    pull(sync, 1, [todo("t1", "kept")])
    with pytest.raises(ProtocolError, match=r"patch\[1\]: todos/t2: todos.title: expected text"):
        pull(sync, 2, [todo("t1", "changed"), todo("t2", 42)])
    assert titles(sync) == {"t1": "kept"} and sync.cookie == 1


async def test_unknown_tables_in_a_patch_are_ignored(sync):
    result = pull(sync, 2, [PutOp("newer_table/1", {"id": 1}), todo("t1", "a")])
    assert result.applied and titles(sync) == {"t1": "a"}


async def test_integer_keys_and_exact_values_round_trip(sync):
    pull(sync, 2, [todo("t1", "a", score=0.1 + 0.2, tags={"k": [1, "two"]})])
    [row] = sync.replica.query("SELECT score, tags FROM todos")
    assert row == {"score": 0.1 + 0.2, "tags": '{"k":[1,"two"]}'}


async def test_recovery_renumbers_every_pending_entry_under_a_new_client(sync):
    sync.mutate("add_todo", {"id": "a", "title": "1"})
    old_client = sync.client_id
    sync.client_id = None  # play a second process sharing the database
    sync.mutate("add_todo", {"id": "b", "title": "2"})
    sync.mutate("add_todo", {"id": "c", "title": "3"})
    assert sync.client_id != old_client
    pull(sync, 50)
    group = sync.client_group_id
    assert sync.recover(group)
    assert not sync.recover(group)  # someone already recovered: nothing to do
    assert sync.client_group_id != group and sync.cookie is None
    rows = sync.replica.read("SELECT client_id, mutation_id FROM _plasma_outbox ORDER BY seq")
    assert rows == [(sync.client_id, 1), (sync.client_id, 2), (sync.client_id, 3)]
    assert sync.mutate("add_todo", {"id": "d", "title": "4"}).mutation_id == 4
    # A full pull from nothing then rebases the pending rows on the snapshot.
    result = pull(sync, 60, [ClearOp(), todo("srv", "from server")])
    assert titles(sync) == {"a": "1", "b": "2", "c": "3", "d": "4", "srv": "from server"}
    assert [r["id"] for r in result.change.added["todos"]] == ["srv"]


async def test_undo_restores_exact_values(sync):
    exact = 0.1 + 0.2
    pull(sync, 1, [todo("t1", "a", score=exact, tags={"deep": [1.5, None]})])
    sync.mutate("set_score", {"id": "t1", "score": 9.0})
    cid = sync.client_id
    error = MutationErrorInfo(cid, 1, "set_score", "no")
    pull(sync, 2, [], {cid: 1}, [error])  # rejected: its effect is undone, not replayed
    [row] = sync.replica.query("SELECT score, tags FROM todos")
    assert row == {"score": exact, "tags": '{"deep":[1.5,null]}'}
