"""Tabs that share one IndexedDB database: how a tab takes in the others' writes.

Each tab (or Pyodide kernel) that opens a database is its own client, with its own
client id and its own in-memory replica; IndexedDB is the shared state. The
storage (storage/indexeddb.py) serializes writes to it with a Web Lock and keeps a
journal of the keys each write changed. When a tab finds, holding the lock, that
others wrote since it last looked, it calls ``Tabs.integrate`` with the rows now in
IndexedDB under those keys and under every key its own unwritten commits touched.
Those unwritten commits are only ever its own local mutations (everything else a
client writes happens inside ``storage.exclusive()``, caught up) and, perhaps, blob
upload queue entries. In one write transaction, integrate:

1. sets each of those rows to IndexedDB's value: the replica is now exactly the
   shared state (its own unwritten mutations are undone, the others' writes in);
2. queues the tab's unwritten mutations again after everyone else's (new local
   seqs, the same client and mutation ids while this client is still registered)
   and replays them, recording their undo pre-images: the rebase path of rebase.py;
3. puts back the blob upload entries it had queued.

Subscribers and live queries then hear one net change, and handles waiting on a
verdict that another tab's pull recorded are settled. The transaction's record is
what the storage writes, so IndexedDB only ever holds a state that one tab computed
whole, never two tabs' rebases interleaved.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..core.mutators import Context
from . import clients, outbox
from .outbox import Entry
from .rebase import replay
from .replica import Replica, Write
from .storage.base import CommitRecord, Key, Row
from .storage.indexeddb import Foreign, IndexedDBStorage
from .undo import upsert_sql

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["Tabs", "attach"]

logger = logging.getLogger("plasma_nb.client")

OUTBOX = "_plasma_outbox"
#: Internal tables whose rows a tab may write without the lock and puts back after
#: a rebase (keyed by content hash: no other tab's write conflicts with them).
REAPPLIED = ("_plasma_blob_uploads",)


class Tabs:
    """One tab's side of a shared IndexedDB database."""

    def __init__(self, storage: IndexedDBStorage, engine: Engine) -> None:
        self.storage = storage
        self.engine = engine
        self.replica: Replica = engine.replica
        #: Rebases onto other tabs' writes so far.
        self.rebases = 0

    def integrate(self, foreign: Foreign, queued: list[CommitRecord]) -> None:
        rows, everything = foreign
        engine = self.engine
        replica = self.replica
        if engine.closed and not queued:
            return  # closing, nothing of its own to write: other tabs' news can wait
        with replica.lock:
            conn = replica.conn
            mine = sorted({key[0] for record in queued for key in record.puts.get(OUTBOX, {})})
            by_seq = {e.seq: e for e in outbox.entries(conn)}
            own = [by_seq[s] for s in mine if s in by_seq]
            kept: dict[str, dict[Key, Row | None]] = {}
            for record in queued:
                for table in REAPPLIED:
                    for key, row in record.puts.get(table, {}).items():
                        kept.setdefault(table, {})[key] = row
                    for key in record.deletes.get(table, ()):
                        kept.setdefault(table, {})[key] = None
            with replica.write() as w:
                w.segment(0)
                _reset(w, replica, rows, everything)
                for table, values in kept.items():
                    _set_rows(w, replica, table, values)
                remap = self._requeue(w, own) if own else {}
            self.rebases += 1
        _remap(engine, remap)
        engine.subscribers.notify(w.change)
        engine.settle_from_replica()

    def _requeue(self, w: Write, own: list[Entry]) -> dict[int, int]:
        """Queue this tab's unwritten mutations again, after the others', and replay them."""
        sync = self.engine.sync
        now = sync.now_ms()
        client_id = clients.ensure_client(w, sync.client_id, now)
        sync.client_id = client_id
        remap: dict[int, int] = {}
        entries = []
        for e in own:
            mutation_id = clients.next_mutation_id(w, client_id)
            seq = outbox.append(w, client_id, mutation_id, e.name, e.args_json, e.timestamp)
            remap[e.seq] = seq
            entries.append(Entry(seq, client_id, mutation_id, e.name, e.args_json, e.timestamp))
        traces = sync.traces
        moved = {new: traces.pop(old) for old, new in remap.items() if old in traces}
        traces.update(moved)
        ctx = Context(user=w.get_meta("user"))
        replay(w, self.replica, sync.mutators, entries, ctx, traces)
        return remap


def attach(engine: Engine) -> Tabs | None:
    """Let the engine's IndexedDB storage rebase onto other tabs' writes."""
    storage = engine.replica.storage
    if not isinstance(storage, IndexedDBStorage):
        return None
    tabs = Tabs(storage, engine)
    storage.integrate = tabs.integrate
    return tabs


def _reset(
    w: Write, replica: Replica, rows: dict[str, dict[Key, Row | None]], everything: bool
) -> None:
    """Set the given rows to IndexedDB's values (with ``everything``, the whole replica)."""
    for name, t in replica.tables.items():
        values = rows.get(name, {})
        if everything:
            keys = ", ".join(f'"{k}"' for k in t.key)
            present = {tuple(r) for r in w.conn.execute(f"SELECT {keys} FROM {t.quoted}")}
            for key in present - set(values):
                _delete(w, t.quoted, t.key, key)
        if values:
            _set_rows(w, replica, name, values)


def _set_rows(w: Write, replica: Replica, name: str, values: dict[Key, Row | None]) -> None:
    t = replica.tables.get(name)
    if t is None:
        return  # a table this schema no longer has
    known = set(t.columns)
    for key, row in values.items():
        if row is None:
            _delete(w, t.quoted, t.key, key)
            continue
        names = tuple(c for c in row if c in known)
        w.conn.execute(upsert_sql(t, names), [row[c] for c in names])


def _delete(w: Write, table: str, key_columns: Iterable[str], key: Key) -> None:
    where = " AND ".join(f'"{k}" = ?' for k in key_columns)
    w.conn.execute(f"DELETE FROM {table} WHERE {where}", list(key))


def _remap(engine: Engine, remap: dict[int, int]) -> None:
    """Handles wait on their entry's seq: follow the entries that were queued again."""
    if not remap:
        return
    with engine._confirmations_lock:
        confirmations = engine._confirmations
        moved: dict[int, Any] = {
            new: confirmations.pop(old) for old, new in remap.items() if old in confirmations
        }
        confirmations.update(moved)

