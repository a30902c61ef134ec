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

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

from ..core.dialect import SQLiteDialect
from ..core.errors import MutationError
from ..core.schema import MAX_SAFE_INTEGER, Column, ColumnType, Table

__all__ = ["WireDecoder", "row_decoder"]


class _Slow(Exception):
    pass


# SQLiteDialect.to_db's form of a json value, without building an encoder per call.
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


class WireDecoder:
    """``decoder(value, pk_text)`` -> the row as stored (in column order), or None.

    ``decoder.convert`` is the same function without this wrapper (the patch loop calls
    it directly: the wrapper's call costs more than a row's checks)."""

    def __init__(self, table: Table, dialect: SQLiteDialect) -> None:
        self.table = table
        columns = list(table)
        self.key_index = columns.index(table._pk)
        self.convert = _generate(columns, self.key_index, dialect)

    def __call__(self, value: dict[str, Any], pk_text: str) -> tuple[Any, ...] | None:
        return self.convert(value, pk_text)  # type: ignore[no-any-return]


def _generate(
    columns: list[Column], key_index: int, dialect: SQLiteDialect
) -> Callable[[Any, str], Any]:
    lines = [
        "def convert(value, pk_text):",
        "  try:",
        f"    if len(value) != {len(columns)}: return None",
    ]
    env: dict[str, Any] = {
        "_Slow": _Slow, "_isfinite": math.isfinite, "_M": MAX_SAFE_INTEGER, "_json": _JSON,
    }
    for i, column in enumerate(columns):
        v = f"v{i}"
        lines.append(f"    {v} = value[{column.name!r}]")
        test = "if" if not column.nullable else "elif"
        if column.nullable:
            lines.append(f"    if {v} is None: pass")
        kind = column.type
        if kind is ColumnType.TEXT:
            lines.append(f"    {test} type({v}) is not str: return None")
        elif kind is ColumnType.INTEGER:
            lines.append(
                f"    {test} type({v}) is not int or not -_M <= {v} <= _M: return None"
            )
        elif kind is ColumnType.REAL:
            lines += [
                f"    {test} type({v}) is float:",
                f"        if not _isfinite({v}): return None",
                f"    elif type({v}) is int and -_M <= {v} <= _M: {v} = float({v})",
                "    else: return None",
            ]
        elif kind is ColumnType.BOOLEAN:
            lines += [
                f"    {test} {v} is True: {v} = 1",
                f"    elif {v} is False: {v} = 0",
                "    else: return None",
            ]
        elif kind is ColumnType.JSON:
            # One encoder call is both the schema's check (serializable, no NaN) and
            # the dialect's stored form (compact, not ASCII-escaped).
            lines.append(f"    {'else' if column.nullable else 'if True'}: {v} = _json({v})")
        else:  # blob, timestamp: the schema's check, then the dialect's form
            env[f"_c{i}"] = _generic(column, dialect)
            lines.append(f"    {'else' if column.nullable else 'if True'}: {v} = _c{i}({v})")
        if i == key_index:
            # The key in the patch key and the one in the row must agree.
            same = f"{v} == pk_text" if kind is ColumnType.TEXT else f"str({v}) == pk_text"
            lines.append(f"    if not {same}: return None")
    lines.append(f"    return ({', '.join(f'v{i}' for i in range(len(columns)))},)")
    lines.append("  except (_Slow, KeyError, TypeError, ValueError, RecursionError):")
    lines.append("    return None")
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


def row_decoder(
    columns: Sequence[Column], dialect: SQLiteDialect
) -> Callable[[Any], dict[str, Any]]:
    """``decode(values)``: a stored row (in column order) as a dict of Python values, the
    same as the dialect's row decoder, generated as one dict display: a subscriber's
    10k-row change decodes every row."""
    env: dict[str, Any] = {}
    items = []
    for i, column in enumerate(columns):
        convert = dialect.from_db_converter(column.type)
        if convert is None:
            items.append(f"{column.name!r}: v[{i}]")
        else:
            env[f"_c{i}"] = convert
            items.append(f"{column.name!r}: None if v[{i}] is None else _c{i}(v[{i}])")
    # As in _generate: only validated identifiers and generated names reach the source.
    exec(f"def decode(v):\n    return {{{', '.join(items)}}}", env)
    return env["decode"]  # type: ignore[no-any-return]
