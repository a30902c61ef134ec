"""Traces: replaying a pending mutation as the SQL it ran, while its reads still agree.

A mutator is deterministic (DESIGN.md section 3): given the same arguments, context
and reads, it issues the same statements. So a rebase need not run a pending mutator
again to replay it: it can run again the statements the mutator issued last time,
checking that every read returns the same rows and every write the same row count (or
the same integrity error) as then. If all agree, running the mutator would have done
exactly this, without building and compiling its statements in Python again.

- A read that disagrees before the trace wrote anything leaves nothing to undo: the
  mutator runs instead (``STALE``).
- A read or write count that disagrees after a write (``DIRTY``): the replay of every
  entry starts over the slow way, from a savepoint taken before the first.

A mutator that raised ``MutationError`` before writing anything keeps a trace of its
reads: while they agree, it fails again, and nothing needs undoing. Traces live in
memory, per process: an entry queued by another process, or by an earlier session, is
run once, then traced.

A trace also tells which rows its writes touched, when that follows from the statements
alone (``Trace.touched``): a write by primary key (``UPDATE``/``DELETE ... WHERE pk = ?``,
an ``INSERT`` that names the key) touches that row if its row count says so. A rebase
then records those rows' pre-images in one statement instead of a trigger per row.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..core.schema import ColumnType
from .layout import TableInfo

__all__ = ["DIRTY", "OK", "READ", "STALE", "WRITE", "Footprint", "KeyTypes", "Op", "Trace",
           "key_types"]

READ: Literal[0] = 0
WRITE: Literal[1] = 1

# (READ, sql, params, rows) or (WRITE, sql, params, row count or integrity error text)
Op = tuple[int, str, tuple[Any, ...], Any]

OK, STALE, DIRTY = "ok", "stale", "dirty"

#: Each user table's primary key column and the Python type its stored values have.
KeyTypes = Mapping[str, tuple[str, type]]

# Statements as the SQLite dialect writes them (names are validated identifiers, values
# are all parameters), for which the row a write touches is its key parameter's.
_NAME = r'"([^"]+)"'
_UPDATE = re.compile(
    rf'UPDATE {_NAME} SET "[^"]+" = \?(?:, "[^"]+" = \?)* WHERE \({_NAME} = \?\)\Z')
_DELETE = re.compile(rf'DELETE FROM {_NAME} WHERE \({_NAME} = \?\)\Z')
_INSERT = re.compile(
    rf'INSERT INTO {_NAME} \(((?:"[^"]+", )*"[^"]+")\) VALUES \(\?(?:, \?)*\)'
    r'(?: ON CONFLICT \("[^"]+"\) DO (?:NOTHING|UPDATE SET [^;]*))?\Z')
# A read of one table, and the rest: by key, or anything else (the table as a whole).
_SELECT = re.compile(rf'SELECT "[^"]+"(?:, "[^"]+")* FROM {_NAME}(.*)\Z')
_BY_KEY = re.compile(rf' WHERE \({_NAME} = \?\)(?: LIMIT \?)?\Z')
# sql -> (table, {column: index of its parameter}), the columns that pin the one row the
# statement can touch; None: a statement whose rows do not follow from its parameters.
_SHAPES: dict[str, tuple[str, dict[str, int]] | None] = {}


def _shape(sql: str, params: tuple[Any, ...]) -> tuple[str, dict[str, int]] | None:
    try:
        return _SHAPES[sql]
    except KeyError:
        pass
    shape: tuple[str, dict[str, int]] | None = None
    if (m := _UPDATE.match(sql)) is not None:
        shape = (m[1], {m[2]: len(params) - 1})
    elif (m := _DELETE.match(sql)) is not None:
        shape = (m[1], {m[2]: 0})
    elif (m := _INSERT.match(sql)) is not None:
        shape = (m[1], {c: i for i, c in enumerate(m[2][1:-1].split('", "'))})
    if len(_SHAPES) > 1024:
        _SHAPES.clear()
    _SHAPES[sql] = shape
    return shape


# sql -> (table, column compared with the first parameter or None: the whole table)
_READS: dict[str, tuple[str, str | None] | None] = {}


def _read_shape(sql: str) -> tuple[str, str | None] | None:
    try:
        return _READS[sql]
    except KeyError:
        pass
    shape: tuple[str, str | None] | None = None
    if (m := _SELECT.match(sql)) is not None:
        by_key = _BY_KEY.match(m[2])
        shape = (m[1], by_key[1] if by_key is not None else None)
    if len(_READS) > 1024:
        _READS.clear()
    _READS[sql] = shape
    return shape


#: What a run depends on: the (table, key) rows it read or wrote, and the tables it read
#: other than by key (any row of them may matter).
Footprint = tuple[frozenset[tuple[str, Any]], frozenset[str]]


def key_types(tables: Mapping[str, TableInfo]) -> dict[str, tuple[str, type]]:
    """``KeyTypes`` of the replica's user tables whose keys are text or integers: the only
    ones whose rows a trace names (``Trace.touched``, ``Trace.footprint``)."""
    out: dict[str, tuple[str, type]] = {}
    for name, info in tables.items():
        declared = info.declared
        if declared is None:
            continue
        pk = declared._pk
        if pk.type is ColumnType.TEXT:
            out[name] = (pk.name, str)
        elif pk.type is ColumnType.INTEGER:
            out[name] = (pk.name, int)
    return out


@dataclass(frozen=True, slots=True)
class Trace:
    """The statements one run of a mutator issued, and what they returned."""

    name: str  # the mutator, its arguments (as stored in the outbox) and timestamp:
    args_json: str  # what the trace is a run of, checked before it stands in for one
    timestamp: float
    user: str | None  # tx.ctx.user during that run: statements may depend on it
    ops: tuple[Op, ...]
    failed: bool = False  # it raised MutationError (and wrote nothing)
    # touched()'s and footprint()'s answers and the KeyTypes they were for: a trace is
    # asked at every rebase.
    _touched: Any = field(default=None, init=False, repr=False, compare=False)
    _footprint: Any = field(default=None, init=False, repr=False, compare=False)

    def runs(self, name: str, args_json: str, timestamp: float, user: str | None) -> bool:
        """Whether this is a run of that mutation, as ``user``."""
        return (self.args_json == args_json and self.name == name
                and self.timestamp == timestamp and self.user == user)

    @property
    def wrote(self) -> bool:
        return any(op[0] == WRITE for op in self.ops)

    def touched(self, keys: KeyTypes) -> list[tuple[str, Any]] | None:
        """(table, key) of each row this run's writes touched, in order; None when a
        write's rows do not follow from its statement and parameters alone.

        A replay that returns ``OK`` touches the same rows: each such write pins one row
        by its key, and its row count (0 or 1) was checked."""
        cached = self._touched
        if cached is not None and cached[0] is keys:
            return cached[1]  # type: ignore[no-any-return]
        out = self._find_touched(keys)
        object.__setattr__(self, "_touched", (keys, out))  # a cache: the trace is unchanged
        return out

    def footprint(self, keys: KeyTypes) -> Footprint | None:
        """The rows and tables whose contents this run's outcome depends on; None when
        that does not follow from its statements and parameters alone.

        If none of them changes, the run would issue the same statements with the same
        results again: its reads return the same rows, and each write (by key) finds
        its row as before. A write's row counts even when it touched nothing."""
        cached = self._footprint
        if cached is not None and cached[0] is keys:
            return cached[1]  # type: ignore[no-any-return]
        out = self._find_footprint(keys)
        object.__setattr__(self, "_footprint", (keys, out))
        return out

    def _find_footprint(self, keys: KeyTypes) -> Footprint | None:
        rows: set[tuple[str, Any]] = set()
        tables: set[str] = set()
        for kind, sql, params, _outcome in self.ops:
            if kind == READ:
                read = _READS[sql] if sql in _READS else _read_shape(sql)
                if read is None:
                    return None
                table, column = read
                pk = keys.get(table)
                if pk is not None and column == pk[0] and type(params[0]) is pk[1]:
                    rows.add((table, params[0]))
                else:
                    tables.add(table)
                continue
            keyed = _keyed_write(sql, params, keys)
            if keyed is None:
                return None
            table, key, stored = keyed
            if type(key) is stored:
                rows.add((table, key))
            else:  # a key not as stored: which row SQLite matched is its business
                tables.add(table)
        return frozenset(rows), frozenset(tables)

    def _find_touched(self, keys: KeyTypes) -> list[tuple[str, Any]] | None:
        out: list[tuple[str, Any]] = []
        for kind, sql, params, outcome in self.ops:
            if kind != WRITE:
                continue
            keyed = _keyed_write(sql, params, keys)
            if keyed is None:
                return None
            table, key, stored = keyed
            if type(key) is not stored:  # not as stored (None: SQLite picks an integer key)
                return None
            if type(outcome) is int and outcome > 0:  # else an integrity error, or no row
                out.append((table, key))
        return out

    def replay(self, cursor: sqlite3.Cursor) -> str:
        """Run the statements again: ``OK``, ``STALE`` or ``DIRTY`` (see the module)."""
        written = False
        execute = cursor.execute
        for kind, sql, params, expected in self.ops:
            if kind == READ:
                if execute(sql, params).fetchall() != expected:
                    return DIRTY if written else STALE
                continue
            written = True
            try:
                outcome: Any = execute(sql, params).rowcount
            except sqlite3.IntegrityError as exc:
                outcome = str(exc)
            if outcome != expected:
                return DIRTY
        return OK


def _keyed_write(sql: str, params: Any, keys: KeyTypes) -> tuple[str, Any, type] | None:
    """A write's table, the primary key it names and the type keys are stored as; None
    when its shape is unknown or it names no primary key."""
    shape = _SHAPES[sql] if sql in _SHAPES else _shape(sql, params)
    if shape is None:
        return None
    table, where = shape
    pk = keys.get(table)
    if pk is None or (index := where.get(pk[0])) is None:
        return None
    return table, params[index], pk[1]
