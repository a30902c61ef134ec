"""Big pulls and trace replays on IndexedDB: SQLite 3.39's JSON functions, dropped capture
triggers and the commit record written through, under Pyodide."""

from __future__ import annotations

from plasma_nb import select
from plasma_nb.core.protocol import ClearOp, PullResponse, PutOp


def todo(id: str, title: str, done: bool = False) -> PutOp:
    return PutOp(f"todos/{id}", {"id": id, "title": title, "done": done, "owner": None,
                                 "photo": None})


async def test_a_big_pull_is_reported_and_written_through(client_api, todos, idb_name):
    t = todos.todos
    client = await client_api(None, schema=todos.schema, mutators=todos.mutators,
                              name=idb_name, storage="indexeddb")
    client.subscribe(t, lambda change: None)  # so that the net change is computed
    try:
        await client.mutate.add_todo(id="mine", title="pending")
        sync = client._engine.sync  # the pull path below the network
        patch = (ClearOp(), *(todo(f"r{i:03d}", f"row {i}") for i in range(300)))
        result = sync.pull_done(sync.pull_request(), PullResponse(5, {}, patch))
        await result.durable
        # The clear took nothing away that is still there: "mine" is pending, replayed.
        assert sorted(r["id"] for r in result.change.added["todos"]) == [
            f"r{i:03d}" for i in range(300)
        ]
        assert not result.change.removed and not result.change.changed
        # A second big pull changes one row; "mine" replays from its trace.
        patch2 = tuple(todo(f"r{i:03d}", f"row {i}", done=i == 7) for i in range(300))
        result = sync.pull_done(sync.pull_request(), PullResponse(6, {}, patch2))
        await result.durable
        [(before, after)] = result.change.changed["todos"]
        assert (before["id"], before["done"], after["done"]) == ("r007", False, True)
        assert not result.change.added and not result.change.removed
    finally:
        await client.close()
    again = await client_api(None, schema=todos.schema, mutators=todos.mutators,
                             name=idb_name, storage="indexeddb")
    try:
        rows = await again.query(select(t.id, t.done).order_by(t.id))
        assert len(rows) == 301 and {"id": "mine", "done": False} in rows
        assert {"id": "r007", "done": True} in rows
    finally:
        await again.close()
