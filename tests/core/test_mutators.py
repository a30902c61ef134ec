"""Mutators: the registry, argument checks, ``drive()`` and the ``tx`` API on a real SQLite."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import pytest

from plasma_nb import (
    Context,
    MutationError,
    MutatorError,
    Mutators,
    QueryError,
    Schema,
    col,
    table,
)
from plasma_nb.core import SQLiteDialect, Transaction, drive
from plasma_nb.core.errors import UnknownMutator

todos = table(
    "todos",
    id=col.id(),
    title=col.text(),
    done=col.boolean(default=False),
    owner=col.text(nullable=True),
    photo=col.blob(nullable=True),
)
counters = table("counters", n=col.integer(primary_key=True), count=col.integer(default=0))
schema = Schema([todos, counters], version="1")

DIALECT = SQLiteDialect()


def make_mutators() -> Mutators:
    mutators = Mutators(schema)

    @mutators.register
    async def add_todo(tx, *, id: str, title: str):
        if not title.strip():
            raise MutationError("title must not be empty")
        await tx.insert(todos).values(id=id, title=title, owner=tx.ctx.user)

    @mutators.register
    async def mark_done(tx, *, id: str):
        await tx.update(todos).set(done=True).where(todos.id == id)

    @mutators.register
    async def remove(tx, *, id: str):
        await tx.delete(todos).where(todos.id == id)

    return mutators


class SQLiteTransaction(Transaction):
    """A tiny engine: compiles with SQLiteDialect and runs on a sqlite3 connection."""

    location = "client"

    def __init__(self, conn: sqlite3.Connection, *, user: str | None = None) -> None:
        super().__init__(ctx=Context(user=user), timestamp=1732590000000.0)
        self.conn = conn
        self.statements: list[str] = []

    async def _write(self, stmt: Any) -> int:
        compiled = DIALECT.compile(stmt, {"user": self.ctx.user})
        self.statements.append(compiled.sql)
        return self.conn.execute(compiled.sql, compiled.params).rowcount

    async def _read(self, stmt: Any) -> list[dict[str, Any]]:
        compiled = DIALECT.compile(stmt, {"user": self.ctx.user})
        self.statements.append(compiled.sql)
        assert compiled.decode is not None
        return [compiled.decode(row) for row in self.conn.execute(compiled.sql, compiled.params)]


@pytest.fixture
def conn():
    conn = sqlite3.connect(":memory:")
    for t in schema:
        conn.execute(DIALECT.create_table_sql(t))
    yield conn
    conn.close()


@pytest.fixture
def tx(conn):
    return SQLiteTransaction(conn, user="ann")


def run(mutators: Mutators, tx: Transaction, name: str, /, **args: Any) -> Any:
    return drive(mutators.start(tx, name, args), name)


def in_tx(tx: Transaction, body) -> Any:
    """Run ``async def body(tx)`` as a one-off mutator."""
    return drive(body(tx), getattr(body, "__name__", "body"))


def all_todos(conn) -> list[tuple]:
    return conn.execute(
        'SELECT "id", "title", "done", "owner" FROM "todos" ORDER BY "id"'
    ).fetchall()


# -- the registry --------------------------------------------------------------------------


def test_register_returns_the_function_and_records_it():
    mutators = Mutators(schema)

    async def rename(tx, *, id: str, title: str):
        pass

    assert mutators.register(rename) is rename
    assert "rename" in mutators
    assert "other" not in mutators
    assert list(mutators) == ["rename"]
    assert len(mutators) == 1
    assert mutators["rename"] is rename
    assert mutators.schema is schema


def test_mutators_needs_a_schema():
    with pytest.raises(MutatorError, match=r"Mutators\(schema\) takes a Schema, got \["):
        Mutators([todos])  # type: ignore[arg-type]


def test_mutators_must_be_async():
    mutators = Mutators(schema)

    def sync_one(tx, *, id):
        pass

    with pytest.raises(MutatorError, match=r"^mutator 'sync_one' must be declared with async def$"):
        mutators.register(sync_one)  # type: ignore[arg-type]

    async def agen(tx, *, id):
        yield

    with pytest.raises(MutatorError, match=r"mutator 'agen' must be declared with async def"):
        mutators.register(agen)  # type: ignore[arg-type]
    with pytest.raises(MutatorError, match=r"must be declared with async def"):
        mutators.register(lambda tx: None)  # type: ignore[arg-type]
    assert len(mutators) == 0


def test_duplicate_names_are_refused_naming_the_duplicate():
    mutators = make_mutators()

    async def add_todo(tx, *, id: str):
        pass

    with pytest.raises(MutatorError, match=r"^a mutator named 'add_todo' is already registered$"):
        mutators.register(add_todo)
    # Another registry is another namespace.
    assert Mutators(schema).register(add_todo) is add_todo


@pytest.mark.parametrize(
    "source",
    [
        "async def m(*, tx, id): pass",
        "async def m(): pass",
        "async def m(**kwargs): pass",
        "async def m(*args): pass",
    ],
)
def test_tx_must_come_first(source):
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    with pytest.raises(MutatorError, match=r"^mutator 'm' must take tx as its first parameter$"):
        Mutators(schema).register(namespace["m"])


@pytest.mark.parametrize(
    ("source", "param"),
    [("async def m(tx, id, /): pass", "id"), ("async def m(tx, *ids): pass", "ids")],
)
def test_arguments_travel_by_name(source, param):
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    with pytest.raises(
        MutatorError,
        match=rf"^mutator 'm': parameter '{param}' must be keyword-only \(arguments travel as a "
        r"JSON object\)$",
    ):
        Mutators(schema).register(namespace["m"])


def test_tx_may_be_positional_only_and_kwargs_are_fine():
    mutators = Mutators(schema)

    async def a(tx, /, *, id: str):
        pass

    async def b(tx, **anything: Any):
        pass

    mutators.register(a)
    mutators.register(b)
    mutators.check_args("b", {"x": 1, "y": [2]})


def test_unknown_mutators():
    mutators = make_mutators()
    with pytest.raises(
        UnknownMutator, match=r"^no mutator named 'nope'; registered: add_todo, mark_done, remove$"
    ) as info:
        mutators["nope"]
    assert isinstance(info.value, MutatorError)
    assert isinstance(info.value, AttributeError)
    assert info.value.name == "nope"
    with pytest.raises(UnknownMutator, match="no mutator named 'nope'"):
        mutators.check_args("nope", {})
    with pytest.raises(UnknownMutator, match=r"registered: \(none\)"):
        Mutators(schema)["x"]


def test_check_args():
    mutators = make_mutators()

    @mutators.register
    async def with_default(tx, *, id: str, note: str = ""):
        pass

    @mutators.register
    async def no_args(tx):
        pass

    mutators.check_args("add_todo", {"id": "1", "title": "t"})
    mutators.check_args("with_default", {"id": "1"})
    mutators.check_args("with_default", {"id": "1", "note": "n"})
    mutators.check_args("no_args", {})
    with pytest.raises(
        MutatorError, match=r"^bad arguments for mutator 'add_todo': missing id, title$"
    ):
        mutators.check_args("add_todo", {})
    with pytest.raises(
        MutatorError, match=r"^bad arguments for mutator 'add_todo': missing title$"
    ):
        mutators.check_args("add_todo", {"id": "1"})
    with pytest.raises(
        MutatorError,
        match=r"^bad arguments for mutator 'add_todo': unexpected extra \(it takes id, title\)$",
    ):
        mutators.check_args("add_todo", {"id": "1", "title": "t", "extra": 1})
    with pytest.raises(MutatorError, match=r"unexpected tx \(it takes id, title\)"):
        mutators.check_args("add_todo", {"id": "1", "title": "t", "tx": 1})
    with pytest.raises(MutatorError, match=r"'no_args': unexpected a, b \(it takes none\)"):
        mutators.check_args("no_args", {"b": 1, "a": 2})


def test_start_checks_arguments_before_creating_the_coroutine(tx):
    mutators = make_mutators()
    with pytest.raises(MutatorError, match="bad arguments for mutator 'add_todo': missing title"):
        mutators.start(tx, "add_todo", {"id": "1"})
    with pytest.raises(UnknownMutator):
        mutators.start(tx, "nope", {})


# -- drive() and the tx API ----------------------------------------------------------------


def test_drive_runs_a_mutator_to_its_end(conn, tx):
    mutators = make_mutators()
    assert run(mutators, tx, "add_todo", id="t1", title="Buy milk") is None
    assert all_todos(conn) == [("t1", "Buy milk", 0, "ann")]
    run(mutators, tx, "mark_done", id="t1")
    assert all_todos(conn) == [("t1", "Buy milk", 1, "ann")]
    run(mutators, tx, "remove", id="t1")
    assert all_todos(conn) == []


def test_drive_returns_the_mutators_value(tx):
    mutators = Mutators(schema)

    @mutators.register
    async def answer(tx, *, x: int):
        await tx.insert(counters).values(n=x)
        row = await tx.get(counters, x)
        return row

    assert run(mutators, tx, "answer", x=7) == {"n": 7, "count": 0}


def test_the_same_mutator_runs_on_an_event_loop_too(conn):
    # The server awaits mutators on its loop; the client drives them without one.
    mutators = make_mutators()
    tx = SQLiteTransaction(conn, user=None)
    asyncio.run(mutators.start(tx, "add_todo", {"id": "t1", "title": "on a loop"}))
    assert all_todos(conn) == [("t1", "on a loop", 0, None)]


def test_a_mutator_that_awaits_anything_else_fails_naming_it(conn, tx):
    mutators = Mutators(schema)
    cleaned_up = []

    @mutators.register
    async def sleepy(tx, *, id: str):
        try:
            await tx.insert(todos).values(id=id, title="before")
            await asyncio.sleep(0)
            await tx.insert(todos).values(id=id + "-after", title="after")
        finally:
            cleaned_up.append(True)

    with pytest.raises(
        MutatorError,
        match=r"^mutator 'sleepy' awaited something that suspends \(asyncio.sleep, a bare yield\), "
        r"which is not a tx operation; mutators may await only tx methods "
        r"\(pass other values in as arguments\)$",
    ):
        run(mutators, tx, "sleepy", id="t1")
    assert cleaned_up == [True]  # the coroutine was closed, not left suspended
    # What ran before the await is the engine's to roll back; nothing after it ran.
    assert [r[0] for r in all_todos(conn)] == ["t1"]


def test_awaiting_a_future_fails_too(tx):
    async def waits(tx):
        loop = asyncio.new_event_loop()
        try:
            await loop.create_future()
        finally:
            loop.close()

    with pytest.raises(MutatorError, match=r"^mutator 'waits' awaited <Future pending>"):
        in_tx(tx, waits)


def test_mutation_error_propagates_with_its_message(conn, tx):
    mutators = make_mutators()
    with pytest.raises(MutationError, match=r"^title must not be empty$") as info:
        run(mutators, tx, "add_todo", id="t1", title="   ")
    assert info.value.message == "title must not be empty"
    assert repr(info.value) == "MutationError('title must not be empty')"
    assert all_todos(conn) == []


def test_other_exceptions_propagate_unchanged(tx):
    async def broken(tx):
        return 1 / 0

    with pytest.raises(ZeroDivisionError):
        in_tx(tx, broken)


def test_tx_exposes_context_location_and_timestamp(tx):
    seen = {}

    async def look(tx):
        seen.update(user=tx.ctx.user, location=tx.location, timestamp=tx.timestamp)

    in_tx(tx, look)
    assert seen == {"user": "ann", "location": "client", "timestamp": 1732590000000.0}


def test_context_defaults():
    ctx = Context()
    assert ctx.user is None
    assert ctx.claims == {}
    with pytest.raises(AttributeError):
        ctx.user = "x"  # type: ignore[misc]


def test_updating_the_key_is_a_mutation_error(conn, tx):
    run(make_mutators(), tx, "add_todo", id="t1", title="x")

    async def rekey(tx):
        await tx.update(todos).set(id="t2", title="y").where(todos.id == "t1")

    with pytest.raises(MutationError, match=r"^the key todos\.id never changes$"):
        in_tx(tx, rekey)

    async def rekey_int(tx):
        await tx.update(counters).set(n=2)

    with pytest.raises(MutationError, match=r"^the key counters\.n never changes$"):
        in_tx(tx, rekey_int)
    assert all_todos(conn) == [("t1", "x", 0, "ann")]


def test_insert_checks_the_row(conn, tx):
    async def missing(tx):
        await tx.insert(todos).values(id="t1", done=True)

    with pytest.raises(MutationError, match=r"^todos: missing value for title$"):
        in_tx(tx, missing)

    async def missing_key(tx):
        await tx.insert(todos).values(title="no key")

    with pytest.raises(MutationError, match=r"^todos: missing value for id$"):
        in_tx(tx, missing_key)

    async def unknown(tx):
        await tx.insert(todos).values(id="t1", title="x", colour="red")

    with pytest.raises(MutationError, match=r"^table 'todos' has no column 'colour'; columns: id"):
        in_tx(tx, unknown)

    async def wrong_type(tx):
        await tx.insert(todos).values(id="t1", title="x", done="yes")

    with pytest.raises(MutationError, match=r"^todos\.done: expected a boolean, got 'yes'$"):
        in_tx(tx, wrong_type)

    async def null(tx):
        await tx.insert(todos).values(id="t1", title=None)

    with pytest.raises(MutationError, match=r"^todos\.title must not be null$"):
        in_tx(tx, null)

    async def bad_blob(tx):
        await tx.insert(todos).values(id="t1", title="x", photo="not-a-hash")

    with pytest.raises(MutationError, match=r"^todos\.photo: expected a blob hash"):
        in_tx(tx, bad_blob)
    assert all_todos(conn) == []


def test_defaults_and_nulls_fill_omitted_columns(conn, tx):
    async def body(tx):
        await tx.insert(todos).values(id="t1", title="x")
        return await tx.get(todos, "t1")

    assert in_tx(tx, body) == {
        "id": "t1",
        "title": "x",
        "done": False,
        "owner": None,
        "photo": None,
    }


def test_upsert_updates_only_the_given_columns(conn, tx):
    async def body(tx):
        await tx.insert(todos).values(id="t1", title="first", done=True, owner="bob")
        await tx.upsert(todos).values(id="t1", title="renamed")
        await tx.upsert(todos).values(id="t2", title="new")
        await tx.upsert(counters).values(n=1)
        await tx.upsert(counters).values(n=1)  # the key alone: nothing to update
        await tx.upsert(counters).values(n=2, count=5)
        await tx.upsert(counters).values(n=2, count=6)

    in_tx(tx, body)
    assert all_todos(conn) == [("t1", "renamed", 1, "bob"), ("t2", "new", 0, None)]
    assert conn.execute('SELECT * FROM "counters" ORDER BY "n"').fetchall() == [(1, 0), (2, 6)]


def test_upsert_needs_every_column_without_a_default(conn, tx):
    async def partial(tx):
        await tx.insert(todos).values(id="t1", title="first")
        await tx.upsert(todos).values(id="t1", done=True)

    with pytest.raises(MutationError, match=r"^todos: missing value for title$"):
        in_tx(tx, partial)


def test_update_and_delete(conn, tx):
    async def body(tx):
        for i in range(5):
            await tx.insert(todos).values(
                id=f"t{i}", title=f"todo {i}", owner="ann" if i % 2 else None
            )
        await tx.update(todos).set(title="odd").where(todos.owner == "ann")
        await tx.delete(todos).where(todos.id.in_(["t0", "t4"]))
        await tx.update(todos).set(done=True)  # no where: every row

    in_tx(tx, body)
    assert all_todos(conn) == [
        ("t1", "odd", 1, "ann"),
        ("t2", "todo 2", 1, None),
        ("t3", "odd", 1, "ann"),
    ]


def test_write_builders_check_their_arguments(tx):
    with pytest.raises(QueryError, match=r"^expected a table, got 'todos'$"):
        tx.insert("todos")  # type: ignore[arg-type]
    with pytest.raises(QueryError, match=r"update\(todos\)\.set\(\) needs at least one column"):
        tx.update(todos).set()
    with pytest.raises(QueryError, match=r"where\(\) takes a condition such as todos\.id == id"):
        tx.update(todos).set(done=True).where(True)  # type: ignore[arg-type]
    with pytest.raises(QueryError, match=r"where\(\) takes a condition"):
        tx.delete(todos).where("id = 1")  # type: ignore[arg-type]

    async def delete_everything(tx):
        await tx.delete(todos)  # a delete needs where()

    with pytest.raises(QueryError, match=r"delete\(todos\) needs \.where\(\.\.\.\)"):
        in_tx(tx, delete_everything)


def test_writes_cannot_reach_into_another_table(conn, tx):
    async def body(tx):
        await tx.insert(todos).values(id="1", title="x")
        await tx.delete(todos).where(counters.n == 1)

    with pytest.raises(QueryError, match=r"counters\.n is not a column of 'todos'"):
        in_tx(tx, body)


def test_get(conn, tx):
    async def body(tx):
        await tx.insert(todos).values(id="t1", title="x", done=True)
        await tx.insert(counters).values(n=3, count=9)
        return (
            await tx.get(todos, "t1"),
            await tx.get(todos, "nope"),
            await tx.get(counters, 3),
            await tx.get(counters, 4),
        )

    found, absent, counter, no_counter = in_tx(tx, body)
    assert found == {"id": "t1", "title": "x", "done": True, "owner": None, "photo": None}
    assert type(found["done"]) is bool
    assert absent is None
    assert counter == {"n": 3, "count": 9}
    assert no_counter is None


def test_get_with_a_key_of_the_wrong_type_is_a_query_error(tx):
    async def body(tx):
        return await tx.get(counters, "3")

    with pytest.raises(QueryError, match=r"cannot compare counters\.n \(integer\) with '3'"):
        in_tx(tx, body)


def test_select_all_and_first(conn, tx):
    async def body(tx):
        for i, title in enumerate(["b", "a", "c", "a"]):
            await tx.insert(todos).values(id=f"t{i}", title=title, done=i % 2 == 1)
        return {
            "all": await tx.select(todos.id, todos.title).order_by(todos.title, todos.id).all(),
            "where": await tx.select(todos.id)
            .where(todos.title == "a")
            .where(
                todos.done == True  # noqa: E712
            )
            .all(),
            "first": await tx.select(todos)
            .where(todos.title == "a")
            .order_by(todos.id.desc())
            .first(),
            "none": await tx.select(todos).where(todos.title == "zzz").first(),
            "page": await tx.select(todos.id).order_by(todos.id).limit(2).offset(1).all(),
            "first_after_offset": await tx.select(todos.id).order_by(todos.id).offset(2).first(),
        }

    got = in_tx(tx, body)
    assert got["all"] == [
        {"id": "t1", "title": "a"},
        {"id": "t3", "title": "a"},
        {"id": "t0", "title": "b"},
        {"id": "t2", "title": "c"},
    ]
    assert got["where"] == [{"id": "t1"}, {"id": "t3"}]
    assert got["first"] == {"id": "t3", "title": "a", "done": True, "owner": None, "photo": None}
    assert got["none"] is None
    assert got["page"] == [{"id": "t1"}, {"id": "t2"}]
    assert got["first_after_offset"] == {"id": "t2"}


def test_a_transaction_without_an_engine_cannot_run():
    tx = Transaction(ctx=Context(), timestamp=0.0)

    async def body(tx):
        await tx.insert(todos).values(id="1", title="x")

    with pytest.raises(NotImplementedError):
        in_tx(tx, body)
