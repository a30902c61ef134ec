"""core.evaluate against SQLite itself: for random tables, conditions and orders, the Python
predicate and sort key agree exactly with what SQLiteDialect's SQL returns from a real SQLite."""

from __future__ import annotations

import datetime as dt
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plasma_nb import and_, col, not_, or_, select, table
from plasma_nb.core import SQLiteDialect
from plasma_nb.core.evaluate import (
    Unsupported,
    compile_predicate,
    compile_sort_key,
    like_matcher,
    sql_compare,
)
from plasma_nb.core.expr import Compare, Literal
from plasma_nb.core.query import Insert

t = table(
    "t",
    id=col.id(),
    a=col.text(nullable=True),
    b=col.text(nullable=True),
    n=col.integer(nullable=True),
    r=col.real(nullable=True),
    f=col.boolean(nullable=True),
    j=col.json(nullable=True),
    ts=col.timestamp(nullable=True),
)
TYPES = {"a": "text", "b": "text", "n": "integer", "r": "real", "f": "boolean", "j": "json",
         "ts": "timestamp", "id": "text"}
DIALECT = SQLiteDialect()

ALPHABET = "aAbBkKsS" + "éÉßſ\u212a" + "%_\\*?[]^" + " " + "𝔸\n"
texts = st.text(alphabet=st.sampled_from(ALPHABET), max_size=5)
integers = st.integers(-3, 3) | st.sampled_from([2**53, -(2**53), 1000])
reals = st.sampled_from([0.0, -0.0, 0.5, -1.5, 2.0, 1e300, -5e-324]) | st.floats(
    -4, 4, allow_nan=False, allow_infinity=False
)
jsons = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.text("ab\"", max_size=2),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text("ab", max_size=1), inner,
                                                                  max_size=2),
    max_leaves=4,
)
stamps = st.datetimes(
    min_value=dt.datetime(1999, 12, 31), max_value=dt.datetime(2001, 1, 2),
    timezones=st.just(dt.UTC),
)
VALUES = {"text": texts, "integer": integers, "real": reals | st.integers(-3, 3),
          "boolean": st.booleans(), "json": jsons, "timestamp": stamps}


@st.composite
def rows(draw):
    count = draw(st.integers(0, 12))
    out = []
    for i in range(count):
        row = {"id": f"r{i:02d}" if draw(st.booleans()) else draw(texts) + f"#{i}"}
        for name, kind in TYPES.items():
            if name != "id":
                row[name] = draw(st.none() | VALUES[kind])
        out.append(row)
    return out


def literal(kind):
    return st.none() | VALUES[kind]


@st.composite
def leaf(draw):
    name = draw(st.sampled_from(list(TYPES)))
    column = getattr(t, name)
    kind = TYPES[name]
    what = draw(st.sampled_from(["cmp", "cmp", "cmpcol", "in", "like", "null", "bool"]))
    if what == "cmp":
        op = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">="]))
        value = draw(literal(kind))
        if draw(st.booleans()):
            return {"==": column == value, "!=": column != value, "<": column < value,
                    "<=": column <= value, ">": column > value, ">=": column >= value}[op]
        if value is None:
            return column == None  # noqa: E711
        return Compare({"==": "=", "!=": "!="}.get(op, op), Literal(value), column)  # type: ignore[arg-type]
    if what == "cmpcol":
        other = draw(st.sampled_from([n for n, k in TYPES.items()
                                      if (k in ("integer", "real", "boolean"))
                                      == (kind in ("integer", "real", "boolean"))]))
        op = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">="]))
        o = getattr(t, other)
        return {"==": column == o, "!=": column != o, "<": column < o, "<=": column <= o,
                ">": column > o, ">=": column >= o}[op]
    if what == "in":
        return column.in_(draw(st.lists(literal(kind), max_size=3)))
    if what == "like" and kind == "text":
        pattern = draw(st.text(alphabet=ALPHABET + "%%__\\\\", max_size=6))
        return column.like(pattern) if draw(st.booleans()) else column.ilike(pattern)
    if what == "bool":
        return t.f
    return column.is_null() if draw(st.booleans()) else column.is_not_null()


conditions = st.recursive(
    leaf(),
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(lambda xs: and_(*xs)),
        st.lists(inner, min_size=1, max_size=3).map(lambda xs: or_(*xs)),
        inner.map(not_),
        inner.map(lambda x: (x == True).is_null()),  # noqa: E712
    ),
    max_leaves=6,
)
orders = st.lists(
    st.tuples(st.sampled_from(list(TYPES)), st.booleans()), max_size=3, unique_by=lambda x: x[0]
)


def database(data):
    conn = sqlite3.connect(":memory:")
    conn.execute(DIALECT.create_table_sql(t))
    for row in data:
        compiled = DIALECT.compile(Insert(t, t._check_row(row), upsert=False))
        try:
            conn.execute(compiled.sql, compiled.params)
        except sqlite3.IntegrityError:  # a duplicate id
            pass
    return conn


def run(conn, stmt):
    compiled = DIALECT.compile(stmt)
    return [compiled.decode(r) for r in conn.execute(compiled.sql, compiled.params)]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=rows(), condition=conditions)
def test_the_predicate_agrees_with_sqlite(data, condition):
    conn = database(data)
    everything = run(conn, select(t))
    try:
        predicate = compile_predicate(condition)
    except Unsupported:
        return
    expected = {r["id"] for r in run(conn, select(t.id).where(condition))}
    got = set()
    for row in everything:
        try:
            if predicate(row):
                got.add(row["id"])
        except Unsupported:
            return
    assert got == expected


@settings(max_examples=300, deadline=None)
@given(data=rows(), order=orders)
def test_the_sort_key_agrees_with_sqlite(data, order):
    conn = database(data)
    terms = [getattr(t, name).desc() if desc else getattr(t, name) for name, desc in order]
    expected = run(conn, select(t).order_by(*terms, t.id))
    key = compile_sort_key(select(t).order_by(*terms).order, t)
    assert sorted(expected, key=key) == expected
    assert len({key(r) for r in expected}) == len(expected)  # the key breaks every tie


def test_unsupported_shapes_are_refused():
    with pytest.raises(Unsupported, match="a numeric and a text column"):
        compile_predicate(t.n == t.a)
    with pytest.raises(Unsupported, match="truth value"):
        compile_predicate((t.n == 1) & t.a)


@pytest.mark.parametrize(
    ("pattern", "sensitive", "text", "matches"),
    [
        ("a%", True, "abc", True),
        ("a%", True, "Abc", False),
        ("a%", False, "Abc", True),
        ("é", False, "É", False),  # ilike folds ASCII only
        ("k", False, "\u212a", False),  # not the Kelvin sign
        ("50\\%", True, "50%", True),
        ("50\\%", True, "500", False),
        ("_", True, "𝔸", True),  # one code point
        ("a\\", True, "a\\", True),  # a trailing backslash is itself
        ("[a]", True, "[a]", True),
        ("%", True, "line\nbreak", True),
    ],
)
def test_like(pattern, sensitive, text, matches):
    assert like_matcher(pattern, case_sensitive=sensitive)(text) is matches


def test_sql_compare_orders_storage_classes():
    assert sql_compare(None, 1) is None
    assert sql_compare(1, "1") == -1
    assert sql_compare("b", b"a") == -1
    assert sql_compare(1, 1.0) == 0
    assert sql_compare("Z", "a") == -1
