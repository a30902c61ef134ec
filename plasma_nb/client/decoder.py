"""Reading rows off the wire fast: a checked converter generated per table.

A snapshot pull carries thousands of whole rows. Checking them column by column
through the schema's generic checks costs more than writing them to SQLite, so
each table gets a small function, generated once from its columns, that checks
the common well-typed shapes inline and returns the tuple to store. Anything it
does not recognise (a missing or extra column, an odd type, a timestamp) makes it
return None, and the caller takes the schema's slow path, which accepts what is
valid and names what is not.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..core.dialect import SQLiteDialect
from ..core.errors import MutationError
from ..core.schema import MAX_SAFE_INTEGER, Column, ColumnType, Table

__all__ = ["WireDecoder"]


class _Slow(Exception):
    pass


class WireDecoder:
    """``decoder(value, pk_text)`` -> the row as stored (in column order), or None."""

    def __init__(self, table: Table, dialect: SQLiteDialect) -> None:
        self.table = table
        columns = list(table)
        self.key_index = columns.index(table._pk)
        self._convert = _generate(columns, dialect)

    def __call__(self, value: dict[str, Any], pk_text: str) -> tuple[Any, ...] | None:
        try:
            row = self._convert(value)
        except (_Slow, KeyError):
            return None
        # The key in the patch key and the one in the row must agree.
        return row if str(row[self.key_index]) == pk_text else None


def _generate(columns: list[Column], dialect: SQLiteDialect) -> Callable[[Any], Any]:
    lines = ["def convert(value):", f"    if len(value) != {len(columns)}: raise _Slow"]
    env: dict[str, Any] = {
        "_Slow": _Slow, "_isfinite": math.isfinite, "_M": MAX_SAFE_INTEGER,
    }
    for i, column in enumerate(columns):
        v = f"v{i}"
        lines.append(f"    {v} = value[{column.name!r}]")
        test = "if" if not column.nullable else "elif"
        if column.nullable:
            lines.append(f"    if {v} is None: pass")
        kind = column.type
        if kind is ColumnType.TEXT:
            lines.append(f"    {test} type({v}) is not str: raise _Slow")
        elif kind is ColumnType.INTEGER:
            lines.append(
                f"    {test} type({v}) is not int or not -_M <= {v} <= _M: raise _Slow"
            )
        elif kind is ColumnType.REAL:
            lines += [
                f"    {test} type({v}) is float:",
                f"        if not _isfinite({v}): raise _Slow",
                f"    elif type({v}) is int and -_M <= {v} <= _M: {v} = float({v})",
                "    else: raise _Slow",
            ]
        elif kind is ColumnType.BOOLEAN:
            lines += [
                f"    {test} {v} is True: {v} = 1",
                f"    elif {v} is False: {v} = 0",
                "    else: raise _Slow",
            ]
        else:  # json, blob, timestamp: the schema's check, then the dialect's form
            env[f"_c{i}"] = _generic(column, dialect)
            lines.append(f"    {'else' if column.nullable else 'if True'}: {v} = _c{i}({v})")
    lines.append(f"    return ({', '.join(f'v{i}' for i in range(len(columns)))},)")
    # The source holds only validated identifiers (column names) and generated names.
    exec("\n".join(lines), env)
    return env["convert"]  # type: ignore[no-any-return]


def _generic(column: Column, dialect: SQLiteDialect) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        try:
            return dialect.to_db(column.type, column.check(value))
        except (MutationError, TypeError, ValueError):
            raise _Slow from None

    return convert
