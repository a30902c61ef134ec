"""Read rules: which rows of a table each caller may read (DESIGN section 6).

A read rule is a condition of the query DSL over one table's columns and the
caller's context, declared with the schema::

    from plasma_nb import Schema, ctx

    schema = Schema([todos], read_rules={todos: todos.owner == ctx.user})

``ctx.user`` is the caller's user id; any other ``ctx.NAME`` is the auth claim
``NAME`` (None when absent). The server applies the rules to every pull. To
evaluate a rule for one caller, ``bind`` replaces the context references by
their values, keeping the DSL's meaning of None: ``column == ctx.user`` with no
user is ``column IS NULL``, as ``column == None`` is. A context value that does
not fit the column's type never matches. The result is an ordinary condition
that every dialect (and the Python evaluator) compiles alike.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import MutationError, QueryError, SchemaError
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

if TYPE_CHECKING:
    from .mutators import Context
    from .schema import Table

__all__ = ["bind", "context_keys", "context_value", "ctx", "fingerprint", "normalize_rules"]

_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")


class _ContextNamespace:
    """``ctx.user``, ``ctx.NAME``: references to the caller's context in a read rule."""

    __slots__ = ()

    def __getattr__(self, name: str) -> ContextRef:
        if not _KEY.match(name):
            raise AttributeError(name)
        return ContextRef(name)

    def __repr__(self) -> str:
        return "ctx"


ctx = _ContextNamespace()


def context_value(context: Context, key: str) -> object:
    """The value ``ctx.KEY`` stands for: the user id, or the claim named ``key``."""
    if key == "user":
        return context.user
    return context.claims.get(key)


def _walk(expr: Expr) -> list[Expr]:
    found: list[Expr] = []
    stack: list[object] = [expr]
    while stack:
        node = stack.pop()
        if not isinstance(node, Expr):
            continue
        found.append(node)
        if isinstance(node, Compare):
            stack += [node.left, node.right]
        elif isinstance(node, And | Or):
            stack += list(node.items)
        elif isinstance(node, Not):
            stack.append(node.item)
        elif isinstance(node, InList):
            stack += [node.expr, *node.values]
        elif isinstance(node, Like | IsNull):
            stack.append(node.expr)
    return found


def context_keys(expr: Expr) -> frozenset[str]:
    """The context keys (``user``, claims) that ``expr`` reads."""
    return frozenset(n.key for n in _walk(expr) if isinstance(n, ContextRef))


def normalize_rules(
    tables: Mapping[str, Table], rules: Mapping[Any, Any] | None
) -> dict[str, Expr]:
    """Check ``read_rules`` (keyed by table or table name) and key them by table name."""
    from .dialect import SQLiteDialect
    from .mutators import Context
    from .query import check_condition, check_tables

    if rules is None:
        return {}
    if not isinstance(rules, Mapping):
        raise SchemaError(
            f"read_rules must map tables to conditions, such as {{todos: todos.owner == "
            f"ctx.user}}, got {rules!r}"
        )
    checked: dict[str, Expr] = {}
    for key, rule in rules.items():
        name = key if isinstance(key, str) else getattr(key, "_name", None)
        table = tables.get(name) if isinstance(name, str) else None
        if table is None or (not isinstance(key, str) and key is not table):
            raise SchemaError(
                f"read_rules: {key!r} is not a table of this schema; tables: "
                f"{', '.join(tables)}"
            )
        if name in checked:
            raise SchemaError(f"read_rules: table {name!r} has two rules")
        try:
            check_condition(rule, f"{name}.owner == ctx.user")
            check_tables(rule, table)
            # Compile once with a made-up caller, so a rule that cannot become SQL fails
            # here, naming it, rather than at the first pull.
            SQLiteDialect().compile_condition(bind(rule, Context(user="u"), table))
        except QueryError as exc:
            raise SchemaError(f"read rule of {name!r}: {exc}") from None
        if isinstance(rule, Ordering):  # pragma: no cover - check_condition refuses it
            raise SchemaError(f"read rule of {name!r} is an ordering")
        checked[str(name)] = rule
    return checked


def fingerprint(rules: Mapping[str, Expr], context: Context) -> str | None:
    """What a caller's view of the data depends on: the rules and the context values
    they read. None without rules. A client group whose fingerprint changes gets a
    full snapshot."""
    if not rules:
        return None
    keys = sorted(set().union(*(context_keys(r) for r in rules.values())))
    text = repr((
        sorted((name, repr(rule)) for name, rule in rules.items()),
        [(k, repr(context_value(context, k))) for k in keys],
    ))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


# -- binding a rule to one caller ---------------------------------------------------------


def _true(table: Table) -> Expr:
    return IsNull(table._pk, negated=True)


def _false(table: Table) -> Expr:
    return InList(table._pk, ())


def _unknown(table: Table) -> Expr:
    # SQL's NULL truth value: neither it nor its negation selects a row.
    return Compare("=", table._pk, Literal(None))


def _truth(value: bool | None, table: Table) -> Expr:
    if value is None:
        return _unknown(table)
    return _true(table) if value else _false(table)


def _fits(column: ColumnRef, value: object) -> bool:
    check = getattr(column, "check", None)
    if check is None or value is None:
        return True
    try:
        check(value)
    except MutationError:
        return False
    return True


def _compare_constants(op: str, a: object, b: object) -> bool | None:
    from .evaluate import Unsupported, sql_compare

    if a is None or b is None:
        return None
    try:
        order = sql_compare(a, b)
    except Unsupported:
        return None
    if order is None:
        return None
    return {
        "=": order == 0, "!=": order != 0, "<": order < 0,
        "<=": order <= 0, ">": order > 0, ">=": order >= 0,
    }[op]


def bind(expr: Expr, context: Context, table: Table) -> Expr:
    """``expr`` for one caller: every ``ctx.KEY`` replaced by its value."""
    return _Binder(context, table).condition(expr)


class _Binder:
    def __init__(self, context: Context, table: Table) -> None:
        self.context = context
        self.table = table

    def value(self, node: Expr) -> Expr:
        if isinstance(node, ContextRef):
            return Literal(context_value(self.context, node.key))
        if isinstance(node, ColumnRef | Literal):
            return node
        return self.condition(node)

    def condition(self, node: Expr) -> Expr:
        t = self.table
        if isinstance(node, ContextRef):
            value = context_value(self.context, node.key)
            if value is None or isinstance(value, bool | int | float):
                return _truth(None if value is None else bool(value), t)
            return _false(t)
        if isinstance(node, And):
            return And(tuple(self.condition(i) for i in node.items))
        if isinstance(node, Or):
            return Or(tuple(self.condition(i) for i in node.items))
        if isinstance(node, Not):
            return Not(self.condition(node.item))
        if isinstance(node, Compare):
            return self.compare(node)
        if isinstance(node, IsNull):
            if isinstance(node.expr, ContextRef):
                missing = context_value(self.context, node.expr.key) is None
                return _truth(missing != node.negated, t)
            return IsNull(self.value(node.expr), negated=node.negated)
        if isinstance(node, InList):
            return self.in_list(node)
        if isinstance(node, Like):
            if isinstance(node.expr, ContextRef):
                from .evaluate import like_matcher

                value = context_value(self.context, node.expr.key)
                if not isinstance(value, str):
                    return _unknown(t)
                match = like_matcher(node.pattern, case_sensitive=node.case_sensitive)
                return _truth(match(value), t)
            return Like(self.value(node.expr), node.pattern, case_sensitive=node.case_sensitive)
        return node

    def compare(self, node: Compare) -> Expr:
        t = self.table
        left, right = node.left, node.right
        from_ctx = isinstance(left, ContextRef) or isinstance(right, ContextRef)
        bl, br = self.value(left), self.value(right)
        if not from_ctx:
            return Compare(node.op, bl, br)
        if isinstance(bl, Literal) and isinstance(br, Literal):
            return _truth(_compare_constants(node.op, bl.value, br.value), t)
        column, constant = (br, bl) if isinstance(bl, Literal) else (bl, br)
        if not isinstance(constant, Literal) or not isinstance(column, ColumnRef):
            return Compare(node.op, bl, br)
        if constant.value is None:
            # The DSL's == None: a missing user matches the rows that have none.
            if node.op == "=":
                return IsNull(column, negated=False)
            if node.op == "!=":
                return IsNull(column, negated=True)
            return _unknown(t)
        if not _fits(column, constant.value):
            return _unknown(t)
        return Compare(node.op, bl, br)

    def in_list(self, node: InList) -> Expr:
        t = self.table
        values = []
        column = node.expr if isinstance(node.expr, ColumnRef) else None
        for v in node.values:
            bound = self.value(v)
            if isinstance(v, ContextRef) and isinstance(bound, Literal) and column is not None:
                if not _fits(column, bound.value):
                    bound = Literal(None)
            values.append(bound)
        if isinstance(node.expr, ContextRef):
            value = context_value(self.context, node.expr.key)
            if value is None:
                return _unknown(t) if values else _false(t)
            if all(isinstance(v, Literal) for v in values):
                unknown = False
                for v in values:
                    found = _compare_constants("=", value, v.value)  # type: ignore[attr-defined]
                    if found:
                        return _true(t)
                    unknown |= found is None
                return _unknown(t) if unknown else _false(t)
            return InList(Literal(value), tuple(values))
        return InList(self.value(node.expr), tuple(values))
