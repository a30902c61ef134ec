"""The query DSL evaluated in Python, with exactly the semantics of the SQLite replica.

Live queries use it to decide, for a row that a commit changed, whether it is in a
query's result and where it sorts, without asking SQLite again. Everything follows
what ``SQLiteDialect`` compiles to, on values as SQLite stores them (booleans as 0/1,
JSON and timestamps as text): three-valued logic; a comparison with NULL is unknown;
numbers sort before text and text before blobs; text compares by code point; ``like``
is GLOB's case-sensitive match, ``ilike`` LIKE's ASCII-only folding, both with
backslash escapes; NULLs sort first ascending and last descending.

What the evaluator cannot reproduce exactly (SQLite's affinity conversions between a
text and a numeric column, the truth value of text, a ``ctx.`` reference) raises
``Unsupported``, when the predicate is compiled or while it runs; the caller then asks
SQLite instead. Standard library only.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .dialect import Dialect, SQLiteDialect, like_tokens
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
    Ordering,
)
from .schema import Column, ColumnType, Table

__all__ = [
    "Predicate",
    "SortKey",
    "Unsupported",
    "compile_predicate",
    "compile_sort_key",
    "like_matcher",
    "sql_compare",
]

Row = Mapping[str, Any]
# True, False or None (unknown), as SQL's three-valued logic has it.
Truth = bool | None
Predicate = Callable[[Row], bool]
SortKey = Callable[[Row], tuple[Any, ...]]
_Value = Callable[[Row], Any]
_Cond = Callable[[Row], Truth]


class Unsupported(Exception):
    """This expression (or this value) is not evaluated in Python: ask SQLite."""


_NUMERIC = frozenset({ColumnType.INTEGER, ColumnType.REAL, ColumnType.BOOLEAN})


def _stored_class(value: object) -> int:
    """SQLite's storage class order: NULL < INTEGER/REAL < TEXT < BLOB."""
    if value is None:
        return 0
    if isinstance(value, int | float):  # bool included: stored as 0/1
        return 1
    if isinstance(value, str):
        return 2
    if isinstance(value, bytes | bytearray | memoryview):
        return 3
    raise Unsupported(f"no SQLite storage class for {value!r}")


def sql_compare(a: object, b: object) -> int | None:
    """-1, 0 or 1 as SQLite orders two stored values without affinity; None if either
    is NULL."""
    if a is None or b is None:
        return None
    ca, cb = _stored_class(a), _stored_class(b)
    if ca != cb:
        return -1 if ca < cb else 1
    if a == b:
        return 0
    return -1 if a < b else 1  # type: ignore[operator]


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_FROM_CMP: dict[str, Callable[[int], bool]] = {
    "=": lambda c: c == 0,
    "!=": lambda c: c != 0,
    "<": lambda c: c < 0,
    "<=": lambda c: c <= 0,
    ">": lambda c: c > 0,
    ">=": lambda c: c >= 0,
}


def _affinity(node: Expr) -> str | None:
    """'numeric' or 'text' for a column, None for anything else (no affinity)."""
    if isinstance(node, Column):
        return "numeric" if node.type in _NUMERIC else "text"
    return None


# -- like -------------------------------------------------------------------------------

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def like_matcher(pattern: str, *, case_sensitive: bool) -> Callable[[str], bool]:
    """A function telling whether text matches ``pattern`` as ``like`` (GLOB in SQLite)
    or ``ilike`` (LIKE, folding ASCII letters only) do."""
    parts = []
    for kind, ch in like_tokens(pattern):
        if kind == "any":
            parts.append(".*")
        elif kind == "one":
            parts.append(".")
        else:
            parts.append(re.escape(ch if case_sensitive else ch.translate(_ASCII_LOWER)))
    match = re.compile("".join(parts), re.DOTALL).fullmatch
    if case_sensitive:
        return lambda text: match(text) is not None
    return lambda text: match(text.translate(_ASCII_LOWER)) is not None


def _like_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int):  # SQLite renders integers (and 0/1 booleans) as decimals
        return str(int(value))
    # Reals render as SQLite's %!.15g, which Python does not reproduce exactly.
    raise Unsupported(f"like on the non-text value {value!r}")


# -- compiling ----------------------------------------------------------------------------


class _Compiler:
    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect

    def column(self, node: ColumnRef) -> _Value:
        name = node.name
        if not isinstance(node, Column):
            return lambda row: row[name]
        convert = self.dialect.to_db_converter(node.type)
        if convert is None or node.type is ColumnType.BOOLEAN:
            # Booleans already compare and sort as 0/1 do.
            return lambda row: row[name]

        def stored(row: Row) -> Any:
            value = row[name]
            return None if value is None else convert(value)

        return stored

    def literal(self, value: object, hint: Column | None) -> object:
        # The dialect's own conversion, so Python compares what SQLite is given.
        return self.dialect._literal_param(value, hint)

    def value(self, node: Expr, hint: Column | None = None) -> _Value:
        """A function returning the stored value of ``node`` (conditions give 1/0/None)."""
        if isinstance(node, ColumnRef):
            return self.column(node)
        if isinstance(node, Literal):
            constant = self.literal(node.value, hint)
            return lambda row: constant
        if isinstance(node, ContextRef):
            raise Unsupported(f"ctx.{node.key} in a live query")
        cond = self.condition(node)

        def as_number(row: Row) -> Any:
            truth = cond(row)
            return None if truth is None else int(truth)

        return as_number

    def condition(self, node: Expr) -> _Cond:
        if isinstance(node, Compare):
            return self.compare(node)
        if isinstance(node, And):
            return _all([self.condition(i) for i in node.items])
        if isinstance(node, Or):
            return _any([self.condition(i) for i in node.items])
        if isinstance(node, Not):
            inner = self.condition(node.item)

            def negate(row: Row) -> Truth:
                truth = inner(row)
                return None if truth is None else not truth

            return negate
        if isinstance(node, IsNull):
            get = self.value(node.expr)
            if node.negated:
                return lambda row: get(row) is not None
            return lambda row: get(row) is None
        if isinstance(node, InList):
            return self.in_list(node)
        if isinstance(node, Like):
            return self.like(node)
        if isinstance(node, ColumnRef):
            return self.truth(node)
        if isinstance(node, Literal | ContextRef):
            raise Unsupported(f"{node!r} as a condition")
        raise Unsupported(f"cannot evaluate {node!r}")

    def truth(self, node: ColumnRef) -> _Cond:
        if isinstance(node, Column) and node.type not in _NUMERIC:
            # SQLite reads a numeric prefix of text ('1abc' is true): not reproduced.
            raise Unsupported(f"the truth value of {node.qualname} ({node.type.value})")
        get = self.column(node)

        def truth(row: Row) -> Truth:
            value = get(row)
            if value is None:
                return None
            if not isinstance(value, int | float):
                raise Unsupported(f"the truth value of {value!r}")
            return value != 0

        return truth

    def compare(self, node: Compare) -> _Cond:
        left_node, right_node = node.left, node.right
        la, ra = _affinity(left_node), _affinity(right_node)
        if la is not None and ra is not None and la != ra:
            # SQLite converts the text side to a number where it looks like one.
            raise Unsupported(f"comparing a {la} and a {ra} column")
        left_hint = right_node if isinstance(right_node, Column) else None
        right_hint = left_node if isinstance(left_node, Column) else None
        left = self.value(left_node, left_hint)
        right = self.value(right_node, right_hint)
        fast = _OPS[node.op]
        slow = _FROM_CMP[node.op]

        def compare(row: Row) -> Truth:
            a = left(row)
            if a is None:
                return None
            b = right(row)
            if b is None:
                return None
            if type(a) is type(b):
                return fast(a, b)
            result = sql_compare(a, b)
            return None if result is None else slow(result)

        return compare

    def in_list(self, node: InList) -> _Cond:
        hint = node.expr if isinstance(node.expr, Column) else None
        get = self.value(node.expr)
        if not node.values:
            return lambda row: False  # even for NULL: x IN () is false
        if all(isinstance(v, Literal) for v in node.values):
            constants = [self.literal(v.value, hint) for v in node.values]  # type: ignore[attr-defined]
            has_null = any(c is None for c in constants)
            present = [c for c in constants if c is not None]

            def member(row: Row) -> Truth:
                x = get(row)
                if x is None:
                    return None
                for c in present:
                    if (x == c) if type(c) is type(x) else sql_compare(x, c) == 0:
                        return True
                return None if has_null else False

            return member
        getters = [self.value(v, hint) for v in node.values]

        def member_any(row: Row) -> Truth:
            x = get(row)
            if x is None:
                return None
            unknown = False
            for g in getters:
                c = g(row)
                if c is None:
                    unknown = True
                elif sql_compare(x, c) == 0:
                    return True
            return None if unknown else False

        return member_any

    def like(self, node: Like) -> _Cond:
        if isinstance(node.expr, Column) and node.expr.type is not ColumnType.TEXT:
            raise Unsupported(f"like on {node.expr.qualname} ({node.expr.type.value})")
        get = self.value(node.expr)
        match = like_matcher(node.pattern, case_sensitive=node.case_sensitive)

        def like(row: Row) -> Truth:
            value = get(row)
            if value is None:
                return None
            return match(_like_text(value))

        return like


def _all(items: Sequence[_Cond]) -> _Cond:
    def conjunction(row: Row) -> Truth:
        result: Truth = True
        for item in items:
            truth = item(row)
            if truth is False:
                return False
            if truth is None:
                result = None
        return result

    return conjunction


def _any(items: Sequence[_Cond]) -> _Cond:
    def disjunction(row: Row) -> Truth:
        result: Truth = False
        for item in items:
            truth = item(row)
            if truth is True:
                return True
            if truth is None:
                result = None
        return result

    return disjunction


def compile_predicate(where: Expr | None, dialect: Dialect | None = None) -> Predicate:
    """A function telling whether a row (a dict of Python values, as queries return
    them) satisfies ``where`` (None: every row does). Raises ``Unsupported``."""
    if where is None:
        return lambda row: True
    cond = _Compiler(dialect or SQLiteDialect()).condition(where)

    def predicate(row: Row) -> bool:
        try:
            return cond(row) is True
        except TypeError as exc:  # a value of an unexpected type in the row
            raise Unsupported(str(exc)) from None

    return predicate


# -- order --------------------------------------------------------------------------------


class _Reversed:
    """Sorts in the opposite order of the value it wraps (for descending text)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reversed) and self.value == other.value

    def __lt__(self, other: _Reversed) -> bool:
        return bool(other.value < self.value)

    def __hash__(self) -> int:
        return hash(self.value)

    def __repr__(self) -> str:
        return f"_Reversed({self.value!r})"


def _term(get: _Value, descending: bool) -> Callable[[Row], tuple[Any, Any]]:
    """(class rank, comparable value): NULLs first ascending, last descending."""
    if not descending:

        def ascending(row: Row) -> tuple[Any, Any]:
            value = get(row)
            if value is None:
                return (0, 0)
            return (_stored_class(value), value)

        return ascending

    def descending_(row: Row) -> tuple[Any, Any]:
        value = get(row)
        if value is None:
            return (9, 0)
        rank = _stored_class(value)
        if rank == 1:
            return (8, -value)
        return (9 - rank, _Reversed(value))

    return descending_


def compile_sort_key(
    order: Sequence[Ordering], table: Table | None = None, dialect: Dialect | None = None,
) -> SortKey:
    """A key function ordering rows as ``ORDER BY`` does in SQLite, with ``table``'s
    primary key as the last term (so that no two rows tie)."""
    compiler = _Compiler(dialect or SQLiteDialect())
    terms = []
    names = []
    for o in order:
        if not isinstance(o.expr, ColumnRef):
            raise Unsupported(f"order by {o.expr!r}")
        terms.append(_term(compiler.column(o.expr), o.descending))
        names.append(o.expr.name)
    pk = table._pk.name if table is not None else None
    if pk in names:
        pk = None  # the key is already a term: no two rows tie
    if len(terms) == 1 and pk is not None:
        only = terms[0]

        def key1(row: Row) -> tuple[Any, ...]:
            rank, value = only(row)
            return (rank, value, row[pk])

        return key1

    def key(row: Row) -> tuple[Any, ...]:
        out: list[Any] = []
        for term in terms:
            out.extend(term(row))
        if pk is not None:
            out.append(row[pk])
        return tuple(out)

    return key
