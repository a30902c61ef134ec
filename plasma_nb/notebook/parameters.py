"""``:name`` parameters in SQL, bound from the notebook's variables.

``SELECT * FROM todos WHERE owner = :me`` binds ``me`` from the user's namespace,
as jupysql does. A ``:name`` inside a string literal, a quoted identifier or a
comment is left alone, and so are ``::`` casts and slices such as ``xs[a:b]``.
SQLite takes ``:name`` as it is; DuckDB spells it ``$name``.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterator, Mapping
from typing import Any

from ..core.errors import QueryError
from ..core.schema import format_timestamp

__all__ = ["bind", "find"]

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_QUOTES = "'\"`"


def _placeholders(sql: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, name) of each ``:name`` outside literals and comments."""
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in _QUOTES:
            end = i + 1
            while end < n:
                if sql[end] == c:
                    if end + 1 < n and sql[end + 1] == c:  # a doubled quote
                        end += 2
                        continue
                    break
                end += 1
            i = end + 1
        elif sql.startswith("--", i):
            newline = sql.find("\n", i)
            i = n if newline < 0 else newline + 1
        elif sql.startswith("/*", i):
            close = sql.find("*/", i + 2)
            i = n if close < 0 else close + 2
        elif c == ":":
            if sql.startswith("::", i):  # a cast: x::INTEGER
                i += 2
                continue
            before = sql[i - 1] if i else " "
            match = _IDENT.match(sql, i + 1)
            if match and not (before.isalnum() or before in "_]:"):
                yield i, match.end(), match.group()
                i = match.end()
            else:
                i += 1
        else:
            i += 1


def find(sql: str) -> list[str]:
    """The parameter names in ``sql``, in order of first use."""
    names: list[str] = []
    for _, _, name in _placeholders(sql):
        if name not in names:
            names.append(name)
    return names


def _value(value: Any) -> Any:
    if isinstance(value, _dt.datetime) and value.tzinfo is not None:
        return format_timestamp(value)  # the replica's text form of a timestamp
    if isinstance(value, _dt.date | _dt.datetime):
        return value.isoformat()
    return value


def bind(
    sql: str, namespace: Mapping[str, Any], *, style: str = "colon"
) -> tuple[str, dict[str, Any]]:
    """``sql`` with its parameters bound from ``namespace``: (sql, params).

    ``style="dollar"`` rewrites ``:name`` as ``$name`` (DuckDB's spelling).
    """
    params: dict[str, Any] = {}
    pieces: list[str] = []
    last = 0
    for start, end, name in _placeholders(sql):
        if name not in namespace:
            raise QueryError(f"the parameter :{name} needs a variable named {name!r}")
        params[name] = _value(namespace[name])
        if style == "dollar":
            pieces.append(sql[last:start])
            pieces.append(f"${name}")
            last = end
    if style == "dollar":
        pieces.append(sql[last:])
        sql = "".join(pieces)
    return sql, params
