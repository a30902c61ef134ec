"""The undo log: how to take the pending mutations back off the replica.

Pending mutations were applied one after another with nothing in between, so
undoing them all means restoring each row they touched to its value before the
*first* of them touched it. The log therefore keeps one pre-image per row (the
values, or "did not exist"): a later mutation of the same row adds nothing. A
rebase restores them all in one pass, whatever the number of mutations, then
forgets the pre-images of the rows its patch wrote (their base moved) and adds
those its replay needs; with nothing left pending it empties the log.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from ..core.dialect import quote
from .capture import shadow_name
from .layout import TableInfo, undo_table
from .replica import Replica, Write

__all__ = ["clear", "forget", "forget_pre_images", "record", "record_pre_images", "restore",
           "upsert", "upsert_sql"]

# Everything below is SQL run inside SQLite: a rebase with a thousand pending mutations
# must not pay Python for each row it takes back.


def record(w: Write, segment: int, tables: list[TableInfo]) -> None:
    """Log the pre-images of the rows ``segment`` changed, unless already logged."""
    for t in tables:
        cols = ", ".join(quote(c) for c in t.columns)
        w.conn.execute(
            f'INSERT INTO {quote(undo_table(t.name))} ("_existed", {cols}) '
            f'SELECT "_e", {cols} FROM {shadow_name(t.name)} WHERE "_seg" = ? '
            "ON CONFLICT DO NOTHING",
            (segment,),
        )


def restore(w: Write, replica: Replica, *, bulk: bool = False) -> None:
    """Undo every pending mutation's effect on the user's tables.

    ``bulk`` (for a long undo log) runs the restore without the capture triggers, and
    records first, in one statement a table, the pre-images they would have recorded.
    """
    if not bulk:
        _restore(w, replica)
        return
    capture = replica._capture
    assert capture is not None
    if capture.active:
        for t in replica.user_tables:
            _record_restored(w, t)
    with capture.bypassed(t.name for t in replica.user_tables):
        _restore(w, replica)


def _record_restored(w: Write, t: TableInfo) -> None:
    """Record the pre-images of the rows a restore writes, as the triggers would: each
    logged row that exists (deleted or set back), and each that is put back."""
    log = quote(undo_table(t.name))
    shadow = shadow_name(t.name)
    pk = quote(t.key[0])
    cols = ", ".join(quote(c) for c in t.columns)
    seg = "(SELECT seg FROM temp._plasma_seg)"
    # A table of keys alone only deletes: putting back a row that exists changes nothing.
    which = ' WHERE "_existed" = 0' if len(t.columns) == 1 else ""
    w.conn.execute(
        f'INSERT INTO {shadow} ("_seg", "_e", {cols}) SELECT {seg}, 1, {cols} '
        f"FROM main.{t.quoted} WHERE {pk} IN (SELECT {pk} FROM {log}{which}) "
        "ON CONFLICT DO NOTHING"
    )
    w.conn.execute(
        f'INSERT INTO {shadow} ("_seg", "_e", {pk}) SELECT {seg}, 0, l.{pk} FROM {log} l '
        f'WHERE l."_existed" = 1 AND NOT EXISTS (SELECT 1 FROM main.{t.quoted} r '
        f"WHERE r.{pk} = l.{pk}) ON CONFLICT DO NOTHING"
    )


def _restore(w: Write, replica: Replica) -> None:
    for t in replica.user_tables:
        log = quote(undo_table(t.name))
        pk = quote(t.key[0])
        w.conn.execute(
            f'DELETE FROM {t.quoted} WHERE {pk} IN (SELECT {pk} FROM {log} '
            'WHERE "_existed" = 0)'
        )
        cols = ", ".join(quote(c) for c in t.columns)
        sets = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in t.columns if c != t.key[0])
        conflict = f"DO UPDATE SET {sets}" if sets else "DO NOTHING"
        w.conn.execute(
            f'INSERT INTO {t.quoted} ({cols}) SELECT {cols} FROM {log} WHERE "_existed" = 1 '
            f"ON CONFLICT ({pk}) {conflict}"
        )


def upsert(w: Write, t: TableInfo, values: dict[str, Any]) -> None:
    """Insert or overwrite one stored row (the given columns)."""
    w.conn.execute(upsert_sql(t, tuple(values)), list(values.values()))


_UPSERTS: dict[tuple[str, tuple[str, ...]], str] = {}


def upsert_sql(t: TableInfo, names: tuple[str, ...]) -> str:
    sql = _UPSERTS.get((t.name, names))
    if sql is not None:
        return sql
    cols = ", ".join(quote(n) for n in names)
    marks = ", ".join("?" for _ in names)
    updates = [n for n in names if n not in t.key]
    sql = f"INSERT INTO {t.quoted} ({cols}) VALUES ({marks})"
    conflict = ", ".join(quote(k) for k in t.key)
    if updates:
        sets = ", ".join(f"{quote(n)} = excluded.{quote(n)}" for n in updates)
        sql += f" ON CONFLICT ({conflict}) DO UPDATE SET {sets}"
    else:
        sql += f" ON CONFLICT ({conflict}) DO NOTHING"
    if len(_UPSERTS) > 1024:
        _UPSERTS.clear()
    _UPSERTS[(t.name, names)] = sql
    return sql


def clear(w: Write, replica: Replica) -> None:
    for t in replica.user_tables:
        w.conn.execute(f"DELETE FROM {quote(undo_table(t.name))}")


def record_pre_images(
    w: Write, t: TableInfo, keys: Iterable[Any], *, watched: bool = True, segment: int = 1
) -> None:
    """Record in ``segment`` (the current one), as the capture triggers would before a
    write, the pre-images of the rows of ``t`` with these keys (their values, or "did not
    exist"): one statement for them all, ahead of writes that run without the triggers.

    Rows the undo log has are left out when nothing else reads the capture (not
    ``watched``: ``record`` adds nothing for them), or when an earlier segment holds them
    too (the net change takes each row's earliest pre-image).
    """
    cols = ", ".join("j.value" if c == t.key[0] else f"r.{quote(c)}" for c in t.columns)
    pk = quote(t.key[0])
    shadow = shadow_name(t.name)
    where = f"NOT EXISTS (SELECT 1 FROM {quote(undo_table(t.name))} u WHERE u.{pk} = j.value)"
    if watched:
        where += (f' OR NOT EXISTS (SELECT 1 FROM {shadow} s WHERE s.{pk} = j.value '
                  f'AND s."_seg" < {int(segment)})')
    w.conn.execute(
        f'INSERT INTO {shadow} ("_seg", "_e", {", ".join(quote(c) for c in t.columns)}) '
        f"SELECT {int(segment)}, r.{pk} IS NOT NULL, {cols} "
        f"FROM json_each(?) j LEFT JOIN main.{t.quoted} r ON r.{pk} = j.value "
        f"WHERE {where} ON CONFLICT DO NOTHING",
        (json.dumps(list(keys)),),
    )


def forget_pre_images(w: Write, t: TableInfo, segment: int, keys: list[Any]) -> None:
    """Drop the pre-images recorded in ``segment`` of the rows of ``t`` with those keys
    (recorded ahead for writes that did not happen after all)."""
    w.conn.execute(
        f'DELETE FROM {shadow_name(t.name)} WHERE "_seg" = ? AND {quote(t.key[0])} IN '
        "(SELECT value FROM json_each(?))",
        (segment, json.dumps(keys)),
    )


def forget(w: Write, replica: Replica, keys: dict[str, list[Any]]) -> None:
    """Drop the pre-images of the rows a patch wrote, keeping the others.

    After a rebase's restore, every logged row holds its logged value, the base state. A
    patch moves the base of the rows it writes, so their pre-images are stale: the
    replay logs them again if it touches them. Every other logged row still holds its
    base value, whether or not a pending mutation still touches it, so keeping its entry
    is harmless (restoring it changes nothing), and spares the rebase of a long outbox
    deleting and rewriting its whole undo log.
    """
    for name, wanted in keys.items():
        t = replica.tables[name]
        if wanted:
            w.conn.execute(
                f"DELETE FROM {quote(undo_table(name))} WHERE {quote(t.key[0])} IN "
                "(SELECT value FROM json_each(?))",
                (json.dumps(wanted),),
            )
