"""The isomorphic core: declarations, the query DSL, SQL dialects, mutators and the
wire protocol. Standard library only and free of I/O, so both engines and Pyodide
import it."""

from __future__ import annotations

from .dialect import Compiled, Dialect, PostgresDialect, SQLiteDialect
from .errors import MutationError, PlasmaError
from .expr import Expr, and_, eq, ge, gt, le, lt, ne, not_, or_
from .ids import new_id
from .mutators import Context, Mutators, Transaction, drive
from .query import Select, select
from .rules import ctx
from .schema import Column, ColumnType, Schema, Table, col, table

__all__ = [
    "Column",
    "ColumnType",
    "Compiled",
    "Context",
    "Dialect",
    "Expr",
    "MutationError",
    "Mutators",
    "PlasmaError",
    "PostgresDialect",
    "SQLiteDialect",
    "Schema",
    "Select",
    "Table",
    "Transaction",
    "and_",
    "col",
    "ctx",
    "drive",
    "eq",
    "ge",
    "gt",
    "le",
    "lt",
    "ne",
    "new_id",
    "not_",
    "or_",
    "select",
    "table",
]
