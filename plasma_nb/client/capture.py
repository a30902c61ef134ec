"""Change capture: which rows a write transaction touched, and what they were before.

Every replica table gets a TEMP shadow table and three TEMP triggers. TEMP
objects belong to this connection only, so writes by other processes on a shared
file are not captured here (they capture their own), and nothing is persisted.
A trigger records the first pre-image of each row per *segment*: the engine
numbers the steps of a transaction (segment 0 for the undo and the patch of a
rebase, segment 1 for mutations, applied or replayed), which yields both the undo
log (segment 1's pre-images) and the transaction's net change (each row's
pre-image in the earliest segment that touched it, against the row as it is now).

Triggers run inside SQLite, so a patch costs no Python per row here; savepoints
roll the shadow rows back together with the writes they describe. A big patch
goes further: its triggers are dropped for its duration and its pre-images are
recorded in bulk (``bypassed``, ``record_keys``; patch.py).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from ..core.dialect import quote
from .layout import TableInfo

__all__ = ["Capture", "NetChange", "Touched", "first_pre_images_sql", "net_rows", "shadow_name"]

SHADOW_PREFIX = "_plasma_pre_"


def shadow_name(table: str) -> str:
    return quote(SHADOW_PREFIX + table)


# One row a transaction touched: its key, and its values before and after, in column
# order as SQLite stores them (None when the row did not exist).
Touched = tuple[tuple[Any, ...], tuple[Any, ...] | None, tuple[Any, ...] | None]
# What a transaction did to one table: rows added, rows removed, (before, after) pairs.
NetChange = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]],
                  list[tuple[tuple[Any, ...], tuple[Any, ...]]]]


class Capture:
    """The shadow tables and triggers of one connection."""

    def __init__(self, conn: sqlite3.Connection, tables: Iterable[TableInfo]) -> None:
        self._conn = conn
        self._tables = {t.name: t for t in tables}
        self._touched_sql: dict[str, str] = {}
        self._net_sql: dict[str, tuple[str, str, str]] = {}
        self._triggers: dict[str, list[tuple[str, str]]] = {}
        #: Whether the current segment records pre-images (see ``segment``).
        self.active = True

    def install(self) -> None:
        conn = self._conn
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS _plasma_seg "
            "(seg INTEGER NOT NULL, active INTEGER NOT NULL)"
        )
        if conn.execute("SELECT count(*) FROM temp._plasma_seg").fetchone()[0] == 0:
            conn.execute("INSERT INTO temp._plasma_seg VALUES (0, 1)")
        for t in self._tables.values():
            shadow = shadow_name(t.name)
            cols = ", ".join(quote(c) for c in t.columns)
            keys = ", ".join(quote(k) for k in t.key)
            # Keyed by row first, so that each row's earliest segment is found by index.
            conn.execute(
                f'CREATE TEMP TABLE IF NOT EXISTS {shadow} ("_seg" INTEGER NOT NULL, '
                f'"_e" INTEGER NOT NULL, {cols}, PRIMARY KEY ({keys}, "_seg")) WITHOUT ROWID'
            )
            triggers = self._triggers[t.name] = []
            for event, row, existed in (
                ("INSERT", "NEW", 0), ("UPDATE", "OLD", 1), ("DELETE", "OLD", 1)
            ):
                names = t.key if existed == 0 else t.columns
                values = ", ".join(f"{row}.{quote(c)}" for c in names)
                # ON CONFLICT DO NOTHING keeps the first pre-image per segment. Not
                # INSERT OR IGNORE: an outer upsert's conflict policy would override it.
                body = (
                    f'INSERT INTO {shadow} ("_seg", "_e", {", ".join(quote(c) for c in names)}) '
                    f"VALUES ((SELECT seg FROM temp._plasma_seg), {existed}, {values}) "
                    "ON CONFLICT DO NOTHING"
                )
                trigger = quote(f"_plasma_{event[0].lower()}_{t.name}")
                sql = (
                    f"CREATE TEMP TRIGGER IF NOT EXISTS {trigger} AFTER {event} "
                    f"ON main.{quote(t.name)} WHEN (SELECT active FROM temp._plasma_seg) "
                    f"BEGIN {body}; END"
                )
                conn.execute(sql)
                triggers.append((trigger, sql))
            first = first_pre_images_sql(t)
            on = " AND ".join(f"t.{quote(k)} = f.{quote(k)}" for k in t.key)
            before_cols = ", ".join(f"f.{quote(c)}" for c in t.columns)
            after_cols = ", ".join(f"t.{quote(c)}" for c in t.columns)
            table = f"main.{quote(t.name)}"
            self._touched_sql[t.name] = (
                f'SELECT f."_e", {before_cols}, {after_cols} FROM ({first}) f '
                f"LEFT JOIN {table} t ON {on}"
            )
            # The net change by kind, each row's first pre-image found by index ("no
            # earlier segment touched it"), so no query groups or sorts the shadow table.
            same = " AND ".join(f"f.{quote(c)} IS t.{quote(c)}" for c in t.columns)
            earlier = " AND ".join(f"e.{quote(k)} = f.{quote(k)}" for k in t.key)
            first_only = (
                f'NOT EXISTS (SELECT 1 FROM {shadow} e WHERE {earlier} AND e."_seg" < f."_seg")'
            )
            pk = quote(t.key[0])
            self._net_sql[t.name] = (
                f"SELECT {after_cols} FROM {shadow} f JOIN {table} t ON {on} "
                f'WHERE f."_e" = 0 AND {first_only}',
                f"SELECT {before_cols} FROM {shadow} f LEFT JOIN {table} t ON {on} "
                f'WHERE f."_e" = 1 AND t.{pk} IS NULL AND {first_only}',
                f"SELECT {before_cols}, {after_cols} FROM {shadow} f JOIN {table} t ON {on} "
                f'WHERE f."_e" = 1 AND NOT ({same}) AND {first_only}',
            )

    def reset(self) -> None:
        """Forget what earlier transactions touched (called at each BEGIN)."""
        for name in self._tables:
            self._conn.execute(f"DELETE FROM {shadow_name(name)}")
        self._conn.execute("UPDATE temp._plasma_seg SET seg = 0, active = 1")
        self.active = True

    def segment(self, number: int, *, active: bool = True) -> None:
        """Attribute the writes that follow to segment ``number``; ``active=False``
        records nothing for them (a patch nobody watches needs no pre-images)."""
        self._conn.execute(
            "UPDATE temp._plasma_seg SET seg = ?, active = ?", (number, int(active))
        )
        self.active = active

    # -- big patches: pre-images in bulk instead of row by row --------------------------

    @contextmanager
    def bypassed(self, tables: Iterable[str]) -> Iterator[None]:
        """Run the block with no triggers on ``tables``: a 10k-row patch then pays
        neither a trigger per row nor its WHEN test. The caller records the pre-images
        first, with ``record_keys`` and ``record_all``. (TEMP schema changes are part of
        the transaction: a rollback restores the triggers too.)"""
        names = [name for name in tables if name in self._triggers]
        conn = self._conn
        for name in names:
            for trigger, _sql in self._triggers[name]:
                conn.execute(f"DROP TRIGGER IF EXISTS temp.{trigger}")
        try:
            yield
        finally:
            for name in names:
                for _trigger, sql in self._triggers[name]:
                    conn.execute(sql)

    def record_keys(self, table: str, keys: list[Any]) -> None:
        """Record, as the triggers would, the pre-images of the rows of ``table`` with the
        given primary keys, before a block that writes them (single-column keys)."""
        if not self.active or not keys:
            return
        t = self._tables[table]
        shadow = shadow_name(table)
        cols = ", ".join(quote(c) for c in t.columns)
        pk = quote(t.key[0])
        listed = json.dumps(keys)
        self._conn.execute(
            f'INSERT INTO {shadow} ("_seg", "_e", {cols}) '
            f'SELECT (SELECT seg FROM temp._plasma_seg), 1, {cols} FROM main.{quote(table)} '
            f"WHERE {pk} IN (SELECT value FROM json_each(?)) ON CONFLICT DO NOTHING",
            (listed,),
        )
        self._conn.execute(
            f'INSERT INTO {shadow} ("_seg", "_e", {pk}) '
            "SELECT (SELECT seg FROM temp._plasma_seg), 0, value FROM json_each(?) "
            "WHERE true ON CONFLICT DO NOTHING",
            (listed,),
        )

    def record_all(self, table: str) -> None:
        """Record the pre-image of every row of ``table`` (before a ``clear``)."""
        if not self.active:
            return
        t = self._tables[table]
        cols = ", ".join(quote(c) for c in t.columns)
        self._conn.execute(
            f'INSERT INTO {shadow_name(table)} ("_seg", "_e", {cols}) '
            f'SELECT (SELECT seg FROM temp._plasma_seg), 1, {cols} FROM main.{quote(table)} '
            "WHERE true ON CONFLICT DO NOTHING"
        )

    # -- reading ------------------------------------------------------------------------

    def pre_images(
        self, table: str, segment: int
    ) -> Iterator[tuple[tuple[Any, ...], dict[str, Any] | None]]:
        """(key, row before or None) of each row ``segment`` touched in ``table``."""
        t = self._tables[table]
        cur = self._conn.execute(
            f'SELECT "_e", {", ".join(quote(c) for c in t.columns)} '
            f'FROM {shadow_name(table)} WHERE "_seg" = ?',
            (segment,),
        )
        key_index = [t.columns.index(k) for k in t.key]
        for existed, *values in cur:
            key = tuple(values[i] for i in key_index)
            yield key, (dict(zip(t.columns, values, strict=True)) if existed else None)

    def touched(self, table: str) -> list[Touched]:
        """Every row the transaction touched in ``table``, with its net before/after."""
        return net_rows(self._conn.execute(self._touched_sql[table]), self._tables[table])

    def net_change(self, table: str) -> NetChange:
        """The rows of ``table`` that the transaction added, removed and changed (as
        stored; single-column keys). Rows it changed and changed back are left out."""
        added, removed, changed = self._net_sql[table]
        conn = self._conn
        n = len(self._tables[table].columns)
        pairs = [(row[:n], row[n:]) for row in conn.execute(changed)]
        return conn.execute(added).fetchall(), conn.execute(removed).fetchall(), pairs


def first_pre_images_sql(t: TableInfo) -> str:
    """A query of each row's first pre-image in the transaction (its earliest segment):
    columns ``_seg``, ``_e`` and the table's. SQLite takes the bare columns of a
    ``min()`` aggregate from the row that holds the minimum."""
    cols = ", ".join(quote(c) for c in t.columns)
    keys = ", ".join(quote(k) for k in t.key)
    return f'SELECT min("_seg") AS "_seg", "_e", {cols} FROM {shadow_name(t.name)} GROUP BY {keys}'


def net_rows(rows: Iterable[tuple[Any, ...]], t: TableInfo) -> list[Touched]:
    """Each key's net (key, before, after) from rows ``(existed, *before, *after)``
    ordered oldest first: the first pre-image of a key against the row as it is now
    (the *after* columns come from a LEFT JOIN with the table: all NULL if gone)."""
    n = len(t.columns)
    key_index = [t.columns.index(k) for k in t.key]
    out: dict[tuple[Any, ...], Touched] = {}
    for row in rows:
        key = tuple(row[1 + i] for i in key_index)
        if key in out:
            continue
        before = row[1:1 + n] if row[0] else None
        after = row[1 + n:] if row[1 + n + key_index[0]] is not None else None
        out[key] = (key, before, after)
    return list(out.values())
