"""Expressions of the query DSL: column references, comparisons and logic.

Semantics are SQL's, the same on every engine: three-valued logic, ``== None``
means IS NULL, ``in_([])`` is false, ``like`` is case-sensitive and ``ilike`` folds
ASCII letters only. Expressions are immutable trees; the dialects compile them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from typing import Literal as TLiteral

from .errors import QueryError

if TYPE_CHECKING:
    from .schema import Table

__all__ = [
    "And",
    "ColumnRef",
    "Compare",
    "ContextRef",
    "Expr",
    "InList",
    "IsNull",
    "Like",
    "Literal",
    "Not",
    "Or",
    "Ordering",
    "and_",
    "eq",
    "ge",
    "gt",
    "le",
    "lt",
    "ne",
    "not_",
    "or_",
]

CompareOp = TLiteral["=", "!=", "<", "<=", ">", ">="]


def _wrap(value: object) -> Expr:
    return value if isinstance(value, Expr) else Literal(value)


class Expr:
    """Base of every expression node. Python's ``and``/``or``/``not`` do not work on
    expressions (they would be evaluated eagerly): use ``&``, ``|`` and ``~``."""

    __slots__ = ()

    def __eq__(self, other: object) -> Expr:  # type: ignore[override]
        if other is None:
            return IsNull(self, negated=False)
        return Compare("=", self, _wrap(other))

    def __ne__(self, other: object) -> Expr:  # type: ignore[override]
        if other is None:
            return IsNull(self, negated=True)
        return Compare("!=", self, _wrap(other))

    def __lt__(self, other: object) -> Expr:
        return Compare("<", self, _wrap(other))

    def __le__(self, other: object) -> Expr:
        return Compare("<=", self, _wrap(other))

    def __gt__(self, other: object) -> Expr:
        return Compare(">", self, _wrap(other))

    def __ge__(self, other: object) -> Expr:
        return Compare(">=", self, _wrap(other))

    def __and__(self, other: object) -> Expr:
        return And((self, _as_condition(other, "&")))

    def __rand__(self, other: object) -> Expr:
        return And((_as_condition(other, "&"), self))

    def __or__(self, other: object) -> Expr:
        return Or((self, _as_condition(other, "|")))

    def __ror__(self, other: object) -> Expr:
        return Or((_as_condition(other, "|"), self))

    def __invert__(self) -> Expr:
        return Not(self)

    def __bool__(self) -> bool:
        raise QueryError(
            f"{self!r} has no truth value: combine conditions with & | ~ "
            "(not and/or/not), and compare inside where()"
        )

    __hash__ = object.__hash__

    def in_(self, values: Iterable[object]) -> Expr:
        if isinstance(values, str | bytes) or isinstance(values, Expr):
            raise QueryError(f"in_() takes a list of values, got {values!r}")
        return InList(self, tuple(_wrap(v) for v in values))

    def like(self, pattern: str) -> Expr:
        """Case-sensitive match: ``%`` any run, ``_`` one character, ``\\`` escapes."""
        return Like(self, _pattern(pattern), case_sensitive=True)

    def ilike(self, pattern: str) -> Expr:
        """Like ``like`` but ASCII letters match regardless of case."""
        return Like(self, _pattern(pattern), case_sensitive=False)

    def is_null(self) -> Expr:
        return IsNull(self, negated=False)

    def is_not_null(self) -> Expr:
        return IsNull(self, negated=True)

    def asc(self) -> Ordering:
        return Ordering(self, descending=False)

    def desc(self) -> Ordering:
        return Ordering(self, descending=True)


def _pattern(pattern: object) -> str:
    if not isinstance(pattern, str):
        raise QueryError(f"a like pattern must be a string, got {pattern!r}")
    return pattern


def _as_condition(value: object, op: str) -> Expr:
    if not isinstance(value, Expr):
        raise QueryError(f"{op} combines conditions, got {value!r}")
    return value


class ColumnRef(Expr):
    """A column of a table (``schema.Column`` subclasses it with the declaration)."""

    __slots__ = ("_table", "name")

    def __init__(self) -> None:
        self._table: Table | None = None
        self.name = ""

    def _bind(self, table: Table, name: str) -> None:
        self._table = table
        self.name = name

    @property
    def table(self) -> Table:
        if self._table is None:
            raise QueryError("this column is not part of a table yet")
        return self._table

    @property
    def qualname(self) -> str:
        return f"{self.table._name}.{self.name}"


class Literal(Expr):
    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Literal({self.value!r})"


class ContextRef(Expr):
    """A value from the caller's context, e.g. ``ctx.user`` in a read rule."""

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key

    def __repr__(self) -> str:
        return f"ctx.{self.key}"


class Compare(Expr):
    __slots__ = ("left", "op", "right")

    def __init__(self, op: CompareOp, left: Expr, right: Expr) -> None:
        self.op = op
        self.left = left
        self.right = right

    def __repr__(self) -> str:
        return f"({self.left!r} {self.op} {self.right!r})"


class And(Expr):
    __slots__ = ("items",)
    items: tuple[Expr, ...]

    def __init__(self, items: tuple[Expr, ...]) -> None:
        # Flatten so that a & b & c is one node (and one SQL shape).
        flat: list[Expr] = []
        for item in items:
            flat.extend(item.items if isinstance(item, And) else (item,))
        self.items = tuple(flat)

    def __repr__(self) -> str:
        return "(" + " & ".join(map(repr, self.items)) + ")"


class Or(Expr):
    __slots__ = ("items",)
    items: tuple[Expr, ...]

    def __init__(self, items: tuple[Expr, ...]) -> None:
        flat: list[Expr] = []
        for item in items:
            flat.extend(item.items if isinstance(item, Or) else (item,))
        self.items = tuple(flat)

    def __repr__(self) -> str:
        return "(" + " | ".join(map(repr, self.items)) + ")"


class Not(Expr):
    __slots__ = ("item",)

    def __init__(self, item: Expr) -> None:
        self.item = item

    def __repr__(self) -> str:
        return f"~{self.item!r}"


class InList(Expr):
    __slots__ = ("expr", "values")

    def __init__(self, expr: Expr, values: tuple[Expr, ...]) -> None:
        self.expr = expr
        self.values = values

    def __repr__(self) -> str:
        return f"{self.expr!r}.in_({list(self.values)!r})"


class Like(Expr):
    __slots__ = ("case_sensitive", "expr", "pattern")

    def __init__(self, expr: Expr, pattern: str, *, case_sensitive: bool) -> None:
        self.expr = expr
        self.pattern = pattern
        self.case_sensitive = case_sensitive

    def __repr__(self) -> str:
        method = "like" if self.case_sensitive else "ilike"
        return f"{self.expr!r}.{method}({self.pattern!r})"


class IsNull(Expr):
    __slots__ = ("expr", "negated")

    def __init__(self, expr: Expr, *, negated: bool) -> None:
        self.expr = expr
        self.negated = negated

    def __repr__(self) -> str:
        return f"{self.expr!r}.{'is_not_null' if self.negated else 'is_null'}()"


class Ordering:
    """``column.desc()``: an order_by term. Not an expression."""

    __slots__ = ("descending", "expr")

    def __init__(self, expr: Expr, *, descending: bool) -> None:
        self.expr = expr
        self.descending = descending

    def __repr__(self) -> str:
        return f"{self.expr!r}.{'desc' if self.descending else 'asc'}()"


def eq(a: Any, b: Any) -> Expr:
    if a is None:  # eq(None, x) is x IS NULL, as ``None == x`` is
        a, b = b, a
    return _wrap(a).__eq__(b)


def ne(a: Any, b: Any) -> Expr:
    if a is None:
        a, b = b, a
    return _wrap(a).__ne__(b)


def lt(a: Any, b: Any) -> Expr:
    return _wrap(a).__lt__(b)


def le(a: Any, b: Any) -> Expr:
    return _wrap(a).__le__(b)


def gt(a: Any, b: Any) -> Expr:
    return _wrap(a).__gt__(b)


def ge(a: Any, b: Any) -> Expr:
    return _wrap(a).__ge__(b)


def and_(*conditions: Expr) -> Expr:
    if not conditions:
        raise QueryError("and_() needs at least one condition")
    return And(tuple(_as_condition(c, "and_") for c in conditions))


def or_(*conditions: Expr) -> Expr:
    if not conditions:
        raise QueryError("or_() needs at least one condition")
    return Or(tuple(_as_condition(c, "or_") for c in conditions))


def not_(condition: Expr) -> Expr:
    return Not(_as_condition(condition, "not_"))
