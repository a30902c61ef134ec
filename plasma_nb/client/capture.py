"""Change capture: which rows a write transaction touched, and what they were before.

Every replica table gets a TEMP shadow table and three TEMP triggers. TEMP
objects belong to this connection only, so writes by other processes on a shared
file are not captured here (they capture their own), and nothing is persisted.
A trigger records the first pre-image of each row per *segment*: the engine
numbers the steps of a transaction (segment 0 for a patch, one segment per
replayed mutation), which yields both the undo log of each mutation (its
segment's pre-images) and the transaction's net change (each row's pre-image in
the earliest segment that touched it, against the row as it is now).

Triggers run inside SQLite, so a 10k-row patch costs no Python per row here;
savepoints roll the shadow rows back together with the writes they describe.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any

from ..core.dialect import quote
from .layout import TableInfo

__all__ = ["Capture", "Touched"]

SHADOW_PREFIX = "_plasma_pre_"


def shadow_name(table: str) -> str:
    return quote(SHADOW_PREFIX + table)


# One row a transaction touched: its key, and its values before and after, in column
# order as SQLite stores them (None when the row did not exist).
Touched = tuple[tuple[Any, ...], tuple[Any, ...] | None, tuple[Any, ...] | None]


class Capture:
    """The shadow tables and triggers of one connection."""

    def __init__(self, conn: sqlite3.Connection, tables: Iterable[TableInfo]) -> None:
        self._conn = conn
        self._tables = {t.name: t for t in tables}
        self._touched_sql: dict[str, str] = {}

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
            conn.execute(
                f'CREATE TEMP TABLE IF NOT EXISTS {shadow} ("_seg" INTEGER NOT NULL, '
                f'"_e" INTEGER NOT NULL, {cols}, PRIMARY KEY ("_seg", {keys}))'
            )
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
                conn.execute(
                    f"CREATE TEMP TRIGGER IF NOT EXISTS {trigger} AFTER {event} "
                    f"ON main.{quote(t.name)} WHEN (SELECT active FROM temp._plasma_seg) "
                    f"BEGIN {body}; END"
                )
            on = " AND ".join(f"t.{quote(k)} = s.{quote(k)}" for k in t.key)
            before_cols = ", ".join(f"s.{quote(c)}" for c in t.columns)
            after_cols = ", ".join(f"t.{quote(c)}" for c in t.columns)
            self._touched_sql[t.name] = (
                f'SELECT s."_e", {before_cols}, {after_cols} FROM {shadow} s '
                f'LEFT JOIN main.{quote(t.name)} t ON {on} ORDER BY s."_seg"'
            )

    def reset(self) -> None:
        """Forget what earlier transactions touched (called at each BEGIN)."""
        for name in self._tables:
            self._conn.execute(f"DELETE FROM {shadow_name(name)}")
        self._conn.execute("UPDATE temp._plasma_seg SET seg = 0, active = 1")

    def segment(self, number: int, *, active: bool = True) -> None:
        """Attribute the writes that follow to segment ``number``; ``active=False``
        records nothing for them (a patch nobody watches needs no pre-images)."""
        self._conn.execute(
            "UPDATE temp._plasma_seg SET seg = ?, active = ?", (number, int(active))
        )

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
        t = self._tables[table]
        n = len(t.columns)
        key_index = [t.columns.index(k) for k in t.key]
        out: dict[tuple[Any, ...], Touched] = {}
        # Ordered by segment: the first pre-image of a key is the transaction's.
        for row in self._conn.execute(self._touched_sql[table]):
            key = tuple(row[1 + i] for i in key_index)
            if key in out:
                continue
            before = row[1:1 + n] if row[0] else None
            after = row[1 + n:] if row[1 + n + key_index[0]] is not None else None
            out[key] = (key, before, after)
        return list(out.values())
