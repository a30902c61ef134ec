"""Declarations: the ``col`` namespace, ``table()``, ``Schema`` and value checks."""

from __future__ import annotations

import datetime as dt
import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plasma_nb import MutationError, PlasmaError, Schema, SchemaError, col, table
from plasma_nb.core.schema import (
    MISSING,
    Column,
    ColumnType,
    Table,
    format_timestamp,
    parse_timestamp,
)

HASH = "ab" * 32
UTC = dt.UTC


def make_todos() -> Table:
    return table(
        "todos",
        id=col.id(),
        title=col.text(),
        done=col.boolean(default=False),
        owner=col.text(nullable=True),
        photo=col.blob(nullable=True),
    )


# -- the col namespace ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "type_"),
    [
        (col.text, ColumnType.TEXT),
        (col.integer, ColumnType.INTEGER),
        (col.real, ColumnType.REAL),
        (col.boolean, ColumnType.BOOLEAN),
        (col.json, ColumnType.JSON),
        (col.blob, ColumnType.BLOB),
        (col.timestamp, ColumnType.TIMESTAMP),
    ],
)
def test_every_column_type_with_its_defaults(make, type_):
    c = make()
    assert isinstance(c, Column)
    assert c.type is type_
    assert c.nullable is False
    assert c.primary_key is False
    assert c.default is MISSING
    assert c.has_default is False

    n = make(nullable=True)
    assert n.nullable is True
    assert n.default is MISSING
    assert n.has_default is True  # NULL is the implicit default

    none_default = make(nullable=True, default=None)
    assert none_default.default is None
    assert none_default.has_default is True


def test_col_id_is_a_text_primary_key():
    c = col.id()
    assert c.type is ColumnType.TEXT
    assert c.primary_key is True
    assert c.nullable is False
    assert c.has_default is False


@pytest.mark.parametrize("make", [col.text, col.integer])
def test_text_and_integer_can_be_keys(make):
    t = table("t", k=make(primary_key=True), v=col.text(nullable=True))
    assert t._pk is t.k
    assert t.k.primary_key is True


@pytest.mark.parametrize("make", [col.real, col.boolean, col.json, col.blob, col.timestamp])
def test_other_types_take_no_primary_key_option(make):
    with pytest.raises(TypeError):
        make(primary_key=True)


@pytest.mark.parametrize("type_", [ColumnType.REAL, ColumnType.BOOLEAN, ColumnType.JSON])
def test_a_key_must_be_text_or_integer(type_):
    with pytest.raises(
        SchemaError, match=f"primary key must be text or integer, not {type_.value}"
    ):
        Column(type_, primary_key=True)


def test_a_key_cannot_be_nullable():
    with pytest.raises(SchemaError, match="primary key column cannot be nullable"):
        col.text(primary_key=True, nullable=True)


def test_column_options_are_keyword_only():
    with pytest.raises(TypeError):
        col.text(True)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("make", "default", "stored"),
    [
        (col.text, "x", "x"),
        (col.text, "", ""),
        (col.integer, 7, 7),
        (col.integer, -(2**53), -(2**53)),
        (col.real, 1.5, 1.5),
        (col.real, 2, 2.0),  # an int is a real; stored as float
        (col.boolean, False, False),
        (col.boolean, True, True),
        (col.json, {"a": [1, None, "x"]}, {"a": [1, None, "x"]}),
        (col.json, [], []),
        (col.blob, HASH, HASH),
        (
            col.timestamp,
            dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC),
            dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC),
        ),
        (col.timestamp, "2024-05-06T07:08:09Z", dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)),
    ],
)
def test_good_defaults_are_stored_in_canonical_form(make, default, stored):
    c = make(default=default)
    assert c.default == stored
    assert type(c.default) is type(stored)
    assert c.has_default is True


def test_a_timestamp_default_is_converted_to_utc():
    plus2 = dt.timezone(dt.timedelta(hours=2))
    c = col.timestamp(default=dt.datetime(2024, 1, 1, 12, tzinfo=plus2))
    assert c.default == dt.datetime(2024, 1, 1, 10, tzinfo=UTC)
    assert c.default.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize(
    ("make", "default", "message"),
    [
        (col.text, 1, r"default 1 is not text \(text column\)"),
        (col.integer, 1.0, r"default 1\.0 is not an integer \(integer column\)"),
        (col.integer, True, r"default True is not an integer \(integer column\)"),
        (col.integer, 2**53 + 1, r"is not an integer within ±2\*\*53"),
        (col.real, "1", r"default '1' is not a real number \(real column\)"),
        (col.real, math.nan, r"default nan is not a finite real number"),
        (col.real, math.inf, r"default inf is not a finite real number"),
        (col.boolean, 0, r"default 0 is not a boolean \(boolean column\)"),
        (col.json, {1, 2}, r"is not a JSON-serializable value \(json column\)"),
        (col.json, [math.nan], r"is not a JSON-serializable value"),
        (col.blob, "AB" * 32, r"is not a blob hash \(64 lowercase hex characters\)"),
        (col.timestamp, dt.datetime(2024, 1, 1), r"is not a timezone-aware datetime"),
        (col.timestamp, "2024-01-01T00:00:00", r"ending in 'Z' \(timestamp column\)"),
    ],
)
def test_bad_defaults_are_schema_errors(make, default, message):
    with pytest.raises(SchemaError, match=message):
        make(default=default)


def test_default_none_needs_nullable():
    with pytest.raises(SchemaError, match=r"default=None needs nullable=True"):
        col.text(default=None)


def test_a_long_bad_default_is_shortened_in_the_message():
    with pytest.raises(SchemaError) as info:
        col.integer(default="x" * 500)
    assert len(str(info.value)) < 150
    assert "..." in str(info.value)


def test_unbound_column_repr():
    assert repr(col.text()) == "<unbound text column>"


# -- table() -----------------------------------------------------------------------------


def test_table_exposes_columns_as_attributes_and_metadata_under_underscores():
    todos = make_todos()
    assert todos._name == "todos"
    assert list(todos._columns) == ["id", "title", "done", "owner", "photo"]
    assert todos._pk is todos.id
    assert todos.done.type is ColumnType.BOOLEAN
    assert [c.name for c in todos] == ["id", "title", "done", "owner", "photo"]
    assert todos.title.table is todos
    assert todos.title.qualname == "todos.title"
    assert repr(todos) == "<Table todos (id, title, done, owner, photo)>"
    assert repr(todos.title) == "<Column todos.title text>"


@pytest.mark.parametrize(
    "name",
    [
        "name",
        "self",
        "select",
        "count",
        "values",
        "table",
        "order",
        "where",
        "id",
        "type",
        "columns",
        "schema",
        "default",
        "nullable",
        "primary_key",
        "key",
        "in_",
        "like",
    ],
)
def test_any_identifier_works_as_a_column_name(name):
    t = table("t", k=col.id(), **{name: col.text(nullable=True)})
    column = getattr(t, name)
    assert isinstance(column, Column)
    assert column.name == name
    assert column.table is t
    assert t._columns[name] is column


def test_table_takes_its_name_positionally_only():
    # `name` is free for a column because table()'s own parameter is positional-only.
    t = table("people", id=col.id(), name=col.text())
    assert t._name == "people"
    assert t.name.name == "name"
    with pytest.raises(TypeError):
        table(name="people", id=col.id())  # type: ignore[call-arg]


def test_table_is_read_only():
    todos = make_todos()
    with pytest.raises(AttributeError, match="table 'todos' is read-only"):
        todos.title = col.text()  # type: ignore[misc]
    with pytest.raises(AttributeError, match="read-only"):
        todos.extra = 1  # type: ignore[attr-defined]


def test_unknown_column_attribute_lists_the_columns():
    todos = make_todos()
    with pytest.raises(
        AttributeError,
        match=r"table 'todos' has no column 'titel'; columns: id, title, done, owner, photo",
    ):
        todos.titel  # noqa: B018


def test_unknown_underscore_attribute_is_a_plain_attribute_error():
    todos = make_todos()
    with pytest.raises(AttributeError, match="^_nope$"):
        todos._nope  # noqa: B018
    assert not hasattr(todos, "_nope")


@pytest.mark.parametrize(
    "keys",
    [
        {},
        {"a": col.id(), "b": col.text(primary_key=True)},
        {"a": col.integer(primary_key=True), "b": col.id()},
    ],
)
def test_a_table_needs_exactly_one_primary_key(keys):
    with pytest.raises(SchemaError, match=r"table 't' needs exactly one primary key") as info:
        table("t", v=col.text(), **keys)
    expected = ", ".join(keys) or "none"
    assert str(info.value).endswith(f"found {expected}")


@pytest.mark.parametrize("name", ["", "1todos", "_todos", "to dos", "todos!", "tödös", "a-b"])
def test_bad_table_names(name):
    with pytest.raises(SchemaError, match=re.escape(f"table name {name!r} must be an identifier")):
        table(name, id=col.id())


def test_table_name_must_be_a_string():
    with pytest.raises(SchemaError, match="table name 3 must be an identifier"):
        table(3, id=col.id())  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["_private", "_", "1x", "ü"])
def test_bad_column_names(name):
    with pytest.raises(
        SchemaError,
        match=re.escape(f"column name t.{name} must be an identifier that does not start with '_'"),
    ):
        table("t", id=col.id(), **{name: col.text()})


def test_a_table_needs_columns():
    with pytest.raises(SchemaError, match="table 't' has no columns"):
        table("t")


def test_columns_must_come_from_col():
    with pytest.raises(SchemaError, match=r"t\.title: expected a column from the col namespace"):
        table("t", id=col.id(), title="text")  # type: ignore[arg-type]
    with pytest.raises(SchemaError, match=r"t\.title: .*got <class 'str'>"):
        table("t", id=col.id(), title=str)  # type: ignore[arg-type]


def test_a_column_object_belongs_to_one_table():
    shared = col.text()
    table("a", id=col.id(), x=shared)
    with pytest.raises(SchemaError, match=r"b\.y: this column object already belongs to a\.x"):
        table("b", id=col.id(), y=shared)


# -- Column.check --------------------------------------------------------------------------


def make_everything() -> Table:
    return table(
        "things",
        id=col.id(),
        n=col.integer(),
        r=col.real(),
        f=col.boolean(),
        j=col.json(),
        b=col.blob(),
        ts=col.timestamp(),
        maybe=col.text(nullable=True),
    )


@pytest.mark.parametrize(
    ("column", "value", "canonical"),
    [
        ("id", "x", "x"),
        ("id", "", ""),
        ("id", "ünïcödé ✓", "ünïcödé ✓"),
        ("n", 0, 0),
        ("n", 2**53, 2**53),
        ("n", -(2**53), -(2**53)),
        ("r", 0.5, 0.5),
        ("r", 3, 3.0),
        ("r", -0.0, -0.0),
        ("r", 1e308, 1e308),
        ("f", True, True),
        ("f", False, False),
        ("j", None, None),  # j is not nullable: JSON null is refused too
        (
            "j",
            {"x": [1, 2.5, True, None, "s", {"y": {}}]},
            {"x": [1, 2.5, True, None, "s", {"y": {}}]},
        ),
        ("j", "just a string", "just a string"),
        ("j", 3, 3),
        ("b", "0123456789abcdef" * 4, "0123456789abcdef" * 4),
        (
            "ts",
            dt.datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
            dt.datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
        ),
        ("ts", "2024-02-29T23:59:59.5Z", dt.datetime(2024, 2, 29, 23, 59, 59, 500000, tzinfo=UTC)),
        ("maybe", None, None),
        ("maybe", "x", "x"),
    ],
)
def test_check_accepts_good_values(column, value, canonical):
    c = getattr(make_everything(), column)
    if value is None and not c.nullable:
        with pytest.raises(MutationError, match=rf"^things\.{column} must not be null$"):
            c.check(value)
        return
    checked = c.check(value)
    assert checked == canonical
    assert type(checked) is type(canonical)


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("id", 1, "text"),
        ("id", b"x", "text"),
        ("n", "1", "an integer"),
        ("n", 1.0, "an integer"),
        ("n", True, "an integer"),
        ("n", 2**53 + 1, "an integer within ±2**53"),
        ("n", -(2**53) - 1, "an integer within ±2**53"),
        ("n", 10**30, "an integer within ±2**53"),
        ("r", "1.5", "a real number"),
        ("r", False, "a real number"),
        ("r", math.nan, "a finite real number"),
        ("r", math.inf, "a finite real number"),
        ("r", -math.inf, "a finite real number"),
        ("f", 1, "a boolean"),
        ("f", "true", "a boolean"),
        ("j", {"x": object()}, "a JSON-serializable value"),
        ("j", [math.inf], "a JSON-serializable value"),
        ("j", b"bytes", "a JSON-serializable value"),
        ("b", "ab" * 31, "a blob hash (64 lowercase hex characters)"),
        ("b", "ab" * 33, "a blob hash (64 lowercase hex characters)"),
        ("b", "AB" * 32, "a blob hash (64 lowercase hex characters)"),
        ("b", "gg" * 32, "a blob hash (64 lowercase hex characters)"),
        ("b", "ab" * 32 + "\n", "a blob hash (64 lowercase hex characters)"),
        ("b", 5, "a blob hash (64 lowercase hex characters)"),
        (
            "ts",
            dt.datetime(2024, 1, 1),
            "a timezone-aware datetime (naive datetimes are ambiguous)",
        ),
        (
            "ts",
            dt.date(2024, 1, 1),
            "a timezone-aware datetime or an ISO 8601 string ending in 'Z'",
        ),
        ("ts", 1700000000, "a timezone-aware datetime or an ISO 8601 string ending in 'Z'"),
        ("ts", "2024-01-01T00:00:00", "an ISO 8601 UTC timestamp ending in 'Z'"),
        ("ts", "2024-01-01T00:00:00+01:00", "an ISO 8601 UTC timestamp ending in 'Z'"),
        ("ts", "yesterdayZ", "an ISO 8601 UTC timestamp ending in 'Z'"),
        ("maybe", 5, "text"),
    ],
)
def test_check_errors_name_the_column_the_expectation_and_the_value(column, value, expected):
    c = getattr(make_everything(), column)
    message = f"things.{column}: expected {expected}, got {value!r}"
    with pytest.raises(MutationError, match=f"^{re.escape(message)}$"):
        c.check(value)


def test_check_shortens_long_values():
    c = make_everything().n
    with pytest.raises(MutationError) as info:
        c.check("9" * 1000)
    assert str(info.value).startswith("things.n: expected an integer, got '999")
    assert str(info.value).endswith("...")
    assert len(str(info.value)) < 150


def test_check_errors_are_plasma_errors():
    with pytest.raises(PlasmaError):
        make_everything().f.check("no")


def test_an_int_beyond_floats_range_is_not_a_real():
    with pytest.raises(MutationError, match=r"^things\.r: expected a finite real number, got 1000"):
        make_everything().r.check(10**400)


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1))),
        dt.datetime(9999, 12, 31, 23, tzinfo=dt.timezone(dt.timedelta(hours=-2))),
    ],
)
def test_timestamps_outside_the_utc_range_are_mutation_errors(value):
    with pytest.raises(
        MutationError, match=r"^things\.ts: expected a timestamp within years 1 to 9999 in UTC"
    ):
        make_everything().ts.check(value)


def test_check_converts_aware_timestamps_to_utc():
    tokyo = dt.timezone(dt.timedelta(hours=9))
    checked = make_everything().ts.check(dt.datetime(2024, 1, 1, 9, tzinfo=tokyo))
    assert checked == dt.datetime(2024, 1, 1, 0, tzinfo=UTC)
    assert checked.utcoffset() == dt.timedelta(0)


# -- wire forms and timestamps --------------------------------------------------------------


def test_wire_forms():
    t = make_everything()
    when = dt.datetime(2024, 3, 4, 5, 6, 7, 8, tzinfo=UTC)
    assert t.ts.to_wire(when) == "2024-03-04T05:06:07.000008Z"
    assert t.ts.from_wire("2024-03-04T05:06:07.000008Z") == when
    assert t.maybe.to_wire(None) is None
    assert t.j.to_wire({"a": 1}) == {"a": 1}
    row = {"id": "x", "ts": when, "f": True, "maybe": None}
    wire = t._row_to_wire(row)
    assert wire == {"id": "x", "ts": "2024-03-04T05:06:07.000008Z", "f": True, "maybe": None}
    assert t._row_from_wire(wire) == row


def test_from_wire_checks_and_names_the_column():
    t = make_everything()
    with pytest.raises(MutationError, match=r"^things\.n: expected an integer within ±2\*\*53"):
        t.n.from_wire(2**60)
    with pytest.raises(MutationError, match=r"table 'things' has no column 'zzz'"):
        t._row_from_wire({"zzz": 1})


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), "2024-01-02T03:04:05.000000Z"),
        (dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC), "2024-01-02T03:04:05.000006Z"),
        (
            dt.datetime(2024, 1, 2, 0, 30, tzinfo=dt.timezone(dt.timedelta(hours=1))),
            "2024-01-01T23:30:00.000000Z",
        ),
        (dt.datetime(1, 1, 1, tzinfo=UTC), "0001-01-01T00:00:00.000000Z"),
        (dt.datetime(999, 12, 31, tzinfo=UTC), "0999-12-31T00:00:00.000000Z"),
        (dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), "9999-12-31T23:59:59.999999Z"),
    ],
)
def test_timestamp_canonical_text(value, text):
    assert format_timestamp(value) == text
    assert parse_timestamp(text) == value
    assert parse_timestamp(text).utcoffset() == dt.timedelta(0)


def test_format_timestamp_rejects_naive_datetimes():
    with pytest.raises(TypeError, match="a timezone-aware datetime"):
        format_timestamp(dt.datetime(2024, 1, 1))


@pytest.mark.parametrize("text", ["2024-01-01T00:00:00", "2024-01-01T00:00:00+00:00", "Z", "x Z"])
def test_parse_timestamp_rejects_anything_but_utc_text(text):
    with pytest.raises(TypeError, match="an ISO 8601 UTC timestamp ending in 'Z'"):
        parse_timestamp(text)


offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))
aware = st.datetimes(
    min_value=dt.datetime(2, 1, 1), max_value=dt.datetime(9998, 12, 31), timezones=offsets
)


@settings(max_examples=200, deadline=None)
@given(aware, aware)
def test_timestamp_text_round_trips_and_sorts_like_time(a, b):
    ta, tb = format_timestamp(a), format_timestamp(b)
    assert len(ta) == len(tb) == 27
    assert ta.endswith("Z")
    assert parse_timestamp(ta) == a
    assert (ta < tb) == (a < b)
    assert (ta == tb) == (a == b)


# -- Schema -------------------------------------------------------------------------------


def test_schema_basics():
    todos = make_todos()
    users = table("users", id=col.integer(primary_key=True), name=col.text())
    schema = Schema([todos, users], version="2", compatible=["1", "0"])
    assert schema.version == "2"
    assert schema.compatible == ("1", "0")
    assert schema.tables == {"todos": todos, "users": users}
    assert list(schema) == [todos, users]
    assert schema.table("users") is users
    assert repr(schema) == "<Schema v2 (todos, users)>"


def test_schema_defaults():
    schema = Schema([make_todos()])
    assert schema.version == "1"
    assert schema.compatible == ()
    assert schema.accepts("1")
    assert not schema.accepts("0")


def test_schema_accepts_its_version_and_the_compatible_ones():
    schema = Schema([make_todos()], version="3", compatible=["2", "1"])
    assert schema.accepts("3")
    assert schema.accepts("2")
    assert schema.accepts("1")
    assert not schema.accepts("0")
    assert not schema.accepts("4")
    assert not schema.accepts("")


def test_schema_compatible_may_be_any_iterable():
    schema = Schema([make_todos()], compatible=(v for v in ["0"]))
    assert schema.compatible == ("0",)


def test_schema_rejects_duplicate_table_names():
    with pytest.raises(SchemaError, match="two tables are named 'todos'"):
        Schema([make_todos(), make_todos()])


def test_schema_unknown_table_lists_tables():
    schema = Schema([make_todos()])
    with pytest.raises(SchemaError, match="no table named 'users'; tables: todos"):
        schema.table("users")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"version": ""}, "Schema version must be a non-empty string, got ''"),
        ({"version": 1}, "Schema version must be a non-empty string, got 1"),
        ({"compatible": "0"}, "compatible must be a list of versions, got the string '0'"),
        ({"compatible": [0]}, "compatible versions must be strings, got 0"),
    ],
)
def test_schema_rejects_bad_versions(kwargs, message):
    with pytest.raises(SchemaError, match=re.escape(message)):
        Schema([make_todos()], **kwargs)


def test_schema_needs_tables_made_by_table():
    with pytest.raises(SchemaError, match="a Schema needs at least one table"):
        Schema([])
    with pytest.raises(SchemaError, match="Schema takes tables made by table"):
        Schema(["todos"])  # type: ignore[list-item]


@pytest.mark.parametrize("name", ["sqlite_master", "SQLITE_x"])
def test_schema_rejects_sqlite_internal_names(name):
    with pytest.raises(SchemaError, match=f"table name {name!r} is reserved"):
        Schema([table(name, id=col.id())])


def test_describe():
    when = dt.datetime(2024, 1, 1, tzinfo=UTC)
    todos = make_todos()
    events = table(
        "events",
        seq=col.integer(primary_key=True),
        at=col.timestamp(default=when),
        meta=col.json(default={"k": [1]}),
        note=col.text(nullable=True, default=None),
    )
    described = Schema([todos, events], version="2", compatible=["1"]).describe()
    assert described == {
        "version": "2",
        "compatible": ["1"],
        "tables": {
            "todos": {
                "primaryKey": "id",
                "columns": {
                    "id": {"type": "text", "nullable": False},
                    "title": {"type": "text", "nullable": False},
                    "done": {"type": "boolean", "nullable": False, "default": False},
                    "owner": {"type": "text", "nullable": True},
                    "photo": {"type": "blob", "nullable": True},
                },
            },
            "events": {
                "primaryKey": "seq",
                "columns": {
                    "seq": {"type": "integer", "nullable": False},
                    "at": {
                        "type": "timestamp",
                        "nullable": False,
                        "default": "2024-01-01T00:00:00.000000Z",
                    },
                    "meta": {"type": "json", "nullable": False, "default": {"k": [1]}},
                    "note": {"type": "text", "nullable": True, "default": None},
                },
            },
        },
    }


def test_describe_is_json():
    import json

    schema = Schema([make_todos()])
    assert json.loads(json.dumps(schema.describe())) == schema.describe()


# -- rows ---------------------------------------------------------------------------------


def test_check_row_full_and_partial():
    todos = make_todos()
    assert todos._check_row({"id": "1", "title": "t"}) == {"id": "1", "title": "t"}
    with pytest.raises(MutationError, match=r"^todos: missing value for id, title$"):
        todos._check_row({"done": True})
    assert todos._check_row({"done": True}, partial=True) == {"done": True}
    with pytest.raises(MutationError, match=r"table 'todos' has no column 'nope'; columns: id"):
        todos._check_row({"id": "1", "title": "t", "nope": 1})


def test_pk_from_text():
    todos = make_todos()
    numbered = table("numbered", n=col.integer(primary_key=True))
    assert todos._pk_from_text("12") == "12"
    assert numbered._pk_from_text("12") == 12
    assert numbered._pk_from_text("-3") == -3
    with pytest.raises(MutationError, match="numbered: key 'x' is not an integer"):
        numbered._pk_from_text("x")
