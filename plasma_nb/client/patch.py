"""Applying a pull's patch to the replica, fast enough for a 10k-row snapshot.

The operations are checked and turned into statement parameters in one Python pass
(``WireDecoder`` does a well-typed row in a few dict lookups), then sent to SQLite in
runs: consecutive puts (or dels) of one table go in one ``executemany``.

How the patch's effect is captured depends on its size and on who needs it:

- a small patch runs under the capture triggers like any other write (capture.py);
- from ``BULK_PATCH`` operations on, the triggers of the tables it writes are dropped
  for its duration (a trigger costs a few microseconds a row even when it records
  nothing), and its pre-images, if anyone needs them, are recorded in bulk beforehand
  with one ``INSERT ... SELECT`` a table;
- a big patch with nothing pending under it, watched only by this process's own
  subscribers (no storage records, no other process's watchers), computes its net
  change itself: it reads the rows it is about to overwrite, and knows the rows it
  writes, so nothing is recorded and nothing is read back (``direct=True``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..core.dialect import quote
from ..core.errors import MutationError, ProtocolError
from ..core.protocol import ClearOp, DelOp, PatchOp, PutOp, split_key
from . import undo
from .change import Change
from .layout import TableInfo
from .replica import Replica, Row, Write

__all__ = ["BULK_PATCH", "Applied", "apply_patch", "patch_rows"]

#: From this many operations on, a patch runs without the capture triggers: dropping
#: and recreating them costs a fraction of a millisecond, a trigger per row a few
#: microseconds.
BULK_PATCH = 256

_UNKNOWN: Any = object()  # a table not looked up yet; a row whose final values are unknown

Runs = list[tuple[str | None, list[tuple[Any, ...]]]]  # (sql, params); sql None: clear


class _Target:
    """One table a patch writes to: its statements, and what each key ends up as."""

    __slots__ = ("decode", "delete", "final", "info", "key_index", "upsert")

    def __init__(self, replica: Replica, info: TableInfo) -> None:
        self.info = info
        decoder = replica.wire_decoder(info.name)
        self.decode = decoder.convert
        self.key_index = decoder.key_index
        self.upsert = undo.upsert_sql(info, info.columns)
        self.delete = f'DELETE FROM {info.quoted} WHERE {quote(info.key[0])} = ?'
        # Each key the patch writes, in order: its stored row after the patch, None if
        # deleted, _UNKNOWN if written with some columns only (defaults fill the rest).
        self.final: dict[Any, Any] = {}


@dataclass
class Applied:
    """What ``apply_patch`` did: the keys it wrote by table, whether it held a ``clear``,
    and, in the direct way, its net change (else None: the capture has it)."""

    keys: dict[str, list[Any]]
    cleared: bool
    change: Change | None = None


def apply_patch(
    w: Write, replica: Replica, patch: Sequence[PatchOp], *, direct: bool = False
) -> Applied:
    """Apply a patch's operations in order.

    With ``direct=True`` (nothing else in the transaction writes user tables) a big patch
    works out its own net change and records no pre-images.
    """
    runs: Runs = []
    targets: dict[str, _Target | None] = {}
    current: list[tuple[Any, ...]] = []
    last_sql: str | None = None
    cleared = False
    for index, op in enumerate(patch):
        kind = type(op)
        if kind is not PutOp and kind is not DelOp:
            assert isinstance(op, ClearOp)
            runs.append((None, []))
            last_sql = None
            cleared = True
            for t in targets.values():
                if t is not None:
                    t.final = dict.fromkeys(t.final)  # all deleted; later puts come back
            continue
        key = op.key  # type: ignore[union-attr]
        name, slash, pk_text = key.partition("/")
        if not slash or not name:
            split_key(key, field=f"patch[{index}].key")  # raises, naming the operation
        target = targets.get(name, _UNKNOWN)
        if target is _UNKNOWN:
            info = replica.tables.get(name)
            # A table this client's schema does not have (a newer server): not ours to show.
            target = targets[name] = (
                _Target(replica, info) if info is not None and info.declared is not None
                else None
            )
        if target is None:
            continue
        if kind is DelOp:
            pk = _pk(target.info, pk_text, index, key)
            sql, params, after = target.delete, (pk,), None
        else:
            params = target.decode(op.value, pk_text)  # type: ignore[union-attr]
            if params is not None:
                sql, pk, after = target.upsert, params[target.key_index], params
            else:
                sql, params, pk = _checked_put(replica, target.info, op, index)  # type: ignore[arg-type]
                after = _UNKNOWN
        target.final[pk] = after
        if sql is not last_sql:
            current = []
            runs.append((sql, current))
            last_sql = sql
        current.append(params)
    written = [t for t in targets.values() if t is not None]
    applied = Applied({t.info.name: list(t.final) for t in written}, cleared)
    if len(patch) < BULK_PATCH:
        _execute(w, replica, runs)
        return applied
    capture = replica._capture
    assert capture is not None
    tables = [t.name for t in replica.user_tables] if cleared else [t.info.name for t in written]
    if direct and capture.active:
        before = _read_before(w, replica, written, cleared)
        with capture.bypassed(tables):
            _execute(w, replica, runs)
        applied.change = _net_change(w, replica, written, before, cleared)
        return applied
    # Pre-images first, all of them before any write: the state the patch starts from.
    if cleared:
        for name in tables:
            capture.record_all(name)
    for t in written:
        capture.record_keys(t.info.name, list(t.final))
    with capture.bypassed(tables):
        _execute(w, replica, runs)
    return applied


def patch_rows(replica: Replica, patch: Sequence[PatchOp]) -> set[tuple[str, Any]] | None:
    """The (table, key) rows of the user's tables that ``patch`` writes, worked out before
    applying it; None for a patch with a ``clear`` (every row) or a key that is not one
    (``apply_patch`` then says what is wrong with it)."""
    rows: set[tuple[str, Any]] = set()
    for op in patch:
        if type(op) is ClearOp:
            return None
        name, slash, pk_text = op.key.partition("/")  # type: ignore[union-attr]
        info = replica.tables.get(name)
        if info is None or info.declared is None:
            continue  # not a table of this client's: apply_patch ignores it too
        try:
            rows.add((name, info.declared._pk_from_text(pk_text)))
        except MutationError:
            return None
    return rows


def _execute(w: Write, replica: Replica, runs: Runs) -> None:
    conn = w.conn
    for sql, params in runs:
        if sql is None:
            for info in replica.user_tables:
                conn.execute(f"DELETE FROM {info.quoted}")
        elif len(params) == 1:
            conn.execute(sql, params[0])
        else:
            conn.executemany(sql, params)


# -- the direct net change --------------------------------------------------------------


def _select(info: TableInfo, where: str = "") -> str:
    cols = ", ".join(quote(c) for c in info.columns)
    return f"SELECT {cols} FROM {info.quoted}{where}"


def _rows_by_key(
    w: Write, info: TableInfo, keys: list[Any] | None
) -> dict[Any, tuple[Any, ...]]:
    """Stored rows of ``info`` by primary key: those with ``keys``, or all (None)."""
    key_index = info.columns.index(info.key[0])
    if keys is None:
        cur = w.conn.execute(_select(info))
    elif not keys:
        return {}
    else:
        where = f" WHERE {quote(info.key[0])} IN (SELECT value FROM json_each(?))"
        cur = w.conn.execute(_select(info, where), (json.dumps(keys),))
    return {row[key_index]: row for row in cur}


def _read_before(
    w: Write, replica: Replica, written: list[_Target], cleared: bool
) -> dict[str, dict[Any, tuple[Any, ...]]]:
    """The rows the patch may change, as they are before it: those with the keys it
    writes, and after a ``clear`` every row of every table."""
    if cleared:
        return {info.name: _rows_by_key(w, info, None) for info in replica.user_tables}
    return {t.info.name: _rows_by_key(w, t.info, list(t.final)) for t in written}


def _net_change(
    w: Write, replica: Replica, written: list[_Target],
    before: dict[str, dict[Any, tuple[Any, ...]]], cleared: bool,
) -> Change:
    added: dict[str, list[Row]] = {}
    removed: dict[str, list[Row]] = {}
    changed: dict[str, list[tuple[Row, Row]]] = {}
    finals = {t.info.name: t.final for t in written}
    for name, rows_before in before.items():
        decode = replica._decoders[name]
        final = finals.get(name, {})
        unknown = [pk for pk, after in final.items() if after is _UNKNOWN]
        if unknown:
            info = replica.tables[name]
            final.update(_rows_by_key(w, info, unknown))
        new: list[Row] = []
        gone: list[Row] = []
        differ: list[tuple[Row, Row]] = []
        for pk, after in final.items():
            old = rows_before.pop(pk, None)
            if old is None:
                if after is not None:
                    new.append(decode(after))
            elif after is None:
                gone.append(decode(old))
            elif old != after:
                differ.append((decode(old), decode(after)))
        if cleared:  # rows the patch did not write again are gone
            gone.extend(map(decode, rows_before.values()))
        if new:
            added[name] = new
        if gone:
            removed[name] = gone
        if differ:
            changed[name] = differ
    return Change(added, removed, changed)


# -- checks -------------------------------------------------------------------------------


def _checked_put(
    replica: Replica, t: TableInfo, op: PutOp, index: int
) -> tuple[str, tuple[Any, ...], Any]:
    """The slow path of a put: names what is wrong, and takes rows with missing or extra
    columns. Returns the statement, its parameters and the key."""
    _, _, pk_text = op.key.partition("/")
    pk = _pk(t, pk_text, index, op.key)
    declared = t.declared
    assert declared is not None
    known = {n: v for n, v in op.value.items() if n in declared._columns}
    try:
        row = declared._row_from_wire(known)
    except MutationError as exc:
        raise ProtocolError(f"patch[{index}]", f"{op.key}: {exc.message}") from None
    row[t.key[0]] = pk
    columns = declared._columns
    stored = {n: replica.dialect.to_db(columns[n].type, v) for n, v in row.items()}
    return undo.upsert_sql(t, tuple(stored)), tuple(stored.values()), pk


def _pk(t: TableInfo, text: str, index: int, key: str) -> Any:
    assert t.declared is not None
    try:
        return t.declared._pk_from_text(text)
    except MutationError as exc:
        raise ProtocolError(f"patch[{index}]", f"{key}: {exc.message}") from None
