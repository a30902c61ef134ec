"""SQL dialects: compiled text and parameters, the shape cache, and SQLite for real."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3

import pytest

from plasma_nb import QueryError, and_, col, select, table
from plasma_nb.core import Compiled, PostgresDialect, SQLiteDialect
from plasma_nb.core.expr import ContextRef
from plasma_nb.core.query import Delete, Insert, Update

UTC = dt.UTC

todos = table(
    "todos",
    id=col.id(),
    title=col.text(),
    done=col.boolean(default=False),
    owner=col.text(nullable=True),
    rank=col.integer(nullable=True),
)

everything = table(
    "everything",
    id=col.integer(primary_key=True),
    t=col.text(default="it's"),
    n=col.integer(default=-3),
    r=col.real(default=1.5),
    f=col.boolean(default=True),
    j=col.json(default={"a": [1, None]}),
    b=col.blob(nullable=True),
    ts=col.timestamp(default=dt.datetime(2024, 1, 1, tzinfo=UTC)),
)

# Column names that are SQL keywords.
keywords = table(
    "order",
    select=col.text(primary_key=True),
    where=col.text(nullable=True),
    group=col.integer(nullable=True),
    values=col.boolean(default=False),
    count=col.real(nullable=True),
    name=col.text(nullable=True),
    self=col.text(nullable=True),
)


def sqlite_db(*tables):
    dialect = SQLiteDialect()
    conn = sqlite3.connect(":memory:")
    for t in tables:
        conn.execute(dialect.create_table_sql(t))
    return dialect, conn


def run(conn, compiled: Compiled):
    return conn.execute(compiled.sql, compiled.params)


def rows(conn, compiled: Compiled):
    assert compiled.decode is not None
    return [compiled.decode(r) for r in run(conn, compiled)]


def insert(dialect, conn, t, /, **row):
    run(conn, dialect.compile(Insert(t, t._check_row(row), upsert=False)))


# -- compiled text --------------------------------------------------------------------------

SELECT = (
    select(todos.id, todos.title)
    .where((todos.done == False) & todos.title.like("a%"))  # noqa: E712
    .order_by(todos.title, todos.done.desc())
    .limit(5)
    .offset(2)
)


@pytest.mark.parametrize(
    ("dialect", "stmt", "sql", "params"),
    [
        (
            SQLiteDialect(),
            SELECT,
            'SELECT "id", "title" FROM "todos" WHERE (("done" = ?) AND ("title" GLOB ?)) '
            'ORDER BY "title", "done" DESC LIMIT ? OFFSET ?',
            [0, "a*", 5, 2],
        ),
        (
            PostgresDialect(),
            SELECT,
            'SELECT "id", "title" FROM "todos" WHERE (("done" = $1) AND ("title" LIKE $2)) '
            'ORDER BY "title" ASC NULLS FIRST, "done" DESC NULLS LAST LIMIT $3 OFFSET $4',
            [False, "a%", 5, 2],
        ),
        (
            SQLiteDialect(),
            select(todos).where(todos.owner.ilike("Me%") | (todos.rank >= 3)),
            'SELECT "id", "title", "done", "owner", "rank" FROM "todos" '
            'WHERE (("owner" LIKE ? ESCAPE \'\\\') OR ("rank" >= ?))',
            ["Me%", 3],
        ),
        (
            PostgresDialect(),
            select(todos).where(todos.owner.ilike("Me%") | (todos.rank >= 3)),
            'SELECT "id", "title", "done", "owner", "rank" FROM "todos" '
            "WHERE ((translate(\"owner\", 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', "
            "'abcdefghijklmnopqrstuvwxyz') LIKE $1) OR (\"rank\" >= $2))",
            ["me%", 3],
        ),
        (
            SQLiteDialect(),
            select(todos.id).where(
                todos.owner.in_(["a", None]) & ~todos.rank.in_([]) & todos.owner.is_not_null()
            ),
            'SELECT "id" FROM "todos" WHERE (("owner" IN (?, ?)) AND '
            '(NOT (0 AND ("rank" IS NULL OR 1))) AND ("owner" IS NOT NULL))',
            ["a", None],
        ),
        (
            PostgresDialect(),
            select(todos.id).where(
                todos.owner.in_(["a", None]) & ~todos.rank.in_([]) & todos.owner.is_not_null()
            ),
            'SELECT "id" FROM "todos" WHERE (("owner" IN ($1, $2)) AND '
            '(NOT (FALSE AND ("rank" IS NULL OR TRUE))) AND ("owner" IS NOT NULL))',
            ["a", None],
        ),
        (
            SQLiteDialect(),
            select(todos.id).where(todos.owner == None).offset(3),  # noqa: E711
            'SELECT "id" FROM "todos" WHERE ("owner" IS NULL) LIMIT -1 OFFSET ?',
            [3],
        ),
        (
            PostgresDialect(),
            select(todos.id).where(todos.owner == None).offset(3),  # noqa: E711
            'SELECT "id" FROM "todos" WHERE ("owner" IS NULL) OFFSET $1',
            [3],
        ),
        (
            SQLiteDialect(),
            Insert(todos, {"id": "1", "title": "t", "done": True}, upsert=False),
            'INSERT INTO "todos" ("id", "title", "done") VALUES (?, ?, ?)',
            ["1", "t", 1],
        ),
        (
            PostgresDialect(),
            Insert(todos, {"id": "1", "title": "t", "done": True}, upsert=False),
            'INSERT INTO "todos" ("id", "title", "done") VALUES ($1, $2, $3)',
            ["1", "t", True],
        ),
        (
            SQLiteDialect(),
            Insert(todos, {"id": "1", "title": "t"}, upsert=True),
            'INSERT INTO "todos" ("id", "title") VALUES (?, ?) '
            'ON CONFLICT ("id") DO UPDATE SET "title" = excluded."title"',
            ["1", "t"],
        ),
        (
            PostgresDialect(),
            Insert(todos, {"id": "1"}, upsert=True),
            'INSERT INTO "todos" ("id") VALUES ($1) ON CONFLICT ("id") DO NOTHING',
            ["1"],
        ),
        (
            SQLiteDialect(),
            Update(todos, {"title": "u", "done": False}, todos.id == "1"),
            'UPDATE "todos" SET "title" = ?, "done" = ? WHERE ("id" = ?)',
            ["u", 0, "1"],
        ),
        (
            PostgresDialect(),
            Update(todos, {"title": "u", "done": False}, todos.id == "1"),
            'UPDATE "todos" SET "title" = $1, "done" = $2 WHERE ("id" = $3)',
            ["u", False, "1"],
        ),
        (
            PostgresDialect(),
            Update(todos, {"done": True}, None),
            'UPDATE "todos" SET "done" = $1',
            [True],
        ),
        (
            SQLiteDialect(),
            Delete(todos, (todos.rank < 0) | (todos.rank > 10)),
            'DELETE FROM "todos" WHERE (("rank" < ?) OR ("rank" > ?))',
            [0, 10],
        ),
        (
            PostgresDialect(),
            Delete(todos, (todos.rank < 0) | (todos.rank > 10)),
            'DELETE FROM "todos" WHERE (("rank" < $1) OR ("rank" > $2))',
            [0, 10],
        ),
    ],
)
def test_compiled_sql_and_params(dialect, stmt, sql, params):
    compiled = dialect.compile(stmt)
    assert compiled.sql == sql
    assert compiled.params == params
    assert repr(compiled) == f"Compiled({sql!r}, {params!r})"


def test_create_table_sql():
    assert SQLiteDialect().create_table_sql(everything) == (
        'CREATE TABLE IF NOT EXISTS "everything" ("id" INTEGER NOT NULL PRIMARY KEY, '
        "\"t\" TEXT NOT NULL DEFAULT 'it''s', \"n\" INTEGER NOT NULL DEFAULT -3, "
        '"r" REAL NOT NULL DEFAULT 1.5, "f" INTEGER NOT NULL DEFAULT 1, '
        '"j" TEXT NOT NULL DEFAULT \'{"a":[1,null]}\', "b" TEXT, '
        "\"ts\" TEXT NOT NULL DEFAULT '2024-01-01T00:00:00.000000Z')"
    )
    assert PostgresDialect().create_table_sql(everything) == (
        'CREATE TABLE IF NOT EXISTS "everything" ("id" BIGINT NOT NULL PRIMARY KEY, '
        '"t" TEXT COLLATE "C" NOT NULL DEFAULT \'it\'\'s\', "n" BIGINT NOT NULL DEFAULT -3, '
        '"r" DOUBLE PRECISION NOT NULL DEFAULT 1.5, "f" BOOLEAN NOT NULL DEFAULT TRUE, '
        '"j" JSONB NOT NULL DEFAULT \'{"a":[1,null]}\', "b" TEXT COLLATE "C", '
        '"ts" TEXT COLLATE "C" NOT NULL DEFAULT \'2024-01-01T00:00:00.000000Z\')'
    )


def test_postgres_numbers_placeholders_across_values_where_and_limit():
    dialect = PostgresDialect()
    compiled = dialect.compile(
        select(todos.id)
        .where(todos.title.in_(["a", "b", "c"]) & (todos.rank != 2))
        .limit(1)
        .offset(9)
    )
    assert compiled.sql.endswith('("title" IN ($1, $2, $3)) AND ("rank" != $4)) LIMIT $5 OFFSET $6')
    assert compiled.params == ["a", "b", "c", 2, 1, 9]
    compiled = dialect.compile(
        Update(todos, {"title": "x", "rank": 1, "owner": None}, todos.id.in_(["p", "q"]))
    )
    assert compiled.sql == (
        'UPDATE "todos" SET "title" = $1, "rank" = $2, "owner" = $3 WHERE ("id" IN ($4, $5))'
    )
    assert compiled.params == ["x", 1, None, "p", "q"]


def test_context_values_become_parameters():
    stmt = select(todos.id).where((todos.owner == ContextRef("user")) | todos.owner.is_null())
    for dialect, mark in ((SQLiteDialect(), "?"), (PostgresDialect(), "$1")):
        compiled = dialect.compile(stmt, {"user": "ann"})
        assert compiled.sql == (
            f'SELECT "id" FROM "todos" WHERE (("owner" = {mark}) OR ("owner" IS NULL))'
        )
        assert compiled.params == ["ann"]
        again = dialect.compile(stmt, {"user": "bob"})
        assert again.sql is compiled.sql
        assert again.params == ["bob"]
        with pytest.raises(QueryError, match=r"^ctx\.user is not available here$"):
            dialect.compile(stmt)
        with pytest.raises(QueryError, match=r"ctx\.user is not available here"):
            dialect.compile(stmt, {"claims": {}})


def test_compile_rejects_other_objects():
    with pytest.raises(QueryError, match="cannot compile 'SELECT 1'"):
        SQLiteDialect().compile("SELECT 1")  # type: ignore[arg-type]


# -- literals are checked against the column they meet -------------------------------------


@pytest.mark.parametrize("dialect", [SQLiteDialect(), PostgresDialect()], ids=["sqlite", "pg"])
@pytest.mark.parametrize(
    ("cond", "message"),
    [
        (lambda: todos.done == 0, r"cannot compare todos\.done \(boolean\) with 0"),
        (lambda: todos.done != 1, r"cannot compare todos\.done \(boolean\) with 1"),
        (lambda: 0 == todos.done, r"cannot compare todos\.done \(boolean\) with 0"),
        (lambda: todos.done.in_([True, 0]), r"cannot compare todos\.done \(boolean\) with 0"),
        (lambda: todos.rank == "1", r"cannot compare todos\.rank \(integer\) with '1'"),
        (lambda: todos.rank < 1.5, r"cannot compare todos\.rank \(integer\) with 1\.5"),
        (lambda: todos.rank > 2**53 + 1, r"cannot compare todos\.rank \(integer\) with 9007"),
        (lambda: todos.title == 1, r"cannot compare todos\.title \(text\) with 1"),
        (lambda: everything.r < float("nan"), r"cannot compare everything\.r \(real\) with nan"),
        (lambda: everything.b == "XYZ", r"cannot compare everything\.b \(blob\) with 'XYZ'"),
        (
            lambda: everything.ts > dt.datetime(2024, 1, 1),
            r"cannot compare everything\.ts \(timestamp\) with datetime",
        ),
    ],
)
def test_literals_of_the_wrong_type_are_query_errors(dialect, cond, message):
    expr = cond()
    t = everything if "everything" in message else todos
    with pytest.raises(QueryError, match=message):
        dialect.compile(select(t).where(expr))


@pytest.mark.parametrize("dialect", [SQLiteDialect(), PostgresDialect()], ids=["sqlite", "pg"])
@pytest.mark.parametrize("method", ["like", "ilike"])
def test_like_on_a_non_text_column_is_a_query_error(dialect, method):
    with pytest.raises(
        QueryError, match=rf"^{method}\(\) matches text, but todos\.rank is integer$"
    ):
        dialect.compile(select(todos).where(getattr(todos.rank, method)("1%")))
    with pytest.raises(QueryError, match=rf"{method}\(\) matches text, but everything\.j is json"):
        dialect.compile(select(everything).where(getattr(everything.j, method)("%")))


def test_literals_are_converted_for_the_column():
    when = dt.datetime(2024, 6, 1, 14, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    stmt = select(everything.id).where(
        (everything.ts >= when)
        & (everything.ts < "2025-01-01T00:00:00Z")
        & (everything.r > 1)
        & (everything.f == True)  # noqa: E712
    )
    assert SQLiteDialect().compile(stmt).params == [
        "2024-06-01T12:00:00.000000Z",
        "2025-01-01T00:00:00.000000Z",
        1.0,
        1,
    ]
    assert PostgresDialect().compile(stmt).params == [
        "2024-06-01T12:00:00.000000Z",
        "2025-01-01T00:00:00.000000Z",
        1.0,
        True,
    ]
    assert type(SQLiteDialect().compile(stmt).params[2]) is float


# -- the shape cache -----------------------------------------------------------------------


@pytest.mark.parametrize("dialect_cls", [SQLiteDialect, PostgresDialect])
def test_same_shape_shares_one_sql_string(dialect_cls):
    dialect = dialect_cls()

    def query(title, rank, owners, pattern, limit):
        return (
            select(todos)
            .where((todos.title == title) | (todos.rank > rank))
            .where(todos.owner.in_(owners) & todos.title.like(pattern))
            .order_by(todos.rank.desc())
            .limit(limit)
        )

    one = dialect.compile(query("a", 1, ["x", "y"], "a%", 10))
    two = dialect.compile(query("b", 2, ["z", None], "b_", 20))
    assert one.sql is two.sql
    assert one.params != two.params
    assert two.params[0] == "b" and two.params[-1] == 20

    # A different shape gets different SQL.
    three = dialect.compile(query("b", 2, ["z"], "b_", 20))
    assert three.sql != one.sql
    assert dialect.compile(query("b", 2, [], "b_", 20)).sql != one.sql
    assert (
        dialect.compile(select(todos).where(todos.title != "a")).sql
        != dialect.compile(select(todos).where(todos.title == "a")).sql
    )
    assert (
        dialect.compile(select(todos).where(todos.title.ilike("a"))).sql
        != dialect.compile(select(todos).where(todos.title.like("a"))).sql
    )
    assert (
        dialect.compile(select(todos).where(todos.title.is_null())).sql
        != dialect.compile(select(todos).where(todos.title.is_not_null())).sql
    )


@pytest.mark.parametrize("dialect_cls", [SQLiteDialect, PostgresDialect])
def test_write_statements_share_sql_too(dialect_cls):
    dialect = dialect_cls()
    a = dialect.compile(Update(todos, {"title": "a"}, todos.id == "1"))
    b = dialect.compile(Update(todos, {"title": "b"}, todos.id == "2"))
    assert a.sql is b.sql
    assert (a.params, b.params) == (["a", "1"], ["b", "2"])
    a = dialect.compile(Insert(todos, {"id": "1", "title": "a"}, upsert=False))
    b = dialect.compile(Insert(todos, {"id": "2", "title": "b"}, upsert=False))
    assert a.sql is b.sql
    assert dialect.compile(Insert(todos, {"id": "2", "title": "b"}, upsert=True)).sql != a.sql
    assert dialect.compile(Insert(todos, {"title": "b", "id": "2"}, upsert=False)).sql != a.sql
    a = dialect.compile(Delete(todos, todos.id == "1"))
    b = dialect.compile(Delete(todos, todos.id == "2"))
    assert a.sql is b.sql


def test_the_cache_is_per_table():
    dialect = SQLiteDialect()
    other = table("other", id=col.id(), title=col.text())
    a = dialect.compile(select(todos.id).where(todos.title == "x"))
    b = dialect.compile(select(other.id).where(other.title == "x"))
    assert a.sql != b.sql
    assert '"other"' in b.sql


def test_the_cache_is_bounded():
    dialect = SQLiteDialect()
    for n in range(1500):
        # 11 bits pick = or != for 11 terms: 1500 different shapes.
        terms = [todos.title == "x" if n >> bit & 1 else todos.title != "x" for bit in range(11)]
        compiled = dialect.compile(select(todos.id).where(and_(*terms)))
        assert len(compiled.params) == 11
    assert 0 < len(dialect._cache) <= 1024


# -- like patterns -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "glob", "sqlite_like", "pg_like", "pg_ilike"),
    [
        ("a%b_c", "a*b?c", "a%b_c", "a%b_c", "a%b_c"),
        ("\\%\\_\\\\", "%_\\", "\\%\\_\\\\", "\\%\\_\\\\", "\\%\\_\\\\"),
        ("*?[]", "[*][?][[]]", "*?[]", "*?[]", "*?[]"),
        ("\\a\\*", "a[*]", "a*", "a*", "a*"),
        ("end\\", "end\\", "end\\\\", "end\\\\", "end\\\\"),
        ("ABC É ß", "ABC É ß", "ABC É ß", "ABC É ß", "abc É ß"),
        ("", "", "", "", ""),
    ],
)
def test_like_pattern_translation(pattern, glob, sqlite_like, pg_like, pg_ilike):
    sqlite, pg = SQLiteDialect(), PostgresDialect()
    assert sqlite.like_pattern(pattern, case_sensitive=True) == glob
    assert sqlite.like_pattern(pattern, case_sensitive=False) == sqlite_like
    assert pg.like_pattern(pattern, case_sensitive=True) == pg_like
    assert pg.like_pattern(pattern, case_sensitive=False) == pg_ilike


# -- SQLite, for real ----------------------------------------------------------------------


def test_reserved_word_names_are_quoted_and_work():
    dialect, conn = sqlite_db(keywords)
    for sql in (
        dialect.create_table_sql(keywords),
        dialect.compile(select(keywords).where(keywords.where == "w")).sql,
    ):
        for name in ("order", "select", "where", "group", "values", "count"):
            assert f'"{name}"' in sql
    insert(dialect, conn, keywords, select="k1", where="w", group=1, values=True, count=0.5)
    insert(dialect, conn, keywords, select="k2", where=None, group=2, name="n", self="s")
    run(conn, dialect.compile(Update(keywords, {"group": 5}, keywords.select == "k2")))
    found = rows(
        conn,
        dialect.compile(
            select(keywords)
            .where(keywords.group.in_([1, 5]) & keywords.values.in_([True, False]))
            .order_by(keywords.group.desc(), keywords.select)
        ),
    )
    assert found == [
        {
            "select": "k2",
            "where": None,
            "group": 5,
            "values": False,
            "count": None,
            "name": "n",
            "self": "s",
        },
        {
            "select": "k1",
            "where": "w",
            "group": 1,
            "values": True,
            "count": 0.5,
            "name": None,
            "self": None,
        },
    ]
    run(conn, dialect.compile(Delete(keywords, keywords.where.is_null())))
    assert [r["select"] for r in rows(conn, dialect.compile(select(keywords)))] == ["k1"]
    assert PostgresDialect().compile(select(keywords.select)).sql == (
        'SELECT "select" FROM "order"'
    )


def test_every_type_round_trips_through_sqlite_and_defaults_apply():
    dialect, conn = sqlite_db(everything)
    when = dt.datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    full = {
        "id": 1,
        "t": "ünï 'q' \"d\"",
        "n": -(2**53),
        "r": -0.25,
        "f": False,
        "j": {"nested": [1, 2.5, None, True, "é"], "empty": {}},
        "b": "0f" * 32,
        "ts": when,
    }
    insert(dialect, conn, everything, **full)
    insert(dialect, conn, everything, id=2)
    got = rows(conn, dialect.compile(select(everything).order_by(everything.id)))
    assert got[0] == full
    assert type(got[0]["f"]) is bool
    assert type(got[0]["r"]) is float
    assert got[1] == {
        "id": 2,
        "t": "it's",
        "n": -3,
        "r": 1.5,
        "f": True,
        "j": {"a": [1, None]},
        "b": None,
        "ts": dt.datetime(2024, 1, 1, tzinfo=UTC),
    }
    # JSON is stored compactly, timestamps as canonical text.
    raw = conn.execute('SELECT "j", "ts" FROM "everything" WHERE "id" = 1').fetchone()
    assert json.loads(raw[0]) == full["j"]
    assert raw[1] == "2030-05-06T07:08:09.123456Z"
    # Comparing with timestamps works on the stored text.
    found = rows(
        conn,
        dialect.compile(
            select(everything.id).where(everything.ts > dt.datetime(2025, 1, 1, tzinfo=UTC))
        ),
    )
    assert found == [{"id": 1}]


def test_upsert_updates_only_the_given_columns():
    dialect, conn = sqlite_db(todos)
    insert(dialect, conn, todos, id="1", title="first", owner="ann", rank=1)
    run(conn, dialect.compile(Insert(todos, {"id": "1", "title": "renamed"}, upsert=True)))
    run(conn, dialect.compile(Insert(todos, {"id": "2", "title": "new"}, upsert=True)))
    got = rows(conn, dialect.compile(select(todos).order_by(todos.id)))
    assert got == [
        {"id": "1", "title": "renamed", "done": False, "owner": "ann", "rank": 1},
        {"id": "2", "title": "new", "done": False, "owner": None, "rank": None},
    ]


def test_upsert_of_the_key_alone_does_nothing_to_an_existing_row():
    dialect, conn = sqlite_db(everything)
    insert(dialect, conn, everything, id=1, t="kept", n=9)
    run(conn, dialect.compile(Insert(everything, {"id": 1}, upsert=True)))
    run(conn, dialect.compile(Insert(everything, {"id": 2}, upsert=True)))
    got = rows(conn, dialect.compile(select(everything.id, everything.t).order_by(everything.id)))
    assert got == [{"id": 1, "t": "kept"}, {"id": 2, "t": "it's"}]


def test_sqlite_checks_not_null_before_the_upsert_conflict():
    # Why tx.upsert() needs every column that has no default, like tx.insert(): the
    # database refuses the proposed row before it looks for the conflicting one.
    dialect, conn = sqlite_db(todos)
    insert(dialect, conn, todos, id="1", title="first")
    with pytest.raises(sqlite3.IntegrityError, match="NOT NULL constraint failed: todos.title"):
        run(conn, dialect.compile(Insert(todos, {"id": "1", "done": True}, upsert=True)))


def populate_todos():
    dialect, conn = sqlite_db(todos)
    data = [
        ("1", "Apple", False, "ann", 3),
        ("2", "apple pie", True, None, None),
        ("3", "50% off", False, "bob", 1),
        ("4", "snake_case", True, "ann", None),
        ("5", "back\\slash", False, None, 2),
        ("6", "Émile", False, "éve", 5),
        ("7", "*star?[x]", True, "Ann", 4),
    ]
    for id_, title, done, owner, rank in data:
        insert(dialect, conn, todos, id=id_, title=title, done=done, owner=owner, rank=rank)
    return dialect, conn


def ids_where(cond, order=(todos.id,)):
    dialect, conn = populate_todos()
    compiled = dialect.compile(select(todos.id).where(cond).order_by(*order))
    return [r["id"] for r in rows(conn, compiled)]


@pytest.mark.parametrize(
    ("cond", "expected"),
    [
        (todos.title.like("apple%"), ["2"]),
        (todos.title.like("Apple%"), ["1"]),
        (todos.title.ilike("APPLE%"), ["1", "2"]),
        (todos.title.like("50\\%%"), ["3"]),
        (todos.title.like("50%"), ["3"]),
        (todos.title.like("%\\_%"), ["4"]),
        (todos.title.like("%_%"), ["1", "2", "3", "4", "5", "6", "7"]),
        (todos.title.like("back\\\\slash"), ["5"]),
        (todos.title.like("*star?[x]"), ["7"]),
        (todos.title.like("_star_[x]"), ["7"]),
        (todos.title.like("Émile"), ["6"]),
        (todos.title.ilike("émile"), []),  # only ASCII letters fold
        (todos.title.ilike("_MILE"), ["6"]),
        (todos.owner.ilike("ANN"), ["1", "4", "7"]),
        (todos.owner.like("ann"), ["1", "4"]),
        (todos.owner.in_([]), []),
        (~todos.owner.in_([]), ["1", "2", "3", "4", "5", "6", "7"]),
        (todos.owner.in_(["bob", None]), ["3"]),
        (~todos.owner.in_(["bob", None]), []),
        (~todos.owner.in_(["bob"]), ["1", "4", "6", "7"]),
        (todos.owner == None, ["2", "5"]),  # noqa: E711
        (todos.owner != None, ["1", "3", "4", "6", "7"]),  # noqa: E711
        (todos.owner != "ann", ["3", "6", "7"]),
        (~(todos.owner == "ann"), ["3", "6", "7"]),
        (todos.rank < None, []),
        (~(todos.rank < None), []),
        ((todos.rank > 2) | (todos.rank <= 2), ["1", "3", "5", "6", "7"]),
        ((todos.rank > 2) | todos.done, ["1", "2", "4", "6", "7"]),
        (todos.done == True, ["2", "4", "7"]),  # noqa: E712
        (todos.done < True, ["1", "3", "5", "6"]),
        (todos.title > "a", ["2", "4", "5", "6"]),  # code point order: 'É' > 'a'
    ],
)
def test_filters_on_sqlite(cond, expected):
    assert ids_where(cond) == expected


def test_nulls_sort_first_ascending_and_last_descending():
    assert ids_where(todos.id != "", [todos.rank, todos.id]) == ["2", "4", "3", "5", "1", "7", "6"]
    assert ids_where(todos.id != "", [todos.rank.desc(), todos.id]) == [
        "6",
        "7",
        "1",
        "5",
        "3",
        "2",
        "4",
    ]
    assert ids_where(todos.id != "", [todos.owner.desc(), todos.id.desc()]) == [
        "6",
        "3",
        "4",
        "1",
        "7",
        "5",
        "2",
    ]


def test_limit_and_offset_on_sqlite():
    dialect, conn = populate_todos()
    base = select(todos.id).order_by(todos.id)

    def ids(q):
        return [r["id"] for r in rows(conn, dialect.compile(q))]

    assert ids(base.limit(2)) == ["1", "2"]
    assert ids(base.limit(2).offset(3)) == ["4", "5"]
    assert ids(base.offset(5)) == ["6", "7"]
    assert ids(base.limit(0)) == []
    assert ids(base.offset(100)) == []
