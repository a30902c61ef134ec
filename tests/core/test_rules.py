"""Read rules in the core: ``ctx``, checking rules, binding them to one caller (every
engine then compiles an ordinary condition), and the view fingerprint."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plasma_nb import Context, Schema, col, ctx, table
from plasma_nb.core.dialect import SQLiteDialect
from plasma_nb.core.evaluate import compile_predicate
from plasma_nb.core.expr import ContextRef, Expr
from plasma_nb.core.rules import bind, context_keys, context_value, fingerprint

docs = table("docs", id=col.id(), owner=col.text(nullable=True), level=col.integer(nullable=True),
             public=col.boolean(default=False))

ROWS = [
    {"id": "a", "owner": "alice", "level": 1, "public": False},
    {"id": "b", "owner": "bob", "level": 5, "public": True},
    {"id": "c", "owner": None, "level": None, "public": False},
    {"id": "d", "owner": "shared", "level": 3, "public": False},
]


def visible(rule: Expr, context: Context) -> set[str]:
    """The ids SQLite selects with ``rule`` bound to ``context``; the Python evaluator of
    the same bound rule must agree."""
    bound = bind(rule, context, docs)
    compiled = SQLiteDialect().compile_condition(bound)
    conn = sqlite3.connect(":memory:")
    conn.execute(SQLiteDialect().create_table_sql(docs))
    conn.executemany("INSERT INTO docs VALUES (?, ?, ?, ?)",
                     [(r["id"], r["owner"], r["level"], int(r["public"])) for r in ROWS])
    found = {r[0] for r in conn.execute(f"SELECT id FROM docs WHERE {compiled.sql}",
                                        compiled.params)}
    predicate = compile_predicate(bound)
    assert {r["id"] for r in ROWS if predicate(r)} == found, bound
    return found


def test_ctx_makes_context_references():
    assert isinstance(ctx.user, ContextRef) and ctx.team.key == "team"
    assert repr(ctx.user) == "ctx.user" and repr(ctx) == "ctx"
    with pytest.raises(AttributeError):
        ctx._secret  # noqa: B018


def test_context_values_are_the_user_and_the_claims():
    c = Context(user="alice", claims={"team": "red"})
    assert context_value(c, "user") == "alice"
    assert context_value(c, "team") == "red"
    assert context_value(c, "missing") is None
    assert context_keys((docs.owner == ctx.user) | (docs.level > ctx.level)) == {"user", "level"}


def test_a_missing_user_matches_rows_without_one_as_none_does():
    rule = docs.owner == ctx.user
    assert visible(rule, Context(user="alice")) == {"a"}
    assert visible(rule, Context(user=None)) == {"c"}
    assert visible(docs.owner != ctx.user, Context(user=None)) == {"a", "b", "d"}
    assert visible(docs.owner != ctx.user, Context(user="alice")) == {"b", "d"}


def test_a_value_of_the_wrong_type_never_matches():
    assert visible(docs.level == ctx.level, Context(claims={"level": "high"})) == set()
    assert visible(~(docs.level == ctx.level), Context(claims={"level": "high"})) == set()
    assert visible(docs.level >= ctx.level, Context(claims={"level": 3})) == {"b", "d"}
    assert visible(docs.level.in_([ctx.level, 1]), Context(claims={"level": "x"})) == {"a"}


def test_comparisons_of_context_values_alone_fold_to_constants():
    admin = (ctx.role == "admin") | (docs.owner == ctx.user)
    assert visible(admin, Context(user="bob", claims={"role": "admin"})) == {"a", "b", "c", "d"}
    assert visible(admin, Context(user="bob", claims={"role": "guest"})) == {"b"}
    assert visible(admin, Context(user="bob")) == {"b"}  # NULL = 'admin' is unknown
    assert visible(~(ctx.role == "admin"), Context(user="bob")) == set()  # still unknown
    assert visible(ctx.user.is_null(), Context()) == {"a", "b", "c", "d"}
    assert visible(ctx.user.is_not_null(), Context()) == set()
    assert visible(ctx.user.like("al%"), Context(user="alice")) == {"a", "b", "c", "d"}
    assert visible(ctx.user.ilike("AL%") | docs.public, Context(user="bob")) == {"b"}
    assert visible(ctx.user.like("x"), Context()) == set()
    assert visible(ctx.user.in_(["alice", "carol"]), Context(user="carol")) == {
        "a", "b", "c", "d"}
    assert visible(ctx.user.in_(["alice", None]), Context(user="bob")) == set()
    assert visible(~ctx.user.in_(["alice"]), Context(user="bob")) == {"a", "b", "c", "d"}
    assert visible(ctx.user.in_([]), Context()) == set()
    assert visible(ctx.user.in_(["x"]), Context()) == set()
    assert visible(ctx.admin, Context(claims={"admin": True})) == {"a", "b", "c", "d"}
    assert visible(ctx.admin | docs.public, Context(claims={"admin": False})) == {"b"}
    assert visible(ctx.admin | docs.public, Context()) == {"b"}
    assert visible(ctx.admin | docs.public, Context(claims={"admin": "yes"})) == {"b"}
    assert visible(ctx.level < 3, Context(claims={"level": "x"})) == set()


def test_a_context_value_inside_a_column_list():
    rule = docs.owner.in_([ctx.user, "shared"])
    assert visible(rule, Context(user="alice")) == {"a", "d"}
    assert visible(rule, Context(user=None)) == {"d"}
    assert visible(docs.public | docs.owner.like("s%"), Context()) == {"b", "d"}


def test_the_fingerprint_follows_the_rules_and_the_values_they_read():
    rules = {"docs": docs.owner == ctx.user}
    alice = fingerprint(rules, Context(user="alice", claims={"team": "red"}))
    assert alice == fingerprint(rules, Context(user="alice", claims={"team": "blue"}))
    assert alice != fingerprint(rules, Context(user="bob"))
    assert alice != fingerprint({"docs": docs.owner != ctx.user}, Context(user="alice"))
    assert fingerprint({}, Context(user="alice")) is None
    assert len(alice or "") == 32


def test_schemas_keep_their_rules_by_table_name():
    schema = Schema([docs], read_rules={"docs": docs.public == True})  # noqa: E712
    assert list(schema.read_rules) == ["docs"]
    assert Schema([docs]).read_rules == {}


OWNERS = st.sampled_from([None, "alice", "bob", "shared"])


@settings(max_examples=200, deadline=None)
@given(user=OWNERS, level=st.none() | st.integers(0, 6) | st.just("x"),
       leaf=st.sampled_from(range(6)), negate=st.booleans())
def test_sqlite_and_the_evaluator_agree_on_bound_rules(user, level, leaf, negate):
    rule = [
        docs.owner == ctx.user,
        docs.level >= ctx.level,
        docs.owner.in_([ctx.user, "shared"]),
        (docs.level == ctx.level) | docs.public,
        ctx.user == "alice",
        docs.owner.is_null() & (ctx.level != 3),
    ][leaf]
    if negate:
        rule = ~rule
    visible(rule, Context(user=user, claims={"level": level}))
