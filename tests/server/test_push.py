"""The push rules of DESIGN section 5, one by one, over HTTP in process."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from plasma_nb import Mutators, Schema, col, table
from plasma_nb.server import Limits
from tests.server.helpers import (
    add,
    errors,
    http,
    mutation,
    pull,
    push,
    push_body,
    puts,
    sqlite_connect,
)

EMPTY_TITLE = "title must not be empty"


OBSERVER = "observer"  # a client group that only pulls, to look at the server's state


async def rows(client: httpx.AsyncClient, table: str = "todos") -> dict[str, dict[str, Any]]:
    """Every row of ``table`` by key, as a fresh client would pull it."""
    patch = (await pull(client, group=OBSERVER))["patch"]
    prefix = f"{table}/"
    return {key[len(prefix):]: value for key, value in puts(patch).items()
            if key.startswith(prefix)}


async def todo_ids(client: httpx.AsyncClient) -> list[str]:
    return sorted(await rows(client))


async def note_rows(client: httpx.AsyncClient) -> list[tuple[str, str, int]]:
    return sorted((r["id"], r["body"], r["n"]) for r in (await rows(client, "notes")).values())


async def last_ids(client: httpx.AsyncClient, group: str = "cg1") -> dict[str, int]:
    """The last mutation ids of ``group``'s clients."""
    result: dict[str, int] = (await pull(client, group=group))["lastMutationIDChanges"]
    return result


async def version(client: httpx.AsyncClient) -> int:
    cookie: int = (await pull(client, group=OBSERVER))["cookie"]
    return cookie


# -- idempotency ------------------------------------------------------------------------------


async def test_pushing_the_same_mutations_twice_applies_them_once(client):
    batch = [add("c1", 1, "t1"), add("c1", 2, "t2", title="  "), add("c1", 3, "t3")]
    first = await push(client, *batch)
    assert errors(first) == [("c1", 2, "add_todo", EMPTY_TITLE)]
    before = await rows(client)
    start = await version(client)

    second = await push(client, *batch)

    # Skipped as already processed, and the rejected one is reported again.
    assert second == first
    assert await rows(client) == before
    assert sorted(before) == ["t1", "t3"]
    assert await version(client) == start
    assert await last_ids(client) == {"c1": 3}


async def test_a_repush_overlapping_new_mutations_applies_only_the_new_ones(client):
    await push(client, add("c1", 1, "t1"), add("c1", 2, "t2"))
    body = await push(client, add("c1", 1, "t1"), add("c1", 2, "t2"), add("c1", 3, "t3"))
    assert body == {}
    assert await todo_ids(client) == ["t1", "t2", "t3"]
    assert await last_ids(client) == {"c1": 3}


async def test_a_successful_push_answers_an_empty_object(client):
    response = await client.post("/sync/push", json={
        "pushVersion": 1, "clientGroupID": "cg1", "profileID": "p1", "schemaVersion": "1",
        "mutations": [{"clientID": "c1", "id": 1, "name": "add_todo",
                       "args": {"id": "t1", "title": "Buy milk"}, "timestamp": 1732590000000}],
    })
    assert response.status_code == 200
    assert response.json() == {}


async def test_an_id_repeated_within_one_push_is_applied_and_reported_once(client):
    body = await push(client, add("c1", 1, "t1", " "), add("c1", 1, "t1", " "),
                      add("c1", 2, "t2"), add("c1", 2, "t2"))
    assert errors(body) == [("c1", 1, "add_todo", EMPTY_TITLE)]
    assert await todo_ids(client) == ["t2"]
    again = await push(client, add("c1", 1, "t1", " "), add("c1", 1, "t1", " "))
    assert again == body


async def test_an_empty_push_is_fine(client):
    assert await push(client) == {}
    assert await last_ids(client) == {}


# -- rejected mutations -----------------------------------------------------------------------


async def test_a_mutation_error_rolls_the_mutator_back_and_the_push_goes_on(
        lab_client):
    body = await push(
        lab_client,
        mutation("c1", 1, "add_note", id="a", body="first"),
        mutation("c1", 2, "add_then_reject", id="b", body="second"),
        mutation("c1", 3, "add_note", id="c", body="third"),
    )

    assert body == {"mutationErrors": [{"clientID": "c1", "id": 2, "name": "add_then_reject",
                                        "message": "note b rejected after writing"}]}
    # Neither the insert of b nor the update of a (n=99) survived.
    assert await note_rows(lab_client) == [("a", "first", 0), ("c", "third", 0)]
    assert await last_ids(lab_client) == {"c1": 3}

    pulled = await pull(lab_client)
    assert pulled["lastMutationIDChanges"] == {"c1": 3}
    assert sorted(puts(pulled["patch"])) == ["notes/a", "notes/c"]
    assert errors(pulled) == [("c1", 2, "add_then_reject", "note b rejected after writing")]


async def test_an_unexpected_exception_is_an_internal_error_without_details(
        lab_client, caplog):
    with caplog.at_level(logging.ERROR, logger="plasma_nb.server"):
        response = await lab_client.post("/sync/push", json={
            "pushVersion": 1, "clientGroupID": "cg1", "profileID": "p1", "schemaVersion": "1",
            "mutations": [
                mutation("c1", 1, "add_note", id="a", body="first"),
                mutation("c1", 2, "add_then_crash", id="b", body="second"),
                mutation("c1", 3, "add_note", id="c", body="third"),
            ],
        })

    assert response.status_code == 200
    assert response.json() == {"mutationErrors": [{
        "clientID": "c1", "id": 2, "name": "add_then_crash",
        "message": "internal error in mutator add_then_crash",
    }]}
    for leak in ("Traceback", "RuntimeError", "secret", "passwd"):
        assert leak not in response.text
    # The operator sees the details in the log instead, once.
    [record] = [r for r in caplog.records if "add_then_crash" in r.getMessage()]
    assert record.exc_info is not None
    assert "secret detail" in caplog.text
    assert await note_rows(lab_client) == [("a", "first", 0), ("c", "third", 0)]

    pulled = await pull(lab_client)
    assert errors(pulled) == [("c1", 2, "add_then_crash",
                               "internal error in mutator add_then_crash")]


async def test_an_unknown_mutator_is_rejected_and_processed(client):
    body = await push(client, mutation("c1", 1, "no_such_mutator", id="t1"), add("c1", 2, "t2"))

    [(cid, mid, name, message)] = errors(body)
    assert (cid, mid, name) == ("c1", 1, "no_such_mutator")
    assert message == (
        "no mutator named 'no_such_mutator'; "
        "registered: add_todo, delete_todo, mark_done, rename"
    )
    assert await todo_ids(client) == ["t2"]
    assert await last_ids(client) == {"c1": 2}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"id": "t1"}, "bad arguments for mutator 'add_todo': missing title"),
        ({"id": "t1", "title": "x", "colour": "red"},
         "bad arguments for mutator 'add_todo': unexpected colour (it takes id, title)"),
        ({"id": 5, "title": "x"}, "todos.id: expected text, got 5"),
        ({"id": None, "title": "x"}, "todos.id must not be null"),
    ],
)
async def test_bad_arguments_are_rejected_with_a_message(client, args, message):
    body = await push(client, mutation("c1", 1, "add_todo", **args), add("c1", 2, "t2"))
    assert errors(body) == [("c1", 1, "add_todo", message)]
    assert await todo_ids(client) == ["t2"]
    assert await last_ids(client) == {"c1": 2}


async def test_a_duplicate_key_is_a_rejection_not_a_crash(client):
    body = await push(client, add("c1", 1, "t1"), add("c1", 2, "t1", title="again"))
    assert errors(body) == [("c1", 2, "add_todo", "todos: a row with key 't1' already exists")]
    assert [r["title"] for r in (await rows(client)).values()] == ["title t1"]


async def test_push_reports_only_its_own_rejections(client):
    await push(client, add("c1", 1, "t1", title=" "))
    other = await push(client, add("c2", 1, "t2", title=" "), group="cg2")
    assert errors(other) == [("c2", 1, "add_todo", EMPTY_TITLE)]
    mine = await push(client, add("c1", 2, "t3"))
    assert mine == {}


async def test_errors_reach_the_next_pull_since_the_cookie(client):
    await push(client, add("c1", 1, "t1", title=" "))
    first = await pull(client)
    assert errors(first) == [("c1", 1, "add_todo", EMPTY_TITLE)]

    await push(client, add("c1", 2, "t2"), add("c1", 3, "t3", title=" "))
    second = await pull(client, first["cookie"])
    assert errors(second) == [("c1", 3, "add_todo", EMPTY_TITLE)]
    assert second["lastMutationIDChanges"] == {"c1": 3}

    third = await pull(client, second["cookie"])
    assert third["mutationErrors"] == []
    assert third["lastMutationIDChanges"] == {}


# -- gaps, foreign clients, unknown clients ---------------------------------------------------


async def test_a_gap_stops_the_push_with_400_and_keeps_what_came_before(client):
    response = await client.post("/sync/push", json={
        "pushVersion": 1, "clientGroupID": "cg1", "profileID": "p1", "schemaVersion": "1",
        "mutations": [add("c1", 1, "t1"), add("c1", 2, "t2"), add("c1", 4, "t4"),
                      add("c1", 5, "t5")],
    })

    assert response.status_code == 400
    assert response.json() == {
        "error": "BadRequest",
        "message": "mutation id gap for client 'c1': expected 3, got 4",
    }
    assert await todo_ids(client) == ["t1", "t2"]
    assert await last_ids(client) == {"c1": 2}
    pulled = await pull(client)
    assert pulled["lastMutationIDChanges"] == {"c1": 2}


async def test_a_gap_at_the_start_of_a_push_changes_nothing(client):
    await push(client, add("c1", 1, "t1"))
    start = await version(client)
    response = await client.post("/sync/push", json={
        "pushVersion": 1, "clientGroupID": "cg1", "profileID": "p1", "schemaVersion": "1",
        "mutations": [add("c1", 7, "t7")],
    })
    assert response.status_code == 400
    assert response.json() == {
        "error": "BadRequest",
        "message": "mutation id gap for client 'c1': expected 2, got 7",
    }
    assert await todo_ids(client) == ["t1"]
    assert await version(client) == start


async def test_a_client_of_another_group_is_forbidden_and_nothing_is_applied(client):
    await push(client, add("c1", 1, "t1"), group="cg1")
    start = await version(client)

    response = await client.post("/sync/push", json={
        "pushVersion": 1, "clientGroupID": "cg2", "profileID": "p1", "schemaVersion": "1",
        "mutations": [add("c2", 1, "t2"), add("c1", 2, "t3")],
    })

    assert response.status_code == 403
    assert response.json() == {
        "error": "Forbidden",
        "message": "client 'c1' belongs to another client group",
    }
    # Not even the group was created.
    assert await pull(client, start, group="cg2") == {"error": "ClientStateNotFound"}
    assert await todo_ids(client) == ["t1"]
    assert await last_ids(client) == {"c1": 1}
    assert await version(client) == start


async def test_an_unknown_client_starting_above_1_gets_client_state_not_found(
        client):
    response = await client.post("/sync/push", json={
        "pushVersion": 1, "clientGroupID": "cg1", "profileID": "p1", "schemaVersion": "1",
        "mutations": [add("c9", 5, "t5")],
    })
    assert response.status_code == 200
    assert response.json() == {"error": "ClientStateNotFound"}
    assert await todo_ids(client) == []
    assert await last_ids(client) == {}


async def test_client_state_not_found_keeps_the_mutations_before_it(client):
    await push(client, add("c1", 1, "t1"))
    body = await push(client, add("c1", 2, "t2"), add("c9", 3, "t3"))
    assert body == {"error": "ClientStateNotFound"}
    assert await todo_ids(client) == ["t1", "t2"]
    assert await last_ids(client) == {"c1": 2}


async def test_clients_interleave_in_one_push(client):
    body = await push(client, add("c1", 1, "a"), add("c2", 1, "b"), add("c1", 2, "c"),
                      add("c2", 2, "d", title=" "))
    assert errors(body) == [("c2", 2, "add_todo", EMPTY_TITLE)]
    assert await last_ids(client) == {"c1": 2, "c2": 2}
    assert await todo_ids(client) == ["a", "b", "c"]


# -- versions ---------------------------------------------------------------------------------


async def test_version_not_supported_for_another_push_version(client):
    for body in (
        {"pushVersion": 2, "clientGroupID": "cg1", "profileID": "p1", "schemaVersion": "1",
         "mutations": [add("c1", 1, "t1")]},
        {"pushVersion": 0, "somethingElse": True},  # another version may have another shape
    ):
        response = await client.post("/sync/push", json=body)
        assert response.status_code == 200
        assert response.json() == {"error": "VersionNotSupported", "versionType": "push"}
    assert await todo_ids(client) == []


async def test_version_not_supported_for_another_pull_version(client):
    response = await client.post("/sync/pull", json={
        "pullVersion": 2, "clientGroupID": "cg1", "cookie": None, "profileID": "p1",
        "schemaVersion": "1",
    })
    assert response.status_code == 200
    assert response.json() == {"error": "VersionNotSupported", "versionType": "pull"}


async def test_version_not_supported_for_an_unknown_schema_version(client):
    pushed = await push(client, add("c1", 1, "t1"), schemaVersion="9")
    assert pushed == {"error": "VersionNotSupported", "versionType": "schema"}
    pulled = await pull(client, schemaVersion="9")
    assert pulled == {"error": "VersionNotSupported", "versionType": "schema"}
    assert await todo_ids(client) == []
    assert await last_ids(client) == {}


async def test_a_compatible_schema_version_is_served(make_app):
    things = table("things", id=col.id(), name=col.text())
    schema = Schema([things], version="2", compatible=["1"])
    mutators = Mutators(schema)

    @mutators.register
    async def add_thing(tx, *, id: str, name: str):
        await tx.insert(things).values(id=id, name=name)

    async with http(make_app(schema, mutators)) as c:
        assert await push(c, mutation("c1", 1, "add_thing", id="x", name="old client"),
                          schemaVersion="1") == {}
        assert await push(c, mutation("c1", 2, "add_thing", id="y", name="new client"),
                          schemaVersion="2") == {}
        assert await push(c, mutation("c1", 3, "add_thing", id="z", name="?"),
                          schemaVersion="0") == {"error": "VersionNotSupported",
                                                 "versionType": "schema"}
        pulled = await pull(c, schemaVersion="1")
        assert sorted(puts(pulled["patch"])) == ["things/x", "things/y"]


# -- the per-push limit -----------------------------------------------------------------------


async def test_past_the_per_push_limit_the_first_n_are_processed(make_app):
    app = make_app(limits=Limits(max_mutations_per_push=3))
    batch = [add("c1", i, f"t{i}", title=" " if i == 2 else None) for i in range(1, 6)]
    async with http(app) as c:
        schema = (await c.get("/sync/schema")).json()
        assert schema["limits"]["maxMutationsPerPush"] == 3

        first = await push(c, *batch)
        assert errors(first) == [("c1", 2, "add_todo", EMPTY_TITLE)]
        assert (await pull(c))["lastMutationIDChanges"] == {"c1": 3}
        assert await todo_ids(c) == ["t1", "t3"]

        # The client pushes what is left (with what was processed) next time.
        second = await push(c, *batch)
        assert errors(second) == [("c1", 2, "add_todo", EMPTY_TITLE)]
        assert (await pull(c))["lastMutationIDChanges"] == {"c1": 5}
        assert await todo_ids(c) == ["t1", "t3", "t4", "t5"]


async def test_the_limit_counts_processed_mutations_not_skipped_ones(make_app):
    app = make_app(limits=Limits(max_mutations_per_push=2))
    async with http(app) as c:
        await push(c, add("c1", 1, "t1"), add("c1", 2, "t2"))
        await push(c, *[add("c1", i, f"t{i}") for i in range(1, 6)])
        assert await last_ids(c) == {"c1": 4}


# -- versions advance -------------------------------------------------------------------------


async def test_every_push_that_processes_mutations_advances_the_version(client):
    start = (await pull(client))["cookie"]
    await push(client, add("c1", 1, "t1"), add("c1", 2, "t2", title=" "),
               mutation("c1", 3, "nope"), mutation("c1", 4, "mark_done", id="t1"))
    after = await pull(client, start)
    assert after["cookie"] > start
    assert after["cookie"] == await version(client)
    assert after["lastMutationIDChanges"] == {"c1": 4}
    assert [e[1] for e in errors(after)] == [2, 3]

    # Skipped mutations are not processed again: the version stays.
    await push(client, add("c1", 1, "t1"), add("c1", 2, "t2", title=" "))
    assert (await pull(client, after["cookie"]))["cookie"] == after["cookie"]
    assert await version(client) == after["cookie"]

    # A rejected mutation alone still advances it: its error is news to pull.
    await push(client, add("c1", 5, "t5", title=" "))
    last = await pull(client, after["cookie"])
    assert last["cookie"] > after["cookie"]
    assert last["patch"] == []
    assert errors(last) == [("c1", 5, "add_todo", EMPTY_TITLE)]
    assert last["lastMutationIDChanges"] == {"c1": 5}


# -- transient failures -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite"])  # holds SQLite's write lock
async def test_a_locked_database_answers_503_with_retry_after_and_changes_nothing(
        client, db_path):
    await push(client, add("c1", 1, "t1"))
    with sqlite_connect(db_path) as operator:
        operator.execute("BEGIN IMMEDIATE")  # holds the write lock past the busy timeout
        operator.execute("INSERT INTO todos (id, title) VALUES ('op', 'pending')")
        response = await client.post("/sync/push", json=push_body(add("c1", 2, "t2")))
        operator.rollback()

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json() == {"error": "Unavailable",
                               "message": "the database is busy: database is locked"}
    assert await last_ids(client) == {"c1": 1}
    # The client retries: applied once.
    assert await push(client, add("c1", 2, "t2")) == {}
    assert await push(client, add("c1", 2, "t2")) == {}
    assert await todo_ids(client) == ["t1", "t2"]
    assert await last_ids(client) == {"c1": 2}
