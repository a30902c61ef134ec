"""DuckDB over a client's replica: ``%%plasma sql --engine duckdb``.

DuckDB's SQLite extension is downloaded at run time, which a sandboxed kernel
(and JupyterLite) cannot do, so the replica's tables reach DuckDB as pandas
frames instead: each table a query reads is loaded once, typed from the schema
(booleans, timestamps, nullable integers), and cached until a commit touches it.
The DuckDB database itself is an in-memory scratch space; the replica's tables
appear in it as read-only views.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Any

from ..core.errors import QueryError
from ..core.schema import ColumnType
from ._access import table_rows
from ._deps import require
from .rerun import RerunLive, unique_names

__all__ = ["DuckEngine"]

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class DuckEngine:
    """DuckDB for one client (see the module docstring)."""

    def __init__(self, client: Any) -> None:
        self._duckdb = require("duckdb", "%%plasma sql --engine duckdb")
        self._pd = require("pandas", "%%plasma sql --engine duckdb")
        self.client = client
        self._lock = threading.RLock()
        self._frames: dict[str, Any] = {}
        self._registered: dict[str, Any] = {}
        self._con = self._duckdb.connect(":memory:")
        # Parsing happens on an empty database: once a name is registered as a view,
        # DuckDB's get_table_names() reports what the view reads instead of its name.
        self._parser = self._duckdb.connect(":memory:")
        self._names = {name.lower(): name for name in client.schema.tables}
        self._unsubscribe = client.subscribe(list(client.schema.tables), self._invalidate)
        self.loads = 0  # how many tables were read from the replica (for tests)

    def _invalidate(self, change: Any) -> None:
        with self._lock:
            for name in change.tables:
                self._frames.pop(name, None)

    def tables_in(self, sql: str) -> frozenset[str]:
        """The replica's tables that ``sql`` reads (by DuckDB's parser when it can)."""
        try:
            with self._lock:
                found = self._parser.get_table_names(sql)
        except Exception:  # not parseable here: fall back to matching table names
            found = set(_WORD.findall(sql))
        return frozenset(self._names[n.lower()] for n in found if n.lower() in self._names)

    def frame(self, name: str) -> Any:
        """The table as a typed pandas frame (cached until it changes)."""
        with self._lock:
            cached = self._frames.get(name)
            if cached is not None:
                return cached
            pd = self._pd
            columns, rows = table_rows(self.client, name)
            frame = pd.DataFrame.from_records(rows, columns=columns)
            declared = self.client.schema.tables[name]
            for column in declared:
                series = frame[column.name]
                kind = column.type
                if kind is ColumnType.BOOLEAN:
                    frame[column.name] = series.astype("boolean")
                elif kind is ColumnType.INTEGER:
                    frame[column.name] = series.astype("Int64")
                elif kind is ColumnType.REAL:
                    frame[column.name] = series.astype("Float64")
                elif kind is ColumnType.TIMESTAMP:
                    frame[column.name] = pd.to_datetime(series, utc=True, format="ISO8601")
                else:
                    frame[column.name] = series.astype("string")
            self._frames[name] = frame
            self.loads += 1
            return frame

    def _cursor(self, sql: str, params: Mapping[str, Any]) -> Any:
        for name in self.tables_in(sql):
            frame = self.frame(name)
            if self._registered.get(name) is not frame:
                self._con.register(name, frame)
                self._registered[name] = frame
        try:
            return self._con.execute(sql, dict(params) if params else None)
        except self._duckdb.Error as exc:
            raise QueryError(f"DuckDB: {exc}") from None

    def execute(
        self, sql: str, params: Mapping[str, Any] = {}, *, limit: int | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """(column names, rows) of ``sql``."""
        with self._lock:
            cursor = self._cursor(sql, params)
            names = [d[0] for d in cursor.description or ()]
            rows = cursor.fetchmany(limit) if limit else cursor.fetchall()
        return names, rows

    def frame_of(
        self, sql: str, params: Mapping[str, Any] = {}, *, limit: int | None = None
    ) -> Any:
        """The result of ``sql`` as a pandas DataFrame."""
        with self._lock:
            cursor = self._cursor(sql, params)
            if limit:
                names = unique_names(d[0] for d in cursor.description or ())
                return self._pd.DataFrame.from_records(cursor.fetchmany(limit), columns=names)
            return cursor.df()

    def live(self, sql: str, params: Mapping[str, Any] = {}) -> RerunLive:
        """A live result of ``sql``: re-run when a table it reads changes."""
        bound = dict(params)
        return RerunLive(
            self.client, sql, self.tables_in(sql), lambda: self.execute(sql, bound),
            engine="duckdb",
        )

    def close(self) -> None:
        self._unsubscribe()
        with self._lock:
            self._frames.clear()
            self._registered.clear()
            self._con.close()
            self._parser.close()
