"""Statements: ``select(...)`` for reading, and the write statements mutators issue.

Statements are immutable values; every chained method returns a new one, so a
query can be kept, reused and extended. The dialects compile them to SQL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import QueryError
from .expr import (
    And,
    ColumnRef,
    Compare,
    Expr,
    InList,
    IsNull,
    Like,
    Literal,
    Not,
    Or,
    Ordering,
)
from .schema import Column, ColumnType, Table

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["Delete", "Insert", "Select", "Update", "select"]


def _check_count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise QueryError(f"{what} must be a non-negative integer, got {value!r}")
    return value


class Select:
    """A read of one table: columns, filter, order, limit and offset."""

    __slots__ = ("columns", "limit_", "offset_", "order", "table", "where_")

    def __init__(
        self,
        table: Table,
        columns: tuple[Column, ...],
        where: Expr | None = None,
        order: tuple[Ordering, ...] = (),
        limit: int | None = None,
        offset: int | None = None,
    ) -> None:
        self.table = table
        self.columns = columns
        self.where_ = where
        self.order = order
        self.limit_ = limit
        self.offset_ = offset

    def _replace(self, **changes: Any) -> Select:
        fields = {
            "table": self.table,
            "columns": self.columns,
            "where": self.where_,
            "order": self.order,
            "limit": self.limit_,
            "offset": self.offset_,
        }
        fields.update(changes)
        return Select(**fields)  # type: ignore[arg-type]

    def where(self, condition: Expr, /) -> Select:
        """Filter rows; several calls are combined with AND."""
        check_condition(condition, "todos.done == False")
        check_tables(condition, self.table)
        combined = condition if self.where_ is None else self.where_ & condition
        return self._replace(where=combined)

    def order_by(self, *terms: Expr | Ordering) -> Select:
        """Order by columns (ascending) or ``column.desc()``; NULLs sort first ascending."""
        orders: list[Ordering] = list(self.order)
        for term in terms:
            if isinstance(term, Ordering):
                ordering = term
            elif isinstance(term, Expr):
                ordering = Ordering(term, descending=False)
            else:
                raise QueryError(
                    f"order_by() takes columns or column.desc(), got {term!r}"
                )
            if not isinstance(ordering.expr, ColumnRef):
                raise QueryError(f"order_by() takes columns, got {ordering.expr!r}")
            check_tables(ordering.expr, self.table)
            orders.append(ordering)
        return self._replace(order=tuple(orders))

    def limit(self, n: int, /) -> Select:
        return self._replace(limit=_check_count(n, "limit"))

    def offset(self, n: int, /) -> Select:
        return self._replace(offset=_check_count(n, "offset"))

    @property
    def tables(self) -> frozenset[str]:
        """The tables this query reads (for live queries)."""
        return frozenset({self.table._name})

    def __repr__(self) -> str:
        cols = ", ".join(c.name for c in self.columns)
        parts = [f"select({self.table._name}: {cols})"]
        if self.where_ is not None:
            parts.append(f".where({self.where_!r})")
        if self.order:
            parts.append(f".order_by({', '.join(map(repr, self.order))})")
        if self.limit_ is not None:
            parts.append(f".limit({self.limit_})")
        if self.offset_ is not None:
            parts.append(f".offset({self.offset_})")
        return "".join(parts)


def check_condition(condition: object, example: str) -> Expr:
    """A where() argument must be a condition; a bare column only if it is boolean
    (SQLite would coerce any value to truth, Postgres would refuse)."""
    if not isinstance(condition, Expr) or isinstance(condition, Literal | Ordering):
        raise QueryError(f"where() takes a condition such as {example}, got {condition!r}")
    if isinstance(condition, Column) and condition.type is not ColumnType.BOOLEAN:
        raise QueryError(
            f"where({condition.qualname}) needs a comparison: the column is "
            f"{condition.type.value}, not boolean"
        )
    return condition


def check_tables(expr: object, table: Table) -> None:
    """Every column in ``expr`` must belong to ``table`` (joins are not supported)."""
    stack = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, ColumnRef):
            if node._table is not table:
                raise QueryError(
                    f"{node.qualname} is not a column of {table._name!r}: "
                    "a query reads one table"
                )
        elif isinstance(node, Compare):
            stack.append(node.left)
            stack.append(node.right)
        elif isinstance(node, And | Or):
            stack.extend(node.items)
        elif isinstance(node, Not):
            stack.append(node.item)
        elif isinstance(node, InList):
            stack.append(node.expr)
            stack.extend(node.values)
        elif isinstance(node, Like | IsNull):
            stack.append(node.expr)


def select(*what: Table | Column) -> Select:
    """``select(todos)`` for every column, or ``select(todos.id, todos.title)``."""
    if not what:
        raise QueryError("select() needs a table or columns")
    if len(what) == 1 and isinstance(what[0], Table):
        t = what[0]
        return Select(t, tuple(t))
    columns: list[Column] = []
    for item in what:
        if isinstance(item, Table):
            raise QueryError(
                f"select() takes one table or several columns, not a mix (got {item!r})"
            )
        if not isinstance(item, Column):
            raise QueryError(f"select() takes a table or its columns, got {item!r}")
        columns.append(item)
    t = columns[0].table
    for c in columns:
        if c.table is not t:
            raise QueryError(
                f"select() reads one table: {c.qualname} is not in {t._name!r}"
            )
    return Select(t, tuple(columns))


class Insert:
    """``INSERT`` of one row; ``upsert`` updates the given columns on a key conflict."""

    __slots__ = ("row", "table", "upsert")

    def __init__(self, table: Table, row: Mapping[str, object], *, upsert: bool) -> None:
        self.table = table
        self.row = dict(row)
        self.upsert = upsert


class Update:
    __slots__ = ("table", "values", "where")

    def __init__(self, table: Table, values: Mapping[str, object], where: Expr | None) -> None:
        # The where clause's tables are checked when the statement's shape is first
        # compiled (check_tables): here it would cost every mutation a tree walk.
        self.table = table
        self.values = dict(values)
        self.where = where


class Delete:
    __slots__ = ("table", "where")

    def __init__(self, table: Table, where: Expr | None) -> None:
        self.table = table
        self.where = where


def column_names(columns: Sequence[Column]) -> list[str]:
    return [c.name for c in columns]
