"""Mutators: the registry, the transaction API they receive, and how engines run them.

A mutator is ``async def name(tx, *, arg, ...)``. Both engines run the same
function; each supplies a ``Transaction`` subclass that executes compiled SQL.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from .errors import MutationError, MutatorError, QueryError, UnknownMutator
from .expr import Expr
from .query import Delete, Insert, Select, Update, check_condition
from .schema import Schema, Table

__all__ = [
    "Context",
    "Mutators",
    "Transaction",
    "drive",
]

MutatorFn = Callable[..., Coroutine[Any, Any, Any]]
F = TypeVar("F", bound=MutatorFn)


@dataclass(frozen=True)
class Context:
    """Who is calling: ``tx.ctx.user`` (None without auth) and the auth claims."""

    user: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)


class Mutators:
    """The registry of one schema's mutators: ``@mutators.register``."""

    def __init__(self, schema: Schema) -> None:
        if not isinstance(schema, Schema):
            raise MutatorError(f"Mutators(schema) takes a Schema, got {schema!r}")
        self.schema = schema
        self._fns: dict[str, MutatorFn] = {}
        self._signatures: dict[str, inspect.Signature] = {}
        # (required, allowed, takes **kwargs): checked on every mutation, so no bind().
        self._arg_names: dict[str, tuple[frozenset[str], frozenset[str], bool]] = {}

    def register(self, fn: F) -> F:
        if not inspect.iscoroutinefunction(fn):
            raise MutatorError(
                f"mutator {getattr(fn, '__name__', fn)!r} must be declared with async def"
            )
        name = fn.__name__
        if name in self._fns:
            raise MutatorError(f"a mutator named {name!r} is already registered")
        signature = inspect.signature(fn)
        params = list(signature.parameters.values())
        if not params or params[0].kind not in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            raise MutatorError(f"mutator {name!r} must take tx as its first parameter")
        for p in params[1:]:
            if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.VAR_POSITIONAL):
                raise MutatorError(
                    f"mutator {name!r}: parameter {p.name!r} must be keyword-only "
                    "(arguments travel as a JSON object)"
                )
        self._fns[name] = fn
        self._signatures[name] = signature
        keywords = [p for p in params[1:] if p.kind is not inspect.Parameter.VAR_KEYWORD]
        self._arg_names[name] = (
            frozenset(p.name for p in keywords if p.default is inspect.Parameter.empty),
            frozenset(p.name for p in keywords),
            any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params),
        )
        return fn

    def __contains__(self, name: object) -> bool:
        return name in self._fns

    def __iter__(self) -> Iterator[str]:
        return iter(self._fns)

    def __len__(self) -> int:
        return len(self._fns)

    def __getitem__(self, name: str) -> MutatorFn:
        try:
            return self._fns[name]
        except KeyError:
            raise UnknownMutator(name, list(self._fns)) from None

    def check_args(self, name: str, args: Mapping[str, Any]) -> None:
        """Raise MutatorError naming what is wrong with ``args`` for mutator ``name``."""
        names = self._arg_names.get(name)
        if names is None:
            raise UnknownMutator(name, list(self._fns))
        required, allowed, any_keyword = names
        missing = required.difference(args)
        if missing:
            raise MutatorError(
                f"bad arguments for mutator {name!r}: missing {', '.join(sorted(missing))}"
            )
        if not any_keyword:
            unknown = set(args).difference(allowed)
            if unknown:
                takes = ", ".join(sorted(allowed)) or "none"
                raise MutatorError(
                    f"bad arguments for mutator {name!r}: unexpected "
                    f"{', '.join(sorted(unknown))} (it takes {takes})"
                )

    def start(
        self, tx: Transaction, name: str, args: Mapping[str, Any]
    ) -> Coroutine[Any, Any, Any]:
        """Check the arguments and create the mutator's coroutine."""
        self.check_args(name, args)
        return self._fns[name](tx, **args)


def drive(coro: Coroutine[Any, Any, Any], name: str) -> Any:
    """Run a mutator coroutine to its end without an event loop.

    On the client every ``tx`` operation completes without suspending, so a
    mutator that suspends is waiting on something else (a sleep, a network
    call): that breaks determinism and the optimistic apply, so it is refused.
    """
    try:
        yielded = coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    what = (
        "awaited something that suspends (asyncio.sleep, a bare yield)"
        if yielded is None
        else f"awaited {yielded!r}"
    )
    raise MutatorError(
        f"mutator {name!r} {what}, which is not a tx operation; "
        "mutators may await only tx methods (pass other values in as arguments)"
    )


class _Write:
    """Base of the awaitable write builders returned by ``tx.insert()`` and friends."""

    __slots__ = ("_table", "_tx")

    def __init__(self, tx: Transaction, table: Table) -> None:
        if not isinstance(table, Table):
            raise QueryError(f"expected a table, got {table!r}")
        self._tx = tx
        self._table = table


class _PendingWrite:
    """A complete write statement, run when awaited."""

    __slots__ = ("_stmt", "_tx")

    def __init__(self, tx: Transaction, stmt: Insert | Update | Delete) -> None:
        self._tx = tx
        self._stmt = stmt

    def __await__(self) -> Any:
        return self._tx._write(self._stmt).__await__()


class InsertBuilder(_Write):
    __slots__ = ("_upsert",)

    def __init__(self, tx: Transaction, table: Table, *, upsert: bool) -> None:
        super().__init__(tx, table)
        self._upsert = upsert

    def values(self, /, **row: Any) -> _PendingWrite:
        # An upsert needs a full row too: SQLite and Postgres check NOT NULL on the
        # proposed row before they look for the conflict, so a partial upsert would
        # fail with a raw database error even when the row exists.
        checked = self._table._check_row(row)
        pk = self._table._pk.name
        if pk not in checked:
            raise MutationError(f"{self._table._name}: missing value for the key {pk!r}")
        return _PendingWrite(self._tx, Insert(self._table, checked, upsert=self._upsert))


class UpdateBuilder(_Write):
    __slots__ = ("_values",)

    def __init__(self, tx: Transaction, table: Table) -> None:
        super().__init__(tx, table)
        self._values: dict[str, object] | None = None

    def set(self, /, **values: Any) -> _UpdateSet:
        if not values:
            raise QueryError(f"update({self._table._name}).set() needs at least one column")
        checked = self._table._check_row(values, partial=True)
        pk = self._table._pk.name
        if pk in checked:
            raise MutationError(f"the key {self._table._name}.{pk} never changes")
        return _UpdateSet(self._tx, self._table, checked)


class _UpdateSet:
    """``tx.update(t).set(...)``: awaited as is, it updates every row; usually ``.where()``
    follows (so the statement is only built once its condition is known)."""

    __slots__ = ("_table", "_tx", "_values")

    def __init__(self, tx: Transaction, table: Table, values: dict[str, object]) -> None:
        self._tx = tx
        self._table = table
        self._values = values

    def __await__(self) -> Any:
        return self._tx._write(Update(self._table, self._values, None)).__await__()

    def where(self, condition: Expr, /) -> _PendingWrite:
        return _PendingWrite(self._tx, Update(self._table, self._values, _condition(condition)))


class DeleteBuilder(_Write):
    __slots__ = ()

    def __await__(self) -> Any:
        raise QueryError(
            f"delete({self._table._name}) needs .where(...); to delete every row, say so: "
            f".where({self._table._name}.{self._table._pk.name}.is_not_null())"
        )

    def where(self, condition: Expr, /) -> _PendingWrite:
        return _PendingWrite(self._tx, Delete(self._table, _condition(condition)))


def _condition(condition: object) -> Expr:
    return check_condition(condition, "todos.id == id")


class BoundSelect:
    """``tx.select(...)``: a Select whose ``.all()`` and ``.first()`` run in ``tx``."""

    __slots__ = ("_select", "_tx")

    def __init__(self, tx: Transaction, select: Select) -> None:
        self._tx = tx
        self._select = select

    def where(self, condition: Expr, /) -> BoundSelect:
        return BoundSelect(self._tx, self._select.where(condition))

    def order_by(self, *terms: Any) -> BoundSelect:
        return BoundSelect(self._tx, self._select.order_by(*terms))

    def limit(self, n: int, /) -> BoundSelect:
        return BoundSelect(self._tx, self._select.limit(n))

    def offset(self, n: int, /) -> BoundSelect:
        return BoundSelect(self._tx, self._select.offset(n))

    async def all(self) -> list[dict[str, Any]]:
        return await self._tx._read(self._select)

    async def first(self) -> dict[str, Any] | None:
        rows = await self._tx._read(self._select.limit(1))
        return rows[0] if rows else None


class Transaction:
    """What a mutator receives as ``tx``. Engines subclass it and implement
    ``_write`` and ``_read``; on the client both finish without suspending."""

    location: Literal["client", "server"]

    def __init__(self, *, ctx: Context, timestamp: float, mutation_name: str = "") -> None:
        self.ctx = ctx
        self.timestamp = timestamp
        self.mutation_name = mutation_name

    def insert(self, table: Table, /) -> InsertBuilder:
        return InsertBuilder(self, table, upsert=False)

    def upsert(self, table: Table, /) -> InsertBuilder:
        return InsertBuilder(self, table, upsert=True)

    def update(self, table: Table, /) -> UpdateBuilder:
        return UpdateBuilder(self, table)

    def delete(self, table: Table, /) -> DeleteBuilder:
        return DeleteBuilder(self, table)

    def select(self, *what: Any) -> BoundSelect:
        from .query import select

        return BoundSelect(self, select(*what))

    async def get(self, table: Table, pk: object, /) -> dict[str, Any] | None:
        """The row with key ``pk``, or None."""
        from .query import select

        rows = await self._read(select(table).where(table._pk == pk).limit(1))
        return rows[0] if rows else None

    async def _write(self, stmt: Insert | Update | Delete) -> int:
        raise NotImplementedError

    async def _read(self, stmt: Select) -> list[dict[str, Any]]:
        raise NotImplementedError
