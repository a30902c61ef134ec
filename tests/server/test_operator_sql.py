"""Operator SQL: writes through a separate sqlite3 connection (as in the ``sqlite3`` shell)
reach clients through the trigger-written change log, each with a new version."""

from __future__ import annotations

import pytest

from tests.server.helpers import add, db_version, dels, pull, push, puts, sqlite_connect


@pytest.fixture
def backend() -> str:
    """SQLite only: operator SQL goes through a sqlite3 connection."""
    return "sqlite"


def todo(id: str, title: str, *, done: bool = False) -> dict[str, object]:
    return {"id": id, "title": title, "done": done, "owner": None, "photo": None}


async def test_insert_update_delete_by_operator_sql_reach_the_next_pull(client, db_path):
    cookie = (await pull(client))["cookie"]

    with sqlite_connect(db_path) as sql:
        sql.execute("INSERT INTO todos (id, title) VALUES ('op1', 'from the shell')")
        sql.commit()
    inserted = await pull(client, cookie)
    assert inserted["cookie"] > cookie
    assert inserted["patch"] == [
        {"op": "put", "key": "todos/op1", "value": todo("op1", "from the shell")}]
    assert inserted["lastMutationIDChanges"] == {}

    with sqlite_connect(db_path) as sql:
        sql.execute("UPDATE todos SET done = 1, title = 'edited' WHERE id = 'op1'")
        sql.commit()
    updated = await pull(client, inserted["cookie"])
    assert updated["cookie"] > inserted["cookie"]
    assert updated["patch"] == [
        {"op": "put", "key": "todos/op1", "value": todo("op1", "edited", done=True)}]

    with sqlite_connect(db_path) as sql:
        sql.execute("DELETE FROM todos WHERE id = 'op1'")
        sql.commit()
    deleted = await pull(client, updated["cookie"])
    assert deleted["cookie"] > updated["cookie"]
    assert deleted["patch"] == [{"op": "del", "key": "todos/op1"}]

    # And a client starting from nothing sees none of it.
    assert (await pull(client))["patch"] == [{"op": "clear"}]


async def test_changing_a_primary_key_is_a_del_of_the_old_key_and_a_put_of_the_new(
        client, db_path):
    await push(client, add("c1", 1, "old", "keep me"))
    cookie = (await pull(client))["cookie"]

    with sqlite_connect(db_path) as sql:
        sql.execute("UPDATE todos SET id = 'new' WHERE id = 'old'")
        sql.commit()

    body = await pull(client, cookie)
    assert dels(body["patch"]) == {"todos/old"}
    assert puts(body["patch"]) == {"todos/new": todo("new", "keep me")}
    assert len(body["patch"]) == 2
    assert body["cookie"] > cookie


async def test_each_operator_write_gets_its_own_version(client, db_path):
    start = (await pull(client))["cookie"]
    assert start == db_version(db_path)
    with sqlite_connect(db_path) as sql:
        sql.executemany("INSERT INTO todos (id, title) VALUES (?, ?)",
                        [(f"r{i}", f"row {i}") for i in range(3)])
        sql.commit()
        sql.execute("UPDATE todos SET done = 1")  # three rows in one statement
        sql.commit()
    assert db_version(db_path) == start + 6
    body = await pull(client, start)
    assert body["cookie"] == start + 6
    assert puts(body["patch"]) == {f"todos/r{i}": todo(f"r{i}", f"row {i}", done=True)
                                   for i in range(3)}


async def test_an_uncommitted_operator_write_is_not_pulled(client, db_path):
    cookie = (await pull(client))["cookie"]
    with sqlite_connect(db_path) as sql:
        sql.execute("INSERT INTO todos (id, title) VALUES ('op1', 'pending')")
        assert sql.in_transaction
        during = await pull(client, cookie)
        assert during["patch"] == []
        assert during["cookie"] == cookie
        sql.commit()
    after = await pull(client, cookie)
    assert puts(after["patch"]) == {"todos/op1": todo("op1", "pending")}


async def test_operator_writes_and_pushes_interleave(client, db_path):
    cookie = (await pull(client))["cookie"]
    await push(client, add("c1", 1, "t1"))
    with sqlite_connect(db_path) as sql:
        sql.execute("UPDATE todos SET title = 'by the operator' WHERE id = 't1'")
        sql.commit()
    await push(client, add("c1", 2, "t2"))

    body = await pull(client, cookie)
    assert puts(body["patch"]) == {"todos/t1": todo("t1", "by the operator"),
                                   "todos/t2": todo("t2", "title t2")}
    assert body["lastMutationIDChanges"] == {"c1": 2}
    # The push after the operator's write did not reuse the operator's version.
    assert body["cookie"] == db_version(db_path)



async def test_values_json_cannot_carry_do_not_break_pulls(make_app, db_path):
    """Only operator SQL can store invalid JSON text in a json column or an infinite
    real: pulls still answer, with the text as a string and the real as null."""
    from plasma_nb import Mutators, Schema, col, table
    from tests.server.helpers import http

    notes = table("notes", id=col.id(), j=col.json(nullable=True), r=col.real(nullable=True))
    schema = Schema([notes])
    async with http(make_app(schema, Mutators(schema))) as c:
        await c.get("/healthz")
        with sqlite_connect(db_path) as sql:
            sql.execute("INSERT INTO notes (id, j, r) VALUES ('n1', '{not json', 9e999)")
            sql.commit()
        body = await pull(c)
    assert puts(body["patch"]) == {"notes/n1": {"id": "n1", "j": "{not json", "r": None}}
