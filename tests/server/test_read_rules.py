"""Read rules: a pull never carries a row its caller may not read; a row that leaves the
caller's view arrives as ``del`` (and a row the caller never saw is not mentioned at all);
a changed view (rules or claims) gets ``clear`` and a full snapshot. On both backends."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.requests import HTTPConnection

from plasma_nb import Context, Mutators, Schema, SchemaError, col, ctx, table
from plasma_nb.server import compact, create_app
from tests.server.helpers import dels, pull_body, push_body, puts
from tests.server.secure import (
    TOKENS,
    as_user,
    call,
    dump_database,
    execute,
    mutators,
    note,
    notes,
    schema,
)


@pytest.fixture
def app(make_app):
    return make_app(schema, mutators, auth=TOKENS, blobs=None)


async def pull_as(app, user: str, cookie: int | None, group: str) -> dict[str, Any]:
    async with as_user(app, user) as c:
        response = await c.post("/sync/pull", json=pull_body(cookie, group=group))
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result


async def push_as(app, user: str, *mutations: dict[str, Any], group: str) -> dict[str, Any]:
    async with as_user(app, user) as c:
        response = await c.post("/sync/push", json=push_body(*mutations, group=group))
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result


async def test_a_row_that_leaves_a_view_arrives_as_del(app):
    await push_as(app, "alice", note("ca", 1, "n1"), note("ca", 2, "n2", public=True),
                  note("ca", 3, "n3", public=True), group="ga")
    bob = await pull_as(app, "bob", None, "gb")
    assert set(puts(bob["patch"])) == {"notes/n2", "notes/n3"}
    # n2 is made private, n3 is deleted, n1 (never bob's to see) is changed and deleted.
    await push_as(app, "alice", call("ca", 4, "edit_note", id="n2", public=False),
                  call("ca", 5, "delete_note", id="n3"),
                  call("ca", 6, "edit_note", id="n1", body="still secret"), group="ga")
    since = await pull_as(app, "bob", bob["cookie"], "gb")
    assert since["patch"] == [{"op": "del", "key": "notes/n2"}, {"op": "del", "key": "notes/n3"}]
    await push_as(app, "alice", call("ca", 7, "delete_note", id="n1"), group="ga")
    assert (await pull_as(app, "bob", since["cookie"], "gb"))["patch"] == []


async def test_a_row_given_to_another_user_moves_between_views(app):
    await push_as(app, "alice", note("ca", 1, "n1", "gift"), group="ga")
    alice = await pull_as(app, "alice", None, "ga")
    bob = await pull_as(app, "bob", None, "gb")
    assert "notes/n1" in puts(alice["patch"]) and "notes/n1" not in puts(bob["patch"])
    await push_as(app, "alice", call("ca", 2, "edit_note", id="n1", owner="bob"), group="ga")
    assert (await pull_as(app, "alice", alice["cookie"], "ga"))["patch"] == [
        {"op": "del", "key": "notes/n1"}]
    assert puts((await pull_as(app, "bob", bob["cookie"], "gb"))["patch"]) == {
        "notes/n1": {"id": "n1", "body": "gift", "owner": "bob", "public": False}}


async def test_operator_sql_moves_rows_between_views_too(app, database):
    await push_as(app, "alice", note("ca", 1, "n1"), note("ca", 2, "n2"), group="ga")
    alice = await pull_as(app, "alice", None, "ga")
    carol = await pull_as(app, "carol", None, "gc")
    assert puts(carol["patch"]) == {}
    await execute(database, "UPDATE notes SET owner = 'carol' WHERE id = 'n1'")
    await execute(database, "DELETE FROM notes WHERE id = 'n2'")
    await execute(database, "INSERT INTO notes (id, body, owner) VALUES ('n3', 'x', 'dave')")
    assert (await pull_as(app, "alice", alice["cookie"], "ga"))["patch"] == [
        {"op": "del", "key": "notes/n1"}, {"op": "del", "key": "notes/n2"}]
    assert set(puts((await pull_as(app, "carol", carol["cookie"], "gc"))["patch"])) == {
        "notes/n1"}


async def test_a_row_inserted_and_deleted_between_pulls_is_not_mentioned(app):
    bob = await pull_as(app, "bob", None, "gb")
    await push_as(app, "alice", note("ca", 1, "n1", public=True), group="ga")
    await push_as(app, "alice", call("ca", 2, "delete_note", id="n1"), group="ga")
    # Bob never had it; a del would only tell him its key.
    assert (await pull_as(app, "bob", bob["cookie"], "gb"))["patch"] == []


async def test_several_writes_in_one_push_keep_the_view_before_the_push(app):
    await push_as(app, "alice", note("ca", 1, "n1", public=True), group="ga")
    bob = await pull_as(app, "bob", None, "gb")
    # One push (one version): private, then public again, then private.
    await push_as(app, "alice", call("ca", 2, "edit_note", id="n1", public=False),
                  call("ca", 3, "edit_note", id="n1", public=True, body="edited"),
                  call("ca", 4, "edit_note", id="n1", public=False), group="ga")
    assert (await pull_as(app, "bob", bob["cookie"], "gb"))["patch"] == [
        {"op": "del", "key": "notes/n1"}]


async def test_tables_without_a_rule_are_read_by_everyone(app):
    await push_as(app, "alice", call("ca", 1, "set_motd", id=1, text="welcome"), group="ga")
    bob = await pull_as(app, "bob", None, "gb")
    assert puts(bob["patch"]) == {"motd/1": {"id": 1, "text": "welcome"}}


# -- views that change -------------------------------------------------------------------------

teams = table("teams_docs", id=col.integer(primary_key=True), team=col.text(nullable=True),
              body=col.text())


def team_app(make_app, claims: dict[str, dict[str, Any]], rule: Any = None):
    rule = (teams.team == ctx.team) if rule is None else rule
    team_schema = Schema([teams], version="1", read_rules={teams: rule})
    team_mutators = Mutators(team_schema)

    @team_mutators.register
    async def put_doc(tx, *, id: int, team: str | None, body: str):
        await tx.upsert(teams).values(id=id, team=team, body=body)

    def hook(token: str, conn: HTTPConnection) -> Context | None:
        user = TOKENS.get(token)
        return None if user is None else Context(user=user, claims=claims.get(user, {}))

    return make_app(team_schema, team_mutators, auth=hook, blobs=None)


def doc(client_id: str, id: int, doc_id: int, team: str | None) -> dict[str, Any]:
    return call(client_id, id, "put_doc", id=doc_id, team=team, body=f"doc {doc_id}")


async def test_a_changed_claim_gets_clear_and_a_full_snapshot(make_app):
    claims = {"alice": {"team": "red"}, "bob": {"team": "blue"}}
    app = team_app(make_app, claims)
    await push_as(app, "alice", doc("ca", 1, 1, "red"), doc("ca", 2, 2, "blue"),
                  doc("ca", 3, 3, None), group="ga")
    bob = await pull_as(app, "bob", None, "gb")
    assert set(puts(bob["patch"])) == {"teams_docs/2"}
    assert (await pull_as(app, "bob", bob["cookie"], "gb"))["patch"] == []
    claims["bob"] = {"team": "red"}  # bob moved teams
    moved = await pull_as(app, "bob", bob["cookie"], "gb")
    assert moved["patch"][0] == {"op": "clear"}
    assert set(puts(moved["patch"])) == {"teams_docs/1"}
    # From then on, incremental again; an old cookie (a lost answer) stays full.
    assert (await pull_as(app, "bob", moved["cookie"], "gb"))["patch"] == []
    assert (await pull_as(app, "bob", bob["cookie"], "gb"))["patch"][0] == {"op": "clear"}
    claims.pop("bob")  # no team: ctx.team is None, so rows without a team (== None)
    none = await pull_as(app, "bob", moved["cookie"], "gb")
    assert none["patch"][0] == {"op": "clear"} and set(puts(none["patch"])) == {"teams_docs/3"}


async def test_integer_keys_work_with_rules(make_app):
    app = team_app(make_app, {"alice": {"team": "red"}})
    await push_as(app, "alice", doc("ca", 1, 10, "red"), doc("ca", 2, 2, "red"), group="ga")
    alice = await pull_as(app, "alice", None, "ga")
    assert set(puts(alice["patch"])) == {"teams_docs/2", "teams_docs/10"}
    await push_as(app, "alice", doc("ca", 3, 10, "blue"), doc("ca", 4, 11, "red"), group="ga")
    since = await pull_as(app, "alice", alice["cookie"], "ga")
    assert dels(since["patch"]) == {"teams_docs/10"} and set(puts(since["patch"])) == {
        "teams_docs/11"}


async def test_new_or_changed_rules_give_every_group_a_full_snapshot(make_app, database):
    open_app = team_app(make_app, {"alice": {"team": "red"}}, rule=teams.id >= 0)
    await push_as(open_app, "alice", doc("ca", 1, 1, "red"), doc("ca", 2, 2, "blue"), group="ga")
    first = await pull_as(open_app, "alice", None, "ga")
    assert set(puts(first["patch"])) == {"teams_docs/1", "teams_docs/2"}
    await open_app.state.plasma.close()
    # The server restarts with a stricter rule: alice's old cookie gets a full snapshot.
    strict = team_app(make_app, {"alice": {"team": "red"}})
    again = await pull_as(strict, "alice", first["cookie"], "ga")
    assert again["patch"][0] == {"op": "clear"} and set(puts(again["patch"])) == {
        "teams_docs/1"}


async def test_a_schema_without_rules_drops_them_and_serves_everything(make_app, database):
    await pull_as(team_app(make_app, {"alice": {"team": "red"}}), "alice", None, "ga")
    plain_schema = Schema([teams], version="1")
    app = make_app(plain_schema, Mutators(plain_schema), auth=TOKENS, blobs=None)
    assert (await pull_as(app, "alice", None, "ga"))["patch"] == [{"op": "clear"}]


def test_rules_are_checked_when_the_schema_is_declared():
    with pytest.raises(SchemaError, match="read_rules: 'nope' is not a table of this schema"):
        Schema([notes], read_rules={"nope": notes.owner == ctx.user})
    other = table("other", id=col.id())
    with pytest.raises(SchemaError, match="is not a table of this schema"):
        Schema([notes], read_rules={other: other.id == ctx.user})
    with pytest.raises(SchemaError, match="read rule of 'notes': other.id is not a column"):
        Schema([notes, other], read_rules={notes: other.id == ctx.user})
    with pytest.raises(SchemaError, match="needs a comparison"):
        Schema([notes], read_rules={notes: notes.body})
    with pytest.raises(SchemaError, match="must map tables to conditions"):
        Schema([notes], read_rules=[notes.owner == ctx.user])  # type: ignore[arg-type]
    with pytest.raises(SchemaError, match=r"like\(\) matches text"):
        Schema([notes], read_rules={notes: notes.public.like("x%")})
    assert repr(ctx.user) == "ctx.user" and repr(ctx) == "ctx"
    with pytest.raises(AttributeError):
        ctx._private  # noqa: B018


# -- the property: no pull ever carries a row its caller may not read ---------------------------

docs = table("docs", id=col.id(), owner=col.text(nullable=True), team=col.text(nullable=True),
             level=col.integer(nullable=True), public=col.boolean(default=False))
USERS = ["alice", "bob", "carol"]
DOC_IDS = [f"d{i}" for i in range(6)]

Tri = bool | None
Oracle = Callable[[dict[str, Any], Context], Tri]


def _eq(a: Any, b: Any) -> Tri:
    return None if a is None or b is None else a == b


def _team(row: dict[str, Any], c: Context) -> Tri:
    team = c.claims.get("team")
    if team is None:  # docs.team == None: IS NULL
        return row["team"] is None
    return _eq(row["team"], team)


LEAVES: list[tuple[Callable[[], Any], Oracle]] = [
    (lambda: docs.owner == ctx.user, lambda r, c: _eq(r["owner"], c.user)),
    (lambda: docs.public == True, lambda r, c: r["public"]),  # noqa: E712
    (lambda: docs.level >= 2, lambda r, c: None if r["level"] is None else r["level"] >= 2),
    (lambda: docs.team == ctx.team, _team),
    (lambda: docs.owner.is_null(), lambda r, c: r["owner"] is None),
    (lambda: docs.owner.in_([ctx.user, "shared"]),
     lambda r, c: None if r["owner"] is None else r["owner"] in (c.user, "shared")),
    (lambda: docs.owner != ctx.user, lambda r, c: None if r["owner"] is None
     else r["owner"] != c.user),
]


def _and(a: Tri, b: Tri) -> Tri:
    if a is False or b is False:
        return False
    return None if a is None or b is None else True


def _or(a: Tri, b: Tri) -> Tri:
    if a is True or b is True:
        return True
    return None if a is None or b is None else False


def _not(a: Tri) -> Tri:
    return None if a is None else not a


def rules() -> st.SearchStrategy[tuple[Any, Oracle, str]]:
    leaf = st.sampled_from(range(len(LEAVES))).map(
        lambda i: (LEAVES[i][0](), LEAVES[i][1], f"L{i}"))

    def extend(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        def combine(op: str, a: Any, b: Any) -> Any:
            (ea, fa, na), (eb, fb, nb) = a, b
            if op == "&":
                return ea & eb, lambda r, c: _and(fa(r, c), fb(r, c)), f"({na}&{nb})"
            if op == "|":
                return ea | eb, lambda r, c: _or(fa(r, c), fb(r, c)), f"({na}|{nb})"
            return ~ea, lambda r, c: _not(fa(r, c)), f"~{na}"

        return st.builds(combine, st.sampled_from("&|~"), inner, inner)

    return st.recursive(leaf, extend, max_leaves=3)


row_values = st.fixed_dictionaries({
    "owner": st.sampled_from([None, "alice", "bob", "carol", "shared"]),
    "team": st.sampled_from([None, "red", "blue"]),
    "level": st.sampled_from([None, 0, 2, 5]),
    "public": st.booleans(),
})
steps = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(USERS), st.sampled_from(DOC_IDS), row_values),
    st.tuples(st.just("remove"), st.sampled_from(USERS), st.sampled_from(DOC_IDS)),
    st.tuples(st.just("sql_owner"), st.sampled_from(DOC_IDS),
              st.sampled_from(["alice", "bob", "shared"])),
    st.tuples(st.just("sql_delete"), st.sampled_from(DOC_IDS)),
    st.tuples(st.just("pull"), st.sampled_from(USERS)),
    st.tuples(st.just("pull"), st.sampled_from(USERS)),
    st.tuples(st.just("team"), st.sampled_from(USERS), st.sampled_from([None, "red", "blue"])),
    st.tuples(st.just("compact")),
)

_runs = itertools.count()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(rule=rules(), script=st.lists(steps, max_size=25))
def test_no_pull_carries_a_row_its_user_may_not_read(database, rule, script):
    asyncio.run(_scenario(database, rule, script, next(_runs)))


async def _scenario(database: str, rule: tuple[Any, Oracle, str], script: list[tuple[Any, ...]],
                    run: int) -> None:
    expr, oracle, name = rule
    docs_schema = Schema([docs], version="1", read_rules={docs: expr})
    docs_mutators = Mutators(docs_schema)

    @docs_mutators.register
    async def put_doc(tx, *, id: str, owner: str | None, team: str | None, level: int | None,
                      public: bool):
        await tx.upsert(docs).values(id=id, owner=owner, team=team, level=level, public=public)

    @docs_mutators.register
    async def remove_doc(tx, *, id: str):
        await tx.delete(docs).where(docs.id == id)

    claims: dict[str, dict[str, Any]] = {u: {} for u in USERS}

    def hook(token: str, conn: HTTPConnection) -> Context | None:
        user = TOKENS.get(token)
        return None if user is None else Context(user=user, claims=dict(claims[user]))

    app = create_app(docs_schema, docs_mutators, database=database, auth=hook, blobs=None)
    try:
        await app.state.plasma.ensure_open()
        await execute(database, "DELETE FROM docs")  # the rows of earlier examples
        model: dict[str, dict[str, Any]] = {}  # the server's table
        replicas: dict[str, dict[str, dict[str, Any]]] = {u: {} for u in USERS}
        cookies: dict[str, int | None] = {u: None for u in USERS}
        next_id = dict.fromkeys(USERS, 0)
        script = [*script, *(("pull", u) for u in USERS)]  # everyone ends with a pull
        for step in script:
            kind = step[0]
            if kind in ("put", "remove"):
                user, doc_id = step[1], step[2]
                next_id[user] += 1
                args = {"id": doc_id, **step[3]} if kind == "put" else {"id": doc_id}
                mutation = call(f"c-{user}-{run}", next_id[user], f"{kind}_doc", **args)
                await push_as(app, user, mutation, group=f"g-{user}-{run}")
                if kind == "put":
                    model[doc_id] = {"id": doc_id, **step[3]}
                else:
                    model.pop(doc_id, None)
            elif kind == "sql_owner":
                await execute(database, f"UPDATE docs SET owner = '{step[2]}' "
                                        f"WHERE id = '{step[1]}'")
                if step[1] in model:
                    model[step[1]]["owner"] = step[2]
            elif kind == "sql_delete":
                await execute(database, f"DELETE FROM docs WHERE id = '{step[1]}'")
                model.pop(step[1], None)
            elif kind == "team":
                claims[step[1]] = {} if step[2] is None else {"team": step[2]}
            elif kind == "compact":
                await compact(app, horizon=0)
            else:
                user = step[1]
                context = Context(user=user, claims=claims[user])
                answer = await pull_as(app, user, cookies[user], f"g-{user}-{run}")
                replica = replicas[user]
                for op in answer["patch"]:
                    if op["op"] == "clear":
                        replica.clear()
                        continue
                    key = op["key"].split("/", 1)[1]
                    if op["op"] == "del":
                        assert key in replica, f"{name}: del of {key} that {user} never had"
                        del replica[key]
                    else:
                        assert oracle(op["value"], context) is True, (
                            f"{name}: {user} ({claims[user]}) got {op['value']}")
                        replica[key] = op["value"]
                cookies[user] = answer["cookie"]
                expected = {k: v for k, v in model.items() if oracle(v, context) is True}
                assert replica == expected, f"{name}: {user}'s replica is not their view"
    finally:
        await app.state.plasma.close()


async def test_a_ruled_table_that_gains_a_column_keeps_exact_views(make_app, database):
    def memo_app(version: str, **extra: Any):
        memo = table("memo", id=col.id(), owner=col.text(nullable=True), **extra)
        memo_schema = Schema([memo], version=version, compatible=["1"],
                             read_rules={memo: memo.owner == ctx.user})
        memo_mutators = Mutators(memo_schema)

        @memo_mutators.register
        async def add_memo(tx, *, id: str):
            await tx.insert(memo).values(id=id, owner=tx.ctx.user)

        return make_app(memo_schema, memo_mutators, auth=TOKENS, blobs=None)

    first = memo_app("1")
    await push_as(first, "alice", call("ca", 1, "add_memo", id="m1"),
                  call("ca", 2, "add_memo", id="m2"), group="ga")
    alice = await pull_as(first, "alice", None, "ga")
    await first.state.plasma.close()
    second = memo_app("2", tag=col.text(nullable=True))
    await second.state.plasma.ensure_open()
    dump = await dump_database(database)
    assert len(dump["_plasma_prior_memo"][0]) == 6  # pk, version, absent; id, owner, tag
    # The old cookie (and the old schema version, still accepted) pulls incrementally.
    assert (await pull_as(second, "alice", alice["cookie"], "ga"))["patch"] == []
    await execute(database, "UPDATE memo SET tag = 'x', owner = 'bob' WHERE id = 'm1'")
    await execute(database, "UPDATE memo SET tag = 'y' WHERE id = 'm2'")
    since = await pull_as(second, "alice", alice["cookie"], "ga")
    assert since["patch"] == [
        {"op": "del", "key": "memo/m1"},
        {"op": "put", "key": "memo/m2", "value": {"id": "m2", "owner": "alice", "tag": "y"}}]


async def test_a_group_created_by_a_push_starts_with_its_view(app, database):
    await push_as(app, "alice", note("ca", 1, "n1"), group="ga")
    version = (await dump_database(database))["_plasma_meta"][0][1]
    first = await pull_as(app, "alice", None, "ga")
    # The view was recorded with the group: no reset (and no new version) on its first pull.
    assert first["cookie"] == version
    assert (await pull_as(app, "alice", first["cookie"], "ga"))["patch"] == []
