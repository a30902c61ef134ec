"""Pull: snapshots, incremental patches, the cookie, and values on the wire."""

from __future__ import annotations

import asyncio
import json
import time

from plasma_nb import Mutators, Schema, col, table
from tests.server.helpers import (
    add,
    dels,
    errors,
    http,
    mutation,
    pull,
    push,
    puts,
)


def todo(id: str, title: str, *, done: bool = False) -> dict[str, object]:
    return {"id": id, "title": title, "done": done, "owner": None, "photo": None}


# -- snapshots and patches --------------------------------------------------------------------


async def test_a_null_cookie_gets_clear_and_the_whole_state(client):
    await push(client, add("c1", 1, "t1", "Buy milk"), add("c1", 2, "t2", "Walk"))

    body = await pull(client)

    assert set(body) == {"cookie", "lastMutationIDChanges", "patch", "mutationErrors"}
    assert body["patch"][0] == {"op": "clear"}
    assert sorted(body["patch"][1:], key=lambda op: op["key"]) == [
        {"op": "put", "key": "todos/t1", "value": todo("t1", "Buy milk")},
        {"op": "put", "key": "todos/t2", "value": todo("t2", "Walk")},
    ]
    assert body["lastMutationIDChanges"] == {"c1": 2}
    assert body["mutationErrors"] == []


async def test_an_empty_database_pulls_clear_alone(client):
    body = await pull(client)
    assert body["patch"] == [{"op": "clear"}]
    assert body["lastMutationIDChanges"] == {}


async def test_a_pull_since_a_cookie_gets_only_what_changed(client):
    await push(client, add("c1", 1, "t1"), add("c1", 2, "t2"), add("c1", 3, "t3"))
    first = await pull(client)

    await push(client, mutation("c1", 4, "mark_done", id="t1"),
               mutation("c1", 5, "delete_todo", id="t2"))
    second = await pull(client, first["cookie"])

    assert second["cookie"] > first["cookie"]
    assert {"op": "clear"} not in second["patch"]
    assert puts(second["patch"]) == {"todos/t1": todo("t1", "title t1", done=True)}
    assert dels(second["patch"]) == {"todos/t2"}
    assert len(second["patch"]) == 2
    assert second["lastMutationIDChanges"] == {"c1": 5}

    third = await pull(client, second["cookie"])
    assert third == {"cookie": second["cookie"], "lastMutationIDChanges": {}, "patch": [],
                     "mutationErrors": []}


async def test_a_row_added_then_deleted_since_the_cookie_is_a_del(client):
    first = await pull(client)
    await push(client, add("c1", 1, "t1"), mutation("c1", 2, "delete_todo", id="t1"))
    body = await pull(client, first["cookie"])
    assert body["patch"] == [{"op": "del", "key": "todos/t1"}]


async def test_the_cookie_only_grows(client):
    cookies = [(await pull(client))["cookie"]]
    for i in range(1, 6):
        title = " " if i % 2 else None  # rejected ones advance it too
        await push(client, add("c1", i, f"t{i}", title))
        cookies.append((await pull(client, cookies[-1]))["cookie"])
        cookies.append((await pull(client))["cookie"])
    assert cookies == sorted(cookies)
    assert len(set(cookies)) == 6


async def test_the_cookie_starts_from_the_clock(make_app):
    before = time.time_ns() // 1_000_000
    async with http(make_app()) as c:
        cookie = (await pull(c))["cookie"]
        assert (await c.get("/healthz")).json()["version"] == cookie
    after = time.time_ns() // 1_000_000
    assert before <= cookie <= after


async def test_a_recreated_database_does_not_go_back_in_cookies(make_app, tmp_path):
    async with http(make_app(database=f"sqlite:///{tmp_path}/old.db")) as c:
        await push(c, add("c1", 1, "t1"))
        old = (await pull(c))["cookie"]
    await asyncio.sleep(0.002)  # the clock must pass the versions the old database gave
    async with http(make_app(database=f"sqlite:///{tmp_path}/new.db")) as c:
        assert (await pull(c))["cookie"] > old


async def test_a_cookie_the_server_cannot_serve_incrementally_gets_a_snapshot(client):
    await push(client, add("c1", 1, "t1"))
    current = (await pull(client))["cookie"]
    for cookie in (0, 1, current + 1000):  # older than the log, or newer than the server
        body = await pull(client, cookie)
        assert body["patch"][0] == {"op": "clear"}, cookie
        assert sorted(puts(body["patch"])) == ["todos/t1"]
        assert body["cookie"] == current


# -- per group, since the cookie --------------------------------------------------------------


async def test_mutation_ids_and_errors_are_this_groups_since_the_cookie(client):
    await push(client, add("a1", 1, "t1"), add("a2", 1, "t2", " "), group="A")
    await push(client, add("b1", 1, "t3", " "), group="B")

    a = await pull(client, group="A")
    assert a["lastMutationIDChanges"] == {"a1": 1, "a2": 1}
    assert errors(a) == [("a2", 1, "add_todo", "title must not be empty")]
    assert sorted(puts(a["patch"])) == ["todos/t1"]

    await push(client, add("b1", 2, "t4", " "), add("b2", 1, "t5"), group="B")
    await push(client, add("a1", 2, "t6", " "), group="A")

    since = await pull(client, a["cookie"], group="A")
    assert since["lastMutationIDChanges"] == {"a1": 2}
    assert errors(since) == [("a1", 2, "add_todo", "title must not be empty")]
    # Rows are shared by every group: B's write reaches A.
    assert sorted(puts(since["patch"])) == ["todos/t5"]

    b = await pull(client, group="B")
    assert b["lastMutationIDChanges"] == {"b1": 2, "b2": 1}
    assert [e[:2] for e in errors(b)] == [("b1", 1), ("b1", 2)]


async def test_an_unknown_group_with_a_cookie_gets_client_state_not_found(client):
    cookie = (await pull(client))["cookie"]
    response = await client.post("/sync/pull", json={
        "pullVersion": 1, "clientGroupID": "never-seen", "cookie": cookie,
        "profileID": "p1", "schemaVersion": "1",
    })
    assert response.status_code == 200
    assert response.json() == {"error": "ClientStateNotFound"}


async def test_an_unknown_group_with_a_null_cookie_is_new(client):
    await push(client, add("c1", 1, "t1"), group="old")
    body = await pull(client, group="new")
    assert body["patch"][0] == {"op": "clear"}
    assert sorted(puts(body["patch"])) == ["todos/t1"]
    assert body["lastMutationIDChanges"] == {}
    # Now it is known: its cookie is good for the next pull.
    again = await pull(client, body["cookie"], group="new")
    assert again["patch"] == []


# -- GET /sync/pull ---------------------------------------------------------------------------


async def test_get_pull_takes_query_parameters(client):
    await push(client, add("c1", 1, "t1"))
    params = {"clientGroupID": "cg1", "profileID": "p1", "schemaVersion": "1"}

    absent = await client.get("/sync/pull", params=params)
    null = await client.get("/sync/pull", params={**params, "cookie": "null"})
    posted = await pull(client)
    assert absent.status_code == null.status_code == 200
    assert absent.json() == null.json() == posted
    assert absent.json()["patch"][0] == {"op": "clear"}

    await push(client, mutation("c1", 2, "mark_done", id="t1"))
    cookie = posted["cookie"]
    since = await client.get("/sync/pull", params={**params, "cookie": json.dumps(cookie)})
    assert since.status_code == 200
    assert since.json() == await pull(client, cookie)
    assert since.json()["patch"] == [
        {"op": "put", "key": "todos/t1", "value": todo("t1", "title t1", done=True)}]


async def test_get_pull_errors(client):
    params = {"clientGroupID": "cg1", "profileID": "p1", "schemaVersion": "1"}
    bad = await client.get("/sync/pull", params={**params, "cookie": "abc"})
    assert bad.status_code == 400
    assert bad.json() == {"error": "BadRequest",
                          "message": "cookie: expected a JSON-encoded integer or null, "
                                     "got 'abc'"}
    missing = await client.get("/sync/pull", params={"profileID": "p1", "schemaVersion": "1"})
    assert missing.status_code == 400
    assert missing.json() == {"error": "BadRequest",
                              "message": "clientGroupID: required field is missing"}
    version = await client.get("/sync/pull", params={**params, "pullVersion": "2"})
    assert version.json() == {"error": "VersionNotSupported", "versionType": "pull"}
    schema = await client.get("/sync/pull", params={**params, "schemaVersion": "7"})
    assert schema.json() == {"error": "VersionNotSupported", "versionType": "schema"}
    unknown = await client.get("/sync/pull", params={**params, "clientGroupID": "zz",
                                                     "cookie": "5"})
    assert unknown.status_code == 200
    assert unknown.json() == {"error": "ClientStateNotFound"}


# -- values on the wire -----------------------------------------------------------------------

kinds = table(
    "kinds",
    id=col.id(),
    t=col.text(nullable=True),
    i=col.integer(nullable=True),
    r=col.real(nullable=True),
    b=col.boolean(nullable=True),
    j=col.json(nullable=True),
    h=col.blob(nullable=True),
    ts=col.timestamp(nullable=True),
)
counters = table("counters", id=col.integer(primary_key=True), label=col.text(),
                 on=col.boolean(default=True))
wire_schema = Schema([kinds, counters], version="1")
wire_mutators = Mutators(wire_schema)


@wire_mutators.register
async def put_kind(tx, *, row: dict[str, object]):
    await tx.upsert(kinds).values(**row)


@wire_mutators.register
async def put_counter(tx, *, id: int, label: str):
    await tx.upsert(counters).values(id=id, label=label)


@wire_mutators.register
async def drop_counter(tx, *, id: int):
    await tx.delete(counters).where(counters.id == id)


HASH = "0123456789abcdef" * 4
FULL = {
    "id": "k1",
    "t": "héllo \u2603 / \"quoted\"",
    "i": 2**53,
    "r": 2.5,
    "b": True,
    "j": {"list": [1, None, "x", {"deep": False}], "n": 1.5},
    "h": HASH,
    "ts": "2024-11-26T03:04:05.123456Z",
}


async def test_every_column_type_has_its_wire_form(make_app):
    # Without a blob store, blob columns hold any hash (with one, see test_blob_push.py).
    async with http(make_app(wire_schema, wire_mutators, blobs=None)) as c:
        pushed = await push(
            c,
            mutation("c1", 1, "put_kind", row=FULL),
            mutation("c1", 2, "put_kind", row={"id": "k2", "b": False, "i": -(2**53), "r": 3,
                                              "j": [], "ts": "2024-01-02T03:04:05Z"}),
            mutation("c1", 3, "put_kind", row={"id": "k3"}),
            mutation("c1", 4, "put_kind", row={"id": "k4", "j": "just text"}),
        )
        assert pushed == {}
        response = await c.post("/sync/pull", json={
            "pullVersion": 1, "clientGroupID": "cg1", "cookie": None, "profileID": "p1",
            "schemaVersion": "1"})
        rows = puts(response.json()["patch"])

    assert rows["kinds/k1"] == FULL
    assert rows["kinds/k2"] == {"id": "k2", "t": None, "i": -(2**53), "r": 3.0, "b": False,
                                "j": [], "h": None, "ts": "2024-01-02T03:04:05.000000Z"}
    assert rows["kinds/k3"] == {"id": "k3", "t": None, "i": None, "r": None, "b": None,
                                "j": None, "h": None, "ts": None}
    assert rows["kinds/k4"]["j"] == "just text"
    # JSON booleans and nested JSON, not 1/0 or strings holding JSON:
    raw = response.text
    assert '"b":true' in raw and '"b":false' in raw
    assert '"j":{"' in raw and '"j":"{' not in raw  # (JSONB may reorder an object's keys)
    assert '"r":3.0' in raw
    assert isinstance(rows["kinds/k2"]["r"], float)
    for row in rows.values():
        assert row["ts"] is None or row["ts"].endswith("Z")


async def test_values_out_of_range_are_rejected(make_app):
    async with http(make_app(wire_schema, wire_mutators)) as c:
        body = await push(
            c,
            mutation("c1", 1, "put_kind", row={"id": "a", "i": 2**53 + 1}),
            mutation("c1", 2, "put_kind", row={"id": "b", "h": "ABC"}),
            mutation("c1", 3, "put_kind", row={"id": "c", "ts": "2024-01-02 03:04:05"}),
            mutation("c1", 4, "put_kind", row={"id": "d", "b": 1}),
        )
        assert [e[1] for e in errors(body)] == [1, 2, 3, 4]
        assert [e[3].split(":")[0] for e in errors(body)] == [
            "kinds.i", "kinds.h", "kinds.ts", "kinds.b"]
        assert puts((await pull(c))["patch"]) == {}


async def test_integer_keys_work_in_put_and_del(make_app):
    async with http(make_app(wire_schema, wire_mutators)) as c:
        await push(c, mutation("c1", 1, "put_counter", id=7, label="seven"),
                   mutation("c1", 2, "put_counter", id=-3, label="minus three"),
                   mutation("c1", 3, "put_counter", id=2**53, label="big"))
        first = await pull(c)
        assert puts(first["patch"]) == {
            "counters/7": {"id": 7, "label": "seven", "on": True},
            "counters/-3": {"id": -3, "label": "minus three", "on": True},
            f"counters/{2**53}": {"id": 2**53, "label": "big", "on": True},
        }

        await push(c, mutation("c1", 4, "drop_counter", id=7),
                   mutation("c1", 5, "put_counter", id=-3, label="changed"))
        second = await pull(c, first["cookie"])
        assert dels(second["patch"]) == {"counters/7"}
        assert puts(second["patch"]) == {
            "counters/-3": {"id": -3, "label": "changed", "on": True}}
        assert len(second["patch"]) == 2
