"""The Postgres backend against a real server (``PLASMA_TEST_POSTGRES``), one Postgres
schema per test: the push/pull rules as on SQLite, operator SQL, ordering, concurrency
(a pull never misses a change), transient failures (503, then applied once), LISTEN
pokes and migrations (the push connection: test_postgres_push.py)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from starlette.applications import Starlette

from notebooks import todos as todos_module
from plasma_nb import Mutators, Schema, col, table
from plasma_nb.core.errors import ConfigError, SchemaError
from plasma_nb.server.database import open_storage
from plasma_nb.server.storage.postgres import PostgresStorage
from plasma_nb.server.storage.postgres_sql import poke_channel, split_url, version_setting
from tests.server.helpers import (
    add,
    dels,
    errors,
    http,
    lab_mutators,
    lab_schema,
    mutation,
    pull,
    push,
    push_body,
    puts,
)
from tests.server.pg import PgEnv, with_params
from tests.server.slow_app import Gate, slow_mutators, slow_schema

pytestmark = pytest.mark.postgres


@pytest.fixture
async def client(pg: PgEnv) -> AsyncIterator[httpx.AsyncClient]:
    async with http(pg.app()) as c:
        await c.get("/healthz")
        yield c


def storage_of(app: Starlette) -> PostgresStorage:
    storage = app.state.plasma.storage
    assert isinstance(storage, PostgresStorage)
    return storage


# -- the rules, as on SQLite ------------------------------------------------------------------


async def test_push_then_pull_round_trip(pg: PgEnv, client: httpx.AsyncClient) -> None:
    first = await pull(client)
    assert first["patch"] == [{"op": "clear"}]
    assert await push(client, add("c1", 1, "t1"), add("c1", 2, "t2")) == {}
    body = await pull(client, first["cookie"])
    assert body["cookie"] > first["cookie"]
    assert body["lastMutationIDChanges"] == {"c1": 2}
    assert puts(body["patch"]) == {
        f"todos/{t}": {"id": t, "title": f"title {t}", "done": False, "owner": None,
                       "photo": None}
        for t in ("t1", "t2")
    }
    await push(client, mutation("c1", 3, "mark_done", id="t1"),
               mutation("c1", 4, "delete_todo", id="t2"))
    later = await pull(client, body["cookie"])
    assert puts(later["patch"])["todos/t1"]["done"] is True
    assert dels(later["patch"]) == {"todos/t2"}
    assert later["lastMutationIDChanges"] == {"c1": 4}
    assert (await pull(client, later["cookie"]))["patch"] == []


async def test_a_repush_is_applied_once_and_moves_no_version(
        pg: PgEnv, client: httpx.AsyncClient) -> None:
    body = [add("c1", 1, "t1"), add("c1", 2, "t1", "again"), add("c1", 3, "t3")]
    first = await push(client, *body)
    version = (await pull(client))["cookie"]
    again = await push(client, *body)
    assert errors(again) == errors(first) == [
        ("c1", 2, "add_todo", "todos: a row with key 't1' already exists")
    ]
    assert (await pull(client))["cookie"] == version
    assert await pg.rows("SELECT id, title FROM todos ORDER BY id") == [
        ("t1", "title t1"), ("t3", "title t3")
    ]
    assert await pg.rows("SELECT id, last_mutation_id FROM _plasma_clients") == [("c1", 3)]


async def test_a_rejected_mutator_is_rolled_back_and_its_error_recorded(pg: PgEnv) -> None:
    async with http(pg.app(lab_schema, lab_mutators)) as c:
        start = (await pull(c))["cookie"]
        answer = await push(
            c,
            mutation("c1", 1, "add_note", id="a", body="first"),
            mutation("c1", 2, "add_then_reject", id="b", body="second"),
            mutation("c1", 3, "add_then_crash", id="x", body="boom"),
            mutation("c1", 4, "add_note", id="c", body="third"),
        )
        assert errors(answer) == [
            ("c1", 2, "add_then_reject", "note b rejected after writing"),
            ("c1", 3, "add_then_crash", "internal error in mutator add_then_crash"),
        ]
        assert await pg.rows("SELECT id, body, n FROM notes ORDER BY id") == [
            ("a", "first", 0), ("c", "third", 0)
        ]
        body = await pull(c, start)
        assert errors(body) == errors(answer)
        assert body["lastMutationIDChanges"] == {"c1": 4}
        assert set(puts(body["patch"])) == {"notes/a", "notes/c"}
        # Errors are reported again for a repush, and to no other group.
        assert errors(await push(c, mutation("c1", 3, "add_note", id="x", body="x"))) == [
            ("c1", 3, "add_then_crash", "internal error in mutator add_then_crash")
        ]
        assert errors(await pull(c, group="other")) == []


async def test_a_gap_answers_400_and_keeps_what_came_before(
        pg: PgEnv, client: httpx.AsyncClient) -> None:
    answer = await push(client, add("c1", 1, "t1"), add("c1", 2, "t2"), add("c1", 5, "t5"),
                        status=400)
    assert answer["error"] == "BadRequest"
    assert "'c1'" in answer["message"] and "expected 3, got 5" in answer["message"]
    assert await pg.rows("SELECT id FROM todos ORDER BY id") == [("t1",), ("t2",)]
    assert await pg.rows("SELECT id, last_mutation_id FROM _plasma_clients") == [("c1", 2)]


async def test_client_state_not_found(pg: PgEnv, client: httpx.AsyncClient) -> None:
    version = (await pull(client))["cookie"]
    answer = await push(client, add("c9", 2, "t1"), group="fresh")
    assert answer == {"error": "ClientStateNotFound"}
    assert await pg.rows("SELECT count(*) FROM todos") == [(0,)]
    # Nothing was processed: no group is left behind, and the version did not move.
    assert await pg.rows("SELECT id FROM _plasma_client_groups ORDER BY id") == [("cg1",)]
    assert (await pull(client, version))["cookie"] == version
    assert await pull(client, 12345, group="nobody") == {"error": "ClientStateNotFound"}
    # A null cookie registers the group; then its cookie is known.
    cookie = (await pull(client, group="newbie"))["cookie"]
    assert "cookie" in await pull(client, cookie, group="newbie")


async def test_a_cookie_from_the_future_or_before_the_log_gets_a_snapshot(
        pg: PgEnv, client: httpx.AsyncClient) -> None:
    await push(client, add("c1", 1, "t1"))
    cookie = (await pull(client))["cookie"]
    for stale in (cookie + 1000, 1):
        body = await pull(client, stale)
        assert body["patch"][0] == {"op": "clear"}
        assert set(puts(body["patch"])) == {"todos/t1"}


async def test_a_client_of_another_group_is_forbidden(
        pg: PgEnv, client: httpx.AsyncClient) -> None:
    await push(client, add("c1", 1, "t1"))
    answer = await push(client, add("c1", 2, "t2"), group="cg2", status=403)
    assert answer["error"] == "Forbidden"
    assert await pg.rows("SELECT id FROM todos") == [("t1",)]


async def test_nul_characters_are_refused_not_a_crash(
        pg: PgEnv, client: httpx.AsyncClient) -> None:
    answer = await push(client, add("c1", 1, "t1", "a\x00b"))
    assert errors(answer) == [
        ("c1", 1, "add_todo", "todos: text cannot contain NUL characters here")
    ]
    assert (await push(client, add("c\x00", 1, "t2"), status=400))["error"] == "BadRequest"


# -- operator SQL --------------------------------------------------------------------------


async def test_operator_sql_reaches_the_next_pull(pg: PgEnv, client: httpx.AsyncClient) -> None:
    await push(client, add("c1", 1, "t1"), add("c1", 2, "t2"), add("c1", 3, "t3"))
    cookie = (await pull(client))["cookie"]
    op = await pg.operator()
    await op.execute("INSERT INTO todos (id, title) VALUES ('op1', 'from psql')")
    await op.execute("UPDATE todos SET title = 'renamed' WHERE id = 't1'")
    await op.execute("DELETE FROM todos WHERE id = 't2'")
    await op.execute("UPDATE todos SET id = 't3b' WHERE id = 't3'")
    body = await pull(client, cookie)
    assert body["cookie"] == cookie + 4  # one version per operator transaction
    assert puts(body["patch"]) == {
        "todos/op1": {"id": "op1", "title": "from psql", "done": False, "owner": None,
                      "photo": None},
        "todos/t1": {"id": "t1", "title": "renamed", "done": False, "owner": None,
                     "photo": None},
        "todos/t3b": {"id": "t3b", "title": "title t3", "done": False, "owner": None,
                      "photo": None},
    }
    assert dels(body["patch"]) == {"todos/t2", "todos/t3"}

    # One transaction of many writes takes one version; an uncommitted one is not pulled.
    cookie = body["cookie"]
    async with op.transaction():
        await op.execute("UPDATE todos SET done = true")
        await op.execute("INSERT INTO todos (id, title) VALUES ('op2', 'x')")
        assert (await pull(client, cookie))["patch"] == []
    body = await pull(client, cookie)
    assert body["cookie"] == cookie + 1
    assert len(puts(body["patch"])) == 4

    await op.execute("TRUNCATE todos")
    body = await pull(client, body["cookie"])
    assert dels(body["patch"]) == {"todos/op1", "todos/t1", "todos/t3b", "todos/op2"}


async def test_operator_sql_from_another_search_path_still_logs(pg: PgEnv) -> None:
    async with http(pg.app()) as c:
        cookie = (await pull(c))["cookie"]
        conn = await asyncpg.connect(pg.base_url)  # search_path: "$user", public
        try:
            await conn.execute(
                f'INSERT INTO "{pg.namespace}".todos (id, title) VALUES (\'q\', \'qualified\')'
            )
        finally:
            await conn.close()
        assert set(puts((await pull(c, cookie))["patch"])) == {"todos/q"}


# -- ordering --------------------------------------------------------------------------------

words = table("words", id=col.id(), w=col.text(nullable=True))
orders = table("orders", id=col.id(), ids=col.json())
order_schema = Schema([words, orders], version="1")
order_mutators = Mutators(order_schema)


@order_mutators.register
async def add_word(tx: Any, *, id: str, w: str | None) -> None:
    await tx.insert(words).values(id=id, w=w)


@order_mutators.register
async def record_order(tx: Any, *, id: str, desc: bool, like: str | None = None) -> None:
    query = tx.select(words.id).order_by(words.w.desc() if desc else words.w, words.id)
    if like is not None:
        query = query.where(words.w.ilike(like))
    rows = await query.all()
    await tx.upsert(orders).values(id=id, ids=[r["id"] for r in rows])


WORDS = ["b", "B", "a", "Z", "é", "É", "z", None, "😀", "ä", "aa", "A", "", None, "ß"]


async def _orders_on(database: str, make: Any) -> dict[str, Any]:
    async with http(make(order_schema, order_mutators, database=database)) as c:
        muts = [mutation("c1", i + 1, "add_word", id=f"w{i:02d}", w=w)
                for i, w in enumerate(WORDS)]
        n = len(muts)
        muts += [mutation("c1", n + 1, "record_order", id="asc", desc=False),
                 mutation("c1", n + 2, "record_order", id="desc", desc=True),
                 mutation("c1", n + 3, "record_order", id="ilike", desc=False, like="%A%")]
        assert await push(c, *muts) == {}
        found = puts((await pull(c))["patch"])
        return {k: found[f"orders/{k}"]["ids"] for k in ("asc", "desc", "ilike")}


async def test_text_orders_by_code_point_with_nulls_first_as_on_sqlite(
        pg: PgEnv, tmp_path: Path) -> None:
    on_pg = await _orders_on(pg.url, pg.app)
    on_sqlite = await _orders_on(f"sqlite:///{tmp_path / 'order.db'}", pg.app)
    ids = {f"w{i:02d}": w for i, w in enumerate(WORDS)}
    expected = sorted(ids, key=lambda i: (ids[i] is not None, ids[i] or "", i))
    assert on_pg["asc"] == expected == on_sqlite["asc"]
    expected_desc = sorted(ids, key=lambda i: (ids[i] is None, [-ord(ch) for ch in ids[i] or ""]
                                               + [0x110000], i))
    assert on_pg["desc"] == on_sqlite["desc"] == expected_desc
    # ilike folds ASCII letters only, on both engines.
    assert on_pg["ilike"] == on_sqlite["ilike"]
    assert [ids[i] for i in on_pg["ilike"]] == ["A", "a", "aa"]


# -- concurrency -------------------------------------------------------------------------------

counters = table("counters", id=col.id(), n=col.integer(default=0), by=col.text(nullable=True))
items = table("items", id=col.id(), owner=col.text(), n=col.integer())
busy_schema = Schema([counters, items], version="1")
busy_mutators = Mutators(busy_schema)


@busy_mutators.register
async def bump(tx: Any, *, counter: str, item: str, who: str, n: int) -> None:
    row = await tx.get(counters, counter)
    if row is None:
        await tx.insert(counters).values(id=counter, n=1, by=who)
    else:
        await tx.update(counters).set(n=row["n"] + 1, by=who).where(counters.id == counter)
    await tx.upsert(items).values(id=item, owner=who, n=n)
    if n % 7 == 0:
        await tx.delete(items).where(items.id == item)


async def test_a_pull_concurrent_with_pushes_never_misses_a_change(pg: PgEnv) -> None:
    # Three "instances" (apps with their own pools) on one database, as behind a balancer.
    apps = [pg.app(busy_schema, busy_mutators) for _ in range(3)]
    pushers, pushes, per_push = 6, 12, 3
    rng = random.Random(7)
    async with http(apps[0]) as a, http(apps[1]) as b, http(apps[2]) as c3:
        for instance in (a, b, c3):
            await instance.get("/healthz")
        state: dict[str, Any] = {}
        cookie = None
        done = asyncio.Event()  # the pushers are done: the operator stops
        last = asyncio.Event()  # every writer is done: the puller pulls once more and stops

        async def pusher(k: int) -> None:
            c = (a, b, c3)[k % 3]
            next_id = 1
            for p in range(pushes):
                muts = []
                for _ in range(per_push):
                    muts.append(mutation(
                        f"c{k}", next_id, "bump", counter=f"k{rng.randrange(3)}",
                        item=f"i{k}-{rng.randrange(10)}", who=f"c{k}", n=next_id))
                    next_id += 1
                while True:
                    r = await c.post("/sync/push", json=push_body(*muts, group=f"g{k}"))
                    if r.status_code != 503:
                        break
                    await asyncio.sleep(0.01)
                assert r.status_code == 200, r.text
                assert r.json() == {}
                if p % 4 == 0:
                    await asyncio.sleep(0)

        async def operator() -> None:
            op = await pg.operator()
            while not done.is_set():
                await op.execute("UPDATE counters SET by = 'operator' WHERE id = 'k1'")
                await asyncio.sleep(0.005)

        async def puller() -> None:
            nonlocal cookie
            c = b
            while True:
                finished = last.is_set()
                body = await pull(c, cookie, group="watcher")
                assert cookie is None or body["cookie"] >= cookie
                apply(state, body["patch"])
                cookie = body["cookie"]
                if finished:
                    return
                await asyncio.sleep(0.002)

        watcher = asyncio.create_task(puller())
        op_task = asyncio.create_task(operator())
        await asyncio.gather(*(pusher(k) for k in range(pushers)))
        done.set()
        await op_task
        last.set()
        await watcher

    expected = {}
    for row in await pg.rows("SELECT id, n, by FROM counters"):
        expected[f"counters/{row[0]}"] = {"id": row[0], "n": row[1], "by": row[2]}
    for row in await pg.rows("SELECT id, owner, n FROM items"):
        expected[f"items/{row[0]}"] = {"id": row[0], "owner": row[1], "n": row[2]}
    assert state == expected
    total = sum(v["n"] for k, v in expected.items() if k.startswith("counters/"))
    assert total == pushers * pushes * per_push  # every mutation applied exactly once


def apply(state: dict[str, Any], patch: list[dict[str, Any]]) -> None:
    for op in patch:
        if op["op"] == "clear":
            state.clear()
        elif op["op"] == "put":
            state[op["key"]] = op["value"]
        else:
            state.pop(op["key"], None)


# -- transient failures ------------------------------------------------------------------------

async def test_a_killed_connection_mid_push_answers_503_then_applies_once(
        pg: PgEnv, gate: Gate) -> None:
    async with http(pg.app(slow_schema, slow_mutators)) as c:
        await c.get("/healthz")
        body = push_body(mutation("c1", 1, "slow_add", id="s1", title="one"))
        gate.armed = True
        task = asyncio.create_task(c.post("/sync/push", json=body))
        await asyncio.wait_for(gate.entered.wait(), 10)
        op = await pg.operator()
        pids = [r[0] for r in await op.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 "
            "AND state = 'idle in transaction'", pg.namespace)]
        assert len(pids) == 1
        assert await op.fetchval("SELECT pg_terminate_backend($1)", pids[0])
        gate.release.set()
        answer = await task
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"] == "Unavailable"
        assert int(answer.headers["retry-after"]) >= 1
        assert await op.fetch("SELECT * FROM slow") == []
        assert await op.fetch("SELECT * FROM _plasma_clients") == []

        gate.armed = False
        for _ in range(2):  # the retry, and a retry of the retry
            retried = await c.post("/sync/push", json=body)
            assert retried.status_code == 200, retried.text
        assert [tuple(r) for r in await op.fetch("SELECT id, title FROM slow")] == [("s1", "one")]
        assert (await pull(c))["lastMutationIDChanges"] == {"c1": 1}


async def test_a_deadlock_mid_push_answers_503_then_applies_once(pg: PgEnv) -> None:
    # The push's backend notices the deadlock first (its deadlock_timeout is shorter).
    url = with_params(pg.url, deadlock_timeout="50ms")
    async with http(pg.app(slow_schema, slow_mutators, database=url)) as c:
        await push(c, mutation("c1", 1, "slow_add", id="s1", title="one"),
                   mutation("c1", 2, "slow_add", id="s2", title="two"))
        op = await pg.operator()
        tx = op.transaction()
        await tx.start()
        await op.execute("SELECT * FROM slow WHERE id = 's1' FOR UPDATE")  # a row lock only
        body = push_body(mutation("c1", 3, "slow_rename", id="s1", title="renamed"))
        task = asyncio.create_task(c.post("/sync/push", json=body))
        for _ in range(500):  # until the push, holding the version lock, waits for s1
            if await op.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
                "AND wait_event_type = 'Lock'", pg.namespace):
                break
            await asyncio.sleep(0.01)
        # Writing s2 needs the version lock held by the push: a deadlock.
        await op.execute("UPDATE slow SET title = 'operator' WHERE id = 's2'")
        answer = await asyncio.wait_for(task, 10)
        await tx.commit()
        assert answer.status_code == 503, answer.text
        assert "Deadlock" in answer.json()["message"]
        assert answer.headers["retry-after"] == "1"
        assert (await c.post("/sync/push", json=body)).status_code == 200
        assert (await c.post("/sync/push", json=body)).status_code == 200
        assert await pg.rows("SELECT id, title FROM slow ORDER BY id") == [
            ("s1", "renamed"), ("s2", "operator")
        ]
        assert await pg.rows("SELECT last_mutation_id FROM _plasma_clients") == [(3,)]


async def test_an_unreachable_database_answers_503(pg: PgEnv) -> None:
    app = pg.app(database="postgresql://postgres@127.0.0.1:1/test")
    async with http(app) as c:
        answer = await c.post("/sync/push", json=push_body(add("c1", 1, "t1")))
        assert answer.status_code == 503
        assert "retry-after" in answer.headers


# -- pokes -------------------------------------------------------------------------------------


async def test_commits_anywhere_are_reported_and_a_lost_listen_connection_recovers(
        pg: PgEnv) -> None:
    one, two = pg.app(), pg.app()
    async with http(one) as c1, http(two) as c2:
        await c1.get("/healthz")
        await c2.get("/healthz")
        s1, s2 = storage_of(one), storage_of(two)
        await s2.changed_externally()  # forget the startup
        assert not await s2.wait_for_change(0.05)

        await push(c1, add("c1", 1, "t1"))  # a push through the other instance
        assert await s2.wait_for_change(5)
        op = await pg.operator()
        await op.execute("INSERT INTO todos (id, title) VALUES ('o', 'operator')")
        assert await s2.wait_for_change(5)
        assert not await s2.wait_for_change(0.05)

        listener = s2.listener
        assert listener.connection is not None
        await op.fetchval("SELECT pg_terminate_backend($1)",
                          listener.connection.get_server_pid())
        assert await s2.wait_for_change(5)  # lost: poke everyone
        for _ in range(100):
            if listener.connections == 2:
                break
            await asyncio.sleep(0.05)
        assert listener.connections == 2
        await s2.changed_externally()
        await op.execute("DELETE FROM todos WHERE id = 'o'")
        assert await s2.wait_for_change(5)
        assert await s1.version() == await s2.version()


# -- migrations, URLs, round trips -------------------------------------------------------------


async def test_migrations_add_nullable_columns_and_refuse_incompatible_changes(
        pg: PgEnv) -> None:
    v1 = table("things", id=col.id(), name=col.text())
    s1 = Schema([v1], version="1")
    async with http(pg.app(s1, Mutators(s1))) as c:
        await c.get("/healthz")
    op = await pg.operator()
    await op.execute("INSERT INTO things (id, name) VALUES ('a', 'x')")

    v2 = table("things", id=col.id(), name=col.text(), note=col.text(nullable=True),
               size=col.integer(default=3))
    extra = table("extra", id=col.integer(primary_key=True))
    s2 = Schema([v2, extra], version="2")
    async with http(pg.app(s2, Mutators(s2))) as c:
        body = await pull(c, schemaVersion="2")
        assert puts(body["patch"])["things/a"] == {"id": "a", "name": "x", "note": None,
                                                  "size": 3}

    bad = table("things", id=col.id(), name=col.text(), must=col.text())
    s3 = Schema([bad], version="3")
    with pytest.raises(SchemaError, match=r"things\.must"):
        await pg.app(s3, Mutators(s3)).state.plasma.storage.open()
    retyped = table("things", id=col.id(), name=col.integer())
    s4 = Schema([retyped], version="4")
    with pytest.raises(SchemaError, match=r"things\.name is TEXT COLLATE \"C\""):
        await pg.app(s4, Mutators(s4)).state.plasma.storage.open()


def test_urls_select_the_postgres_backend_and_its_schema() -> None:
    schema, mutators = todos_module.schema, todos_module.mutators
    for url in ("postgresql://u@h/db", "postgres://u@h/db"):
        assert isinstance(open_storage(url, schema, mutators), PostgresStorage)
    assert split_url("postgresql://u@h:5/db?schema=s1&sslmode=disable") == (
        "postgresql://u@h:5/db?sslmode=disable", "s1"
    )
    assert split_url("postgresql://u@h/db") == ("postgresql://u@h/db", "public")
    with pytest.raises(ConfigError, match="schema"):
        split_url("postgresql://u@h/db?schema=a-b")
    assert version_setting("public") == "plasma.version"
    assert version_setting("s1") == "plasma.version.s1"
    assert poke_channel("public") == "plasma_poke"
    assert poke_channel("s1") == "plasma_poke_s1"
    assert len(poke_channel("x" * 63)) <= 63
