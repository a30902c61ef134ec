"""Small pieces: :name parameters, the sql line's grammar, cell values."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from plasma_nb import QueryError
from plasma_nb.notebook.commands import CommandError, parse_sql
from plasma_nb.notebook.parameters import bind, find
from plasma_nb.notebook.values import cell, sort_key, static_table, text_table


@pytest.mark.parametrize(
    ("sql", "names"),
    [
        ("SELECT * FROM t WHERE a = :a AND b IN (:b, :a)", ["a", "b"]),
        ("SELECT ':a', \":b\", `:c` FROM t", []),
        ("SELECT x::INTEGER, xs[1:2], xs[lo:hi] FROM t", []),
        ("SELECT 1 -- :commented\n, :real /* :also */", ["real"]),
        ("SELECT 'it''s :not' || :yes", ["yes"]),
        ("SELECT :_under, (:paren)", ["_under", "paren"]),
    ],
)
def test_finding_parameters(sql: str, names: list[str]) -> None:
    assert find(sql) == names


def test_binding_parameters() -> None:
    when = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    sql, params = bind("SELECT :a, :when, ':a'", {"a": 1, "when": when, "other": 2})
    assert sql == "SELECT :a, :when, ':a'"
    assert params == {"a": 1, "when": "2024-01-02T03:04:05.000000Z"}
    sql, params = bind("SELECT :a, x::INT", {"a": 1}, style="dollar")
    assert sql == "SELECT $a, x::INT"
    with pytest.raises(QueryError, match=r"the parameter :b needs a variable named 'b'"):
        bind("SELECT :b", {})


@pytest.mark.parametrize(
    ("line", "cell_text", "expected"),
    [
        ("", "SELECT 1", {"sql": "SELECT 1"}),
        ("--live --engine duckdb -o out", "SELECT 1",
         {"live": True, "engine": "duckdb", "out": "out", "sql": "SELECT 1"}),
        ("--engine=duckdb --name=n", "SELECT 1", {"engine": "duckdb", "name": "n"}),
        ("df <<", "SELECT 1", {"capture": "df", "show": False, "sql": "SELECT 1"}),
        ("df= <<", "SELECT 1", {"capture": "df", "show": True}),
        ("--live df << SELECT 2", None, {"live": True, "capture": "df", "sql": "SELECT 2"}),
        ("SELECT 1 << 2", None, {"capture": None, "sql": "SELECT 1 << 2"}),
        ("SELECT 1 -- a comment", None, {"sql": "SELECT 1 -- a comment"}),
        ("SELECT -1", None, {"sql": "SELECT -1"}),
    ],
)
def test_the_sql_line(line: str, cell_text: str | None, expected: dict[str, object]) -> None:
    args = parse_sql(line, cell_text)
    for key, value in expected.items():
        assert getattr(args, key) == value, key


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("--engine", "%plasma sql: --engine needs a value"),
        ("-x SELECT 1", "%plasma sql: unrecognized option -x"),
        ("--engine oracle", "%plasma sql: --engine must be sqlite or duckdb, not 'oracle'"),
    ],
)
def test_sql_line_errors(line: str, message: str) -> None:
    with pytest.raises(CommandError) as caught:
        parse_sql(line, None)
    assert str(caught.value) == message


def test_cells_and_sorting() -> None:
    assert cell(math.inf) == "inf"
    assert cell("x" * 3000).endswith("…")
    assert cell((1, "a")) == '[1, "a"]'
    assert sorted([3, None, "b", 1.5, "a"], key=sort_key) == [None, 1.5, 3, "a", "b"]


def test_tables_as_text_and_html() -> None:
    assert text_table(["a", "bb"], [(1, None), ("long", 2)]) == (
        "a     bb\n----  ----\n1     NULL\nlong  2")
    html = static_table(["a"], [["<b>"]], 3)
    assert "&lt;b&gt;" in html and "3 rows, showing the first 1" in html
