"""Compaction: tombstones (and prior images) older than the horizon are dropped; a cookie
older than the compacted log gets ``clear`` and a full snapshot; newer cookies stay
incremental. On both backends."""

from __future__ import annotations

import asyncio

from plasma_nb.server import compact
from plasma_nb.server.compaction import Compactor
from tests.server.helpers import add, dels, mutation, pull, pull_body, push, push_body, puts
from tests.server.secure import as_user, call, dump_database, execute, mutators, note, schema


def tombstones(dump) -> list[str]:
    return sorted(r[1] for r in dump["_plasma_changes"] if r[3])


async def test_a_stale_cookie_after_compaction_gets_a_full_snapshot(client, app, database):
    await push(client, add("c1", 1, "t1"), add("c1", 2, "t2"), add("c1", 3, "t3"))
    stale = (await pull(client))["cookie"]
    await push(client, mutation("c1", 4, "delete_todo", id="t1"),
               mutation("c1", 5, "rename", id="t2", title="renamed"))
    fresh = (await pull(client))["cookie"]
    await push(client, mutation("c1", 6, "delete_todo", id="t3"))
    assert tombstones(await dump_database(database)) == ["t1", "t3"]

    done = await compact(app, horizon=0)
    assert done.tombstones == 2
    assert tombstones(await dump_database(database)) == []
    assert done.min_version == (await pull(client))["cookie"]

    # The stale cookie would miss t1's and t3's deletion: clear, then what is there.
    answer = await pull(client, stale)
    assert answer["patch"][0] == {"op": "clear"}
    assert set(puts(answer["patch"])) == {"todos/t2"}
    assert answer["lastMutationIDChanges"] == {"c1": 6}
    # So does one taken before the compaction, however recent.
    assert (await pull(client, fresh))["patch"][0] == {"op": "clear"}
    # A cookie from after the compaction is incremental as before.
    await push(client, mutation("c1", 7, "delete_todo", id="t2"))
    assert (await pull(client, done.min_version))["patch"] == [
        {"op": "del", "key": "todos/t2"}]


async def test_the_horizon_keeps_recent_tombstones(client, app, database):
    storage = app.state.plasma.storage
    t0 = 1_900_000_000_000  # the test's clock, in ms; checkpoints record it
    await push(client, add("c1", 1, "t1"), add("c1", 2, "t2"))
    await push(client, mutation("c1", 3, "delete_todo", id="t1"))
    first = await storage.compact(3_600_000, t0)  # nothing an hour old yet
    assert first.tombstones == 0
    old_cookie = (await pull(client))["cookie"]
    await push(client, mutation("c1", 4, "delete_todo", id="t2"))
    second = await storage.compact(3_600_000, t0 + 1_800_000)  # half an hour later
    assert second.tombstones == 0
    # An hour after the first checkpoint, what was deleted before it goes; t2 stays.
    third = await storage.compact(3_600_000, t0 + 3_600_000)
    assert third.tombstones == 1 and third.min_version == old_cookie
    assert tombstones(await dump_database(database)) == ["t2"]
    assert (await pull(client, old_cookie))["patch"] == [{"op": "del", "key": "todos/t2"}]
    assert (await pull(client, old_cookie - 1))["patch"][0] == {"op": "clear"}
    # Checkpoints older than the one in use are pruned.
    assert len((await dump_database(database))["_plasma_checkpoints"]) <= 3


async def test_compaction_keeps_read_rules_exact(make_app, database):
    app = make_app(schema, mutators, auth={"tok-alice": "alice", "tok-bob": "bob"}, blobs=None)
    async with as_user(app, "alice") as alice, as_user(app, "bob") as bob:
        await alice.post("/sync/push", json=push_body(
            note("ca", 1, "n1", public=True), note("ca", 2, "n2"), group="ga"))
        stale = (await bob.post("/sync/pull", json=pull_body(group="gb"))).json()
        assert set(puts(stale["patch"])) == {"notes/n1"}
        await alice.post("/sync/push", json=push_body(
            call("ca", 3, "edit_note", id="n1", public=False),
            call("ca", 4, "delete_note", id="n2"), group="ga"))
        dump = await dump_database(database)
        assert len(dump["_plasma_prior_notes"]) == 4  # two inserts, an edit, a delete
        await compact(app, horizon=0)
        dump = await dump_database(database)
        assert dump["_plasma_prior_notes"] == [] and tombstones(dump) == []
        answer = (await bob.post("/sync/pull", json=pull_body(stale["cookie"], group="gb")))
        assert answer.json()["patch"] == [{"op": "clear"}]
        # After the compaction, images are recorded again and dels are exact.
        await alice.post("/sync/push", json=push_body(
            note("ca", 5, "n3", public=True), group="ga"))
        cookie = (await bob.post("/sync/pull", json=pull_body(answer.json()["cookie"],
                                                              group="gb"))).json()["cookie"]
        await execute(database, "DELETE FROM notes WHERE id = 'n3'")
        since = (await bob.post("/sync/pull", json=pull_body(cookie, group="gb"))).json()
        assert dels(since["patch"]) == {"notes/n3"}


async def test_the_server_compacts_in_the_background(app, client, database):
    await push(client, add("c1", 1, "t1"))
    await push(client, mutation("c1", 2, "delete_todo", id="t1"))
    compactor = Compactor(app.state.plasma.storage, horizon=0, interval=0.01)
    compactor.start()
    try:
        for _ in range(500):
            if not tombstones(await dump_database(database)):
                break
            await asyncio.sleep(0.01)
        assert tombstones(await dump_database(database)) == []
    finally:
        await compactor.stop()


async def test_compacting_twice_or_an_empty_log_is_harmless(app, client):
    first = await compact(app, horizon=0)
    second = await compact(app, horizon=0)
    assert second.tombstones == 0 and second.min_version >= first.min_version
    assert (await pull(client))["patch"] == [{"op": "clear"}]
