"""SQL dialects: compile statements of the DSL to SQL text and parameters.

Compiled SQL is cached per statement *shape* (the tree with its literal values
taken out), so a mutator that runs a thousand times builds its SQL text once.
One dialect per engine; they differ in placeholders, booleans, NULL ordering,
collation and case-sensitive matching, and give the same answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .errors import QueryError
from .expr import (
    And,
    ColumnRef,
    Compare,
    ContextRef,
    Expr,
    InList,
    IsNull,
    Like,
    Literal,
    Not,
    Or,
)
from .query import Delete, Insert, Select, Update, check_tables
from .schema import MISSING, Column, ColumnType, Table, format_timestamp, parse_timestamp

__all__ = [
    "Compiled",
    "Dialect",
    "PostgresDialect",
    "SQLiteDialect",
    "integrity_message",
    "like_tokens",
]

Params = list[object]
RowDecoder = Callable[[Sequence[Any]], dict[str, Any]]
_CACHE_SIZE = 1024


class Compiled:
    """SQL text and parameters, plus how to turn result tuples into row dicts."""

    __slots__ = ("columns", "decode", "params", "sql")

    def __init__(
        self, sql: str, params: Params, columns: tuple[Column, ...] = (),
        decode: RowDecoder | None = None,
    ) -> None:
        self.sql = sql
        self.params = params
        self.columns = columns
        self.decode = decode

    def __repr__(self) -> str:
        return f"Compiled({self.sql!r}, {self.params!r})"


def like_tokens(pattern: str) -> list[tuple[str, str]]:
    """Parse a LIKE pattern: ``%`` any run, ``_`` any one character, ``\\`` escapes
    the next character (a trailing backslash is itself). Tokens are
    ``("lit", char)``, ``("any", "")`` and ``("one", "")``."""
    tokens: list[tuple[str, str]] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            tokens.append(("lit", pattern[i + 1]))
            i += 2
            continue
        if ch == "%":
            tokens.append(("any", ""))
        elif ch == "_":
            tokens.append(("one", ""))
        else:
            tokens.append(("lit", ch))
        i += 1
    return tokens


def quote(name: str) -> str:
    # Names are validated identifiers; quoting keeps reserved words (select, order) usable.
    return f'"{name}"'


class Dialect:
    """The engine-independent compiler; subclasses fill in the differences."""

    name = "abstract"
    false_sql = "FALSE"
    true_sql = "TRUE"

    def __init__(self) -> None:
        self._cache: dict[tuple[object, ...], str] = {}
        self._decoders: dict[tuple[Column, ...], RowDecoder] = {}
        self._to_db: dict[Table, dict[str, Callable[[Any], Any] | None]] = {}

    # -- engine differences ------------------------------------------------------

    def placeholder(self, index: int) -> str:
        raise NotImplementedError

    def sql_type(self, column: Column) -> str:
        raise NotImplementedError

    def glob_match(self, expr_sql: str, param_sql: str) -> str:
        """A case-sensitive match of a pattern produced by ``like_pattern``."""
        raise NotImplementedError

    def like_pattern(self, pattern: str, *, case_sensitive: bool) -> str:
        raise NotImplementedError

    def ilike_match(self, expr_sql: str, param_sql: str) -> str:
        raise NotImplementedError

    def order_term(self, column_sql: str, *, descending: bool) -> str:
        raise NotImplementedError

    def limit_clause(self, limit: int | None, offset: int | None, params: Params) -> str:
        raise NotImplementedError

    def to_db(self, type: ColumnType, value: object) -> object:
        raise NotImplementedError

    def from_db_converter(self, type: ColumnType) -> Callable[[Any], Any] | None:
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------

    def to_db_converter(self, type: ColumnType) -> Callable[[Any], Any] | None:
        """The function ``to_db`` applies for ``type`` (None: values pass unchanged)."""
        raise NotImplementedError

    def _converters(self, table: Table) -> dict[str, Callable[[Any], Any] | None]:
        found = self._to_db.get(table)
        if found is None:
            found = {c.name: self.to_db_converter(c.type) for c in table}
            self._to_db[table] = found
        return found

    def row_decoder(self, columns: tuple[Column, ...]) -> RowDecoder:
        decoder = self._decoders.get(columns)
        if decoder is None:
            decoder = self._make_decoder(columns)
            self._decoders[columns] = decoder
        return decoder

    def _make_decoder(self, columns: tuple[Column, ...]) -> RowDecoder:
        names = [c.name for c in columns]
        converters = [(i, self.from_db_converter(c.type)) for i, c in enumerate(columns)]
        converters = [(i, f) for i, f in converters if f is not None]
        if not converters:
            return lambda values: dict(zip(names, values, strict=True))

        def decode(values: Sequence[Any]) -> dict[str, Any]:
            row = dict(zip(names, values, strict=True))
            for i, convert in converters:
                value = values[i]
                if value is not None:
                    row[names[i]] = convert(value)  # type: ignore[misc]
            return row

        return decode

    def _cached(self, key: tuple[object, ...], build: Callable[[], str]) -> str:
        sql = self._cache.get(key)
        if sql is None:
            sql = build()
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = sql
        return sql

    def compile(
        self, stmt: Select | Insert | Update | Delete, ctx: Mapping[str, object] | None = None
    ) -> Compiled:
        if isinstance(stmt, Select):
            return self.compile_select(stmt, ctx)
        if isinstance(stmt, Insert):
            return self.compile_insert(stmt)
        if isinstance(stmt, Update):
            return self.compile_update(stmt, ctx)
        if isinstance(stmt, Delete):
            return self.compile_delete(stmt, ctx)
        raise QueryError(f"cannot compile {stmt!r}")

    def compile_select(self, stmt: Select, ctx: Mapping[str, object] | None = None) -> Compiled:
        params: Params = []
        where_key = self._shape(stmt.where_, params, ctx) if stmt.where_ is not None else None
        order_key = tuple((o.expr, o.descending) for o in stmt.order)
        key = ("select", stmt.table, stmt.columns, where_key, order_key,
               stmt.limit_ is not None, stmt.offset_ is not None)
        tail: Params = []

        def build() -> str:
            counter = [len(params)]
            cols = ", ".join(quote(c.name) for c in stmt.columns)
            sql = f"SELECT {cols} FROM {quote(stmt.table._name)}"
            if stmt.where_ is not None:
                sql += " WHERE " + self._render(stmt.where_, [0])
            if stmt.order:
                terms = [
                    self.order_term(quote(o.expr.name), descending=o.descending)  # type: ignore[attr-defined]
                    for o in stmt.order
                ]
                sql += " ORDER BY " + ", ".join(terms)
            sql += self.limit_clause(stmt.limit_, stmt.offset_, [None] * counter[0])
            return sql

        sql = self._cached(key, build)
        if stmt.limit_ is not None:
            tail.append(stmt.limit_)
        if stmt.offset_ is not None:
            tail.append(stmt.offset_)
        return Compiled(sql, params + tail, stmt.columns, self.row_decoder(stmt.columns))

    def compile_condition(self, condition: Expr, *, first: int = 0) -> Compiled:
        """A condition over bare column names (a read rule, bound to its caller) as SQL
        text and parameters; placeholders are numbered from ``first`` (Postgres:
        ``$first+1``), so the text can sit inside a larger statement."""
        params: Params = []
        self._shape(condition, params, None)
        return Compiled(self._render(condition, [first]), params)

    def compile_insert(self, stmt: Insert) -> Compiled:
        table = stmt.table
        names = tuple(stmt.row)
        convert = self._converters(table)
        params: Params = [
            v if (f := convert[n]) is None or v is None else f(v) for n, v in stmt.row.items()
        ]

        def build() -> str:
            cols = ", ".join(quote(n) for n in names)
            marks = ", ".join(self.placeholder(i) for i in range(len(names)))
            sql = f"INSERT INTO {quote(table._name)} ({cols}) VALUES ({marks})"
            if stmt.upsert:
                pk = table._pk.name
                updates = [n for n in names if n != pk]
                if updates:
                    sets = ", ".join(f"{quote(n)} = excluded.{quote(n)}" for n in updates)
                    sql += f" ON CONFLICT ({quote(pk)}) DO UPDATE SET {sets}"
                else:
                    sql += f" ON CONFLICT ({quote(pk)}) DO NOTHING"
            return sql

        sql = self._cached(("insert", table, names, stmt.upsert), build)
        return Compiled(sql, params)

    def compile_update(self, stmt: Update, ctx: Mapping[str, object] | None = None) -> Compiled:
        table = stmt.table
        names = tuple(stmt.values)
        convert = self._converters(table)
        params: Params = [
            v if (f := convert[n]) is None or v is None else f(v) for n, v in stmt.values.items()
        ]
        where_key = self._shape(stmt.where, params, ctx) if stmt.where is not None else None

        def build() -> str:
            sets = ", ".join(
                f"{quote(n)} = {self.placeholder(i)}" for i, n in enumerate(names)
            )
            sql = f"UPDATE {quote(table._name)} SET {sets}"
            if stmt.where is not None:
                # Columns compile by bare name: another table's column would silently
                # match this table's column of the same name.
                check_tables(stmt.where, table)
                sql += " WHERE " + self._render(stmt.where, [len(names)])
            return sql

        sql = self._cached(("update", table, names, where_key), build)
        return Compiled(sql, params)

    def compile_delete(self, stmt: Delete, ctx: Mapping[str, object] | None = None) -> Compiled:
        params: Params = []
        where_key = self._shape(stmt.where, params, ctx) if stmt.where is not None else None

        def build() -> str:
            sql = f"DELETE FROM {quote(stmt.table._name)}"
            if stmt.where is not None:
                check_tables(stmt.where, stmt.table)
                sql += " WHERE " + self._render(stmt.where, [0])
            return sql

        sql = self._cached(("delete", stmt.table, where_key), build)
        return Compiled(sql, params)

    def create_table_sql(self, table: Table) -> str:
        defs = []
        for c in table:
            parts = [quote(c.name), self.sql_type(c)]
            if not c.nullable:
                parts.append("NOT NULL")
            if c.primary_key:
                parts.append("PRIMARY KEY")
            if c.default is not MISSING and c.default is not None:
                parts.append("DEFAULT " + self.literal_sql(c.type, c.default))
            defs.append(" ".join(parts))
        return f"CREATE TABLE IF NOT EXISTS {quote(table._name)} ({', '.join(defs)})"

    def literal_sql(self, type: ColumnType, value: object) -> str:
        db = self.to_db(type, value)
        if isinstance(db, bool):
            return self.true_sql if db else self.false_sql
        if isinstance(db, int | float):
            return repr(db)
        if isinstance(db, str):
            return "'" + db.replace("'", "''") + "'"
        raise QueryError(f"cannot write {value!r} as an SQL literal")

    # -- expressions -------------------------------------------------------------

    def _literal_param(self, value: object, hint: Column | None) -> object:
        if value is None or hint is None:
            if isinstance(value, bool | int | float | str) or value is None:
                return self.to_db(ColumnType.BOOLEAN, value) if isinstance(value, bool) else value
            raise QueryError(f"cannot compare with {value!r} here")
        try:
            checked = hint.check(value)
        except Exception:  # MutationError from the column check, reworded for queries
            raise QueryError(
                f"cannot compare {hint.qualname} ({hint.type.value}) with {value!r}"
            ) from None
        convert = self._converters(hint.table)[hint.name]
        return checked if convert is None else convert(checked)

    def _shape(
        self, node: Expr, params: Params, ctx: Mapping[str, object] | None,
        hint: Column | None = None,
    ) -> object:
        """The cache key of ``node``; appends its parameters in render order."""
        if isinstance(node, ColumnRef):
            return node
        if isinstance(node, Literal):
            params.append(self._literal_param(node.value, hint))
            return "?"
        if isinstance(node, ContextRef):
            if ctx is None or node.key not in ctx:
                raise QueryError(f"ctx.{node.key} is not available here")
            params.append(self._literal_param(ctx[node.key], hint))
            return ("ctx", node.key)
        if isinstance(node, Compare):
            left_node, right_node = node.left, node.right
            if type(right_node) is Literal and isinstance(left_node, Column):
                # The usual shape (column op value), without the general recursion.
                params.append(self._literal_param(right_node.value, left_node))
                return ("cmp", node.op, left_node, "?")
            left_hint = node.right if isinstance(node.right, Column) else None
            right_hint = node.left if isinstance(node.left, Column) else None
            left = self._shape(node.left, params, ctx, left_hint)
            right = self._shape(node.right, params, ctx, right_hint)
            return ("cmp", node.op, left, right)
        if isinstance(node, And | Or):
            kind = "and" if isinstance(node, And) else "or"
            return (kind, *(self._shape(i, params, ctx) for i in node.items))
        if isinstance(node, Not):
            return ("not", self._shape(node.item, params, ctx))
        if isinstance(node, IsNull):
            return ("null", node.negated, self._shape(node.expr, params, ctx))
        if isinstance(node, InList):
            col = node.expr if isinstance(node.expr, Column) else None
            inner = self._shape(node.expr, params, ctx)
            values = tuple(self._shape(v, params, ctx, col) for v in node.values)
            return ("in", inner, values)
        if isinstance(node, Like):
            self._check_text_like(node)
            inner = self._shape(node.expr, params, ctx)
            params.append(self.like_pattern(node.pattern, case_sensitive=node.case_sensitive))
            return ("like", node.case_sensitive, inner)
        raise QueryError(f"cannot compile {node!r}")

    def _check_text_like(self, node: Like) -> None:
        if isinstance(node.expr, Column) and node.expr.type is not ColumnType.TEXT:
            method = "like" if node.case_sensitive else "ilike"
            raise QueryError(
                f"{method}() matches text, but {node.expr.qualname} is {node.expr.type.value}"
            )

    def _render(self, node: Expr, counter: list[int]) -> str:
        """SQL text of ``node``; ``counter`` numbers the placeholders in shape order."""
        if isinstance(node, ColumnRef):
            return quote(node.name)
        if isinstance(node, Literal | ContextRef):
            counter[0] += 1
            return self.placeholder(counter[0] - 1)
        if isinstance(node, Compare):
            left = self._render(node.left, counter)
            right = self._render(node.right, counter)
            return f"({left} {node.op} {right})"
        if isinstance(node, And | Or):
            joiner = " AND " if isinstance(node, And) else " OR "
            return "(" + joiner.join(self._render(i, counter) for i in node.items) + ")"
        if isinstance(node, Not):
            return f"(NOT {self._render(node.item, counter)})"
        if isinstance(node, IsNull):
            inner = self._render(node.expr, counter)
            return f"({inner} IS {'NOT ' if node.negated else ''}NULL)"
        if isinstance(node, InList):
            inner = self._render(node.expr, counter)
            if not node.values:
                # x IN () is false, even when x is NULL; keep x's placeholders numbered.
                return f"({self.false_sql} AND ({inner} IS NULL OR {self.true_sql}))"
            values = ", ".join(self._render(v, counter) for v in node.values)
            return f"({inner} IN ({values}))"
        if isinstance(node, Like):
            inner = self._render(node.expr, counter)
            counter[0] += 1
            mark = self.placeholder(counter[0] - 1)
            if node.case_sensitive:
                return self.glob_match(inner, mark)
            return self.ilike_match(inner, mark)
        raise QueryError(f"cannot compile {node!r}")


def _json_dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def integrity_message(stmt: Insert | Update | Delete, error: Exception) -> str:
    """A mutator's rejection for SQLite's ``IntegrityError`` ``error`` on ``stmt``: the
    client and the server word it alike, so a rejection reads the same on both."""
    table = stmt.table
    if isinstance(stmt, Insert) and "UNIQUE" in str(error):
        key = stmt.row.get(table._pk.name)
        return f"{table._name}: a row with key {key!r} already exists"
    return f"{table._name}: {error}"


class SQLiteDialect(Dialect):
    """SQLite 3.35 or newer (RETURNING); Pyodide's 3.39 included."""

    name = "sqlite"
    false_sql = "0"
    true_sql = "1"

    _TYPES = {
        ColumnType.TEXT: "TEXT",
        ColumnType.INTEGER: "INTEGER",
        ColumnType.REAL: "REAL",
        ColumnType.BOOLEAN: "INTEGER",
        ColumnType.JSON: "TEXT",
        ColumnType.BLOB: "TEXT",
        ColumnType.TIMESTAMP: "TEXT",
    }

    def placeholder(self, index: int) -> str:
        return "?"

    def sql_type(self, column: Column) -> str:
        return self._TYPES[column.type]

    def like_pattern(self, pattern: str, *, case_sensitive: bool) -> str:
        out = []
        for kind, ch in like_tokens(pattern):
            if case_sensitive:  # GLOB syntax: SQLite's LIKE ignores ASCII case
                if kind == "any":
                    out.append("*")
                elif kind == "one":
                    out.append("?")
                elif ch in "*?[":
                    out.append(f"[{ch}]")
                else:
                    out.append(ch)
            else:
                if kind == "any":
                    out.append("%")
                elif kind == "one":
                    out.append("_")
                elif ch in "%_\\":
                    out.append("\\" + ch)
                else:
                    out.append(ch)
        return "".join(out)

    def glob_match(self, expr_sql: str, param_sql: str) -> str:
        return f"({expr_sql} GLOB {param_sql})"

    def ilike_match(self, expr_sql: str, param_sql: str) -> str:
        return f"({expr_sql} LIKE {param_sql} ESCAPE '\\')"

    def order_term(self, column_sql: str, *, descending: bool) -> str:
        # SQLite already sorts NULLs first ascending and last descending.
        return f"{column_sql} DESC" if descending else column_sql

    def limit_clause(self, limit: int | None, offset: int | None, params: Params) -> str:
        if limit is None and offset is None:
            return ""
        if limit is None:
            return " LIMIT -1 OFFSET ?"
        return " LIMIT ?" + (" OFFSET ?" if offset is not None else "")

    def to_db(self, type: ColumnType, value: object) -> object:
        if value is None:
            return None
        if type is ColumnType.BOOLEAN:
            return 1 if value else 0
        if type is ColumnType.JSON:
            return _json_dumps(value)
        if type is ColumnType.TIMESTAMP:
            return format_timestamp(value)  # type: ignore[arg-type]
        return value

    def to_db_converter(self, type: ColumnType) -> Callable[[Any], Any] | None:
        if type is ColumnType.BOOLEAN:
            return int
        if type is ColumnType.JSON:
            return _json_dumps
        if type is ColumnType.TIMESTAMP:
            return format_timestamp
        return None

    def from_db_converter(self, type: ColumnType) -> Callable[[Any], Any] | None:
        if type is ColumnType.BOOLEAN:
            return bool
        if type is ColumnType.JSON:
            return json.loads
        if type is ColumnType.TIMESTAMP:
            return parse_timestamp
        return None


class PostgresDialect(Dialect):
    """PostgreSQL: text columns are declared ``COLLATE "C"`` so text compares by
    code point, and NULL placement is spelled out to match SQLite."""

    name = "postgres"

    _TYPES = {
        ColumnType.TEXT: 'TEXT COLLATE "C"',
        ColumnType.INTEGER: "BIGINT",
        ColumnType.REAL: "DOUBLE PRECISION",
        ColumnType.BOOLEAN: "BOOLEAN",
        ColumnType.JSON: "JSONB",
        ColumnType.BLOB: 'TEXT COLLATE "C"',
        ColumnType.TIMESTAMP: 'TEXT COLLATE "C"',
    }

    def placeholder(self, index: int) -> str:
        return f"${index + 1}"

    def sql_type(self, column: Column) -> str:
        return self._TYPES[column.type]

    def like_pattern(self, pattern: str, *, case_sensitive: bool) -> str:
        out = []
        for kind, ch in like_tokens(pattern):
            if kind == "any":
                out.append("%")
            elif kind == "one":
                out.append("_")
            elif ch in "%_\\":
                out.append("\\" + ch)
            elif not case_sensitive and ch.isascii() and ch.isalpha():
                out.append(ch.lower())
            else:
                out.append(ch)
        return "".join(out)

    def glob_match(self, expr_sql: str, param_sql: str) -> str:
        return f"({expr_sql} LIKE {param_sql})"

    def ilike_match(self, expr_sql: str, param_sql: str) -> str:
        # Fold ASCII letters only, as SQLite does, whatever the server's locale.
        return (
            f"(translate({expr_sql}, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', "
            f"'abcdefghijklmnopqrstuvwxyz') LIKE {param_sql})"
        )

    def order_term(self, column_sql: str, *, descending: bool) -> str:
        return f"{column_sql} DESC NULLS LAST" if descending else f"{column_sql} ASC NULLS FIRST"

    def limit_clause(self, limit: int | None, offset: int | None, params: Params) -> str:
        n = len(params)
        sql = ""
        if limit is not None:
            sql += f" LIMIT {self.placeholder(n)}"
            n += 1
        if offset is not None:
            sql += f" OFFSET {self.placeholder(n)}"
        return sql

    def to_db(self, type: ColumnType, value: object) -> object:
        if value is None:
            return None
        if type is ColumnType.JSON:
            return _json_dumps(value)
        if type is ColumnType.TIMESTAMP:
            return format_timestamp(value)  # type: ignore[arg-type]
        return value

    def to_db_converter(self, type: ColumnType) -> Callable[[Any], Any] | None:
        if type is ColumnType.JSON:
            return _json_dumps
        if type is ColumnType.TIMESTAMP:
            return format_timestamp
        return None

    def from_db_converter(self, type: ColumnType) -> Callable[[Any], Any] | None:
        if type is ColumnType.JSON:
            return json.loads
        if type is ColumnType.TIMESTAMP:
            return parse_timestamp
        return None
