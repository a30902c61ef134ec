"""Live queries: ``client.live(select(...))`` or ``client.live("SELECT ...")``.

A ``LiveQuery`` keeps the result of one query current as the replica changes: a
local mutation, a pull, a rebase. Every commit's net change reaches the live
queries that read its tables through a hook the replica calls under its lock, in
commit order; the change is queued there, and applied

- when anyone reads the result (``.rows``, ``.df``, ``.version``, ``len()``,
  ``.window()``), on the reader's thread, so that a read right after ``mutate()``
  sees the mutation, in Pyodide too where no other loop iteration ran yet;
- on the engine's loop at its next iteration otherwise, which then calls the
  subscribers with what changed (in CPython, in the engine's thread).

Rows are handed out as snapshots: ``.rows`` is a list that is replaced, never
changed, so another thread can keep reading an older one. See docs/live.md.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..core.dialect import quote
from ..core.errors import PlasmaError, QueryError, SchemaError, StorageClosed
from ..core.evaluate import Unsupported
from ..core.query import Select
from .change import Change
from .frame import FrameBuilder, Patch
from .layout import undo_table
from .outcome import call_soon
from .results import Delta, RerunResult, Result, SortedResult

if TYPE_CHECKING:
    from .engine import Engine
    from .replica import Replica

__all__ = ["LiveChange", "LiveQuery", "open_live"]

logger = logging.getLogger("plasma_nb.client")

Row = dict[str, Any]
LiveCallback = Callable[["LiveChange"], Any]

#: Commits queued for a live query nobody subscribes to before the engine's loop applies
#: them (otherwise the next read does).
LAZY_LIMIT = 64
#: Versions whose frame patches are kept for a frame nobody read yet; beyond, it is
#: rebuilt when read (as it is when the patches would touch most of its rows).
MAX_PATCHES = 256


@dataclass(frozen=True)
class LiveChange:
    """How one commit changed a live query's result.

    ``added`` and ``removed`` are rows of the result as the query returns them,
    ``changed`` ``(before, after)`` pairs of rows that are in the result before and
    after (their values changed, or they moved); ``version`` is the result's version
    after the change.
    """

    added: list[Row] = field(default_factory=list)
    removed: list[Row] = field(default_factory=list)
    changed: list[tuple[Row, Row]] = field(default_factory=list)
    version: int = 0

    def __repr__(self) -> str:
        return (
            f"LiveChange(v{self.version}: +{len(self.added)} -{len(self.removed)} "
            f"~{len(self.changed)})"
        )


class _Subscription:
    __slots__ = ("active", "callback")

    def __init__(self, callback: Callable[[Any], Any]) -> None:
        self.callback = callback
        self.active = True


class LiveQuery:
    """A query whose result stays current. Made by ``client.live(query)``.

    ``.rows`` (list of dicts), ``.df`` (pandas), ``.version``, ``.subscribe(cb)``,
    ``.window(offset, limit)``, ``.close()``.
    """

    def __init__(
        self, live_set: _LiveSet, query: Select | str,
        params: Sequence[Any] | Mapping[str, Any], result: Result,
    ) -> None:
        self._set = live_set
        self._lock = live_set.lock
        self.client: Any = None  # the Client that made it (set by client.live)
        #: Why the last refresh failed (the rows are then those before it), else None.
        self.error: str | None = None
        self.query = query
        self.params = params
        self._result = result
        self.tables: frozenset[str] = result.tables
        self.columns: list[str] = list(result.columns)
        self.key_column: str | None = result.key_column if isinstance(query, Select) else None
        self._version = 0
        self._pending: list[Change] = []
        self._snapshot: list[Row] | None = None
        self._subscriptions: list[_Subscription] = []
        self._closed = False
        # The frame: built on the first read of .df, then patched version by version.
        self._frame_lock = threading.Lock()
        self._builder: FrameBuilder | None = None
        self._frame: Any = None
        self._public: Any = None
        self._frame_version = -1
        self._patches: list[Patch] = []
        # Set under the replica's lock when .df takes its rows or patches: from then on
        # each version's patch is kept, and _patches lead from that version to _version.
        self._tracking = False
        self._patchable = False
        self._pending_keys: tuple[int, frozenset[Any]] | None = None
        self._pending_watchers: list[_Subscription] = []
        self._pending_heard: frozenset[Any] | None = None

    # -- reading -----------------------------------------------------------------------

    def _catch_up(self) -> None:
        if self._pending:
            with self._lock:
                self._refresh()

    @property
    def rows(self) -> list[Row]:
        """The current rows, as dicts (a snapshot: do not change it)."""
        self._catch_up()
        snapshot = self._snapshot
        if snapshot is None:
            with self._lock:
                snapshot = self._snapshot
                if snapshot is None:
                    snapshot = self._snapshot = list(self._result.visible())
        return snapshot

    @property
    def version(self) -> int:
        """Starts at 0; +1 each time the result changes."""
        self._catch_up()
        return self._version

    def __len__(self) -> int:
        self._catch_up()
        snapshot = self._snapshot
        if snapshot is not None:
            return len(snapshot)
        with self._lock:
            return len(self._result.visible())

    def window(self, offset: int, limit: int) -> list[Row]:
        """The rows ``offset`` to ``offset + limit`` of the current result."""
        for name, value in (("offset", offset), ("limit", limit)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise QueryError(f"window() needs a non-negative integer {name}, got {value!r}")
        self._catch_up()
        snapshot = self._snapshot
        if snapshot is not None:
            return snapshot[offset:offset + limit]
        with self._lock:
            return self._result.visible()[offset:offset + limit]

    @property
    def df(self) -> Any:
        """The rows as a pandas DataFrame, made on demand and cached per version;
        patched from the previous version's frame when the change is small."""
        self._catch_up()
        with self._frame_lock:
            builder = self._builder
            if builder is None:
                types = self._result_types()
                builder = self._builder = FrameBuilder(self.columns, types)
            with self._lock:
                version = self._version
                if self._public is not None and self._frame_version == version:
                    return self._public
                patches, self._patches = self._patches, []
                rows = None
                if self._frame is None or not self._patchable:
                    rows = list(self._result.visible())
                self._patchable = self._tracking = True
            if rows is not None:
                frame = builder.build(rows)
            else:
                try:
                    frame = builder.patch(self._frame, patches)
                except Exception:  # a value the frame's dtype refuses: start afresh
                    logger.warning("patching the frame of %r failed; rebuilding it",
                                   self.query, exc_info=True)
                    with self._lock:
                        version = self._version
                        self._patches = []
                        rows = list(self._result.visible())
                    frame = builder.build(rows)
            self._frame = frame
            self._frame_version = version
            # The frame handed out is a shallow copy: with pandas' copy-on-write, a
            # user's edit of it copies the data instead of changing the next patch's base.
            self._public = frame.copy(deep=False)
            return self._public

    def _result_types(self) -> dict[str, Any] | None:
        if not isinstance(self.query, Select):
            return None
        return {c.name: (c.type, c.nullable) for c in self.query.columns}

    @property
    def pending_keys(self) -> frozenset[Any]:
        """Keys of this query's table that pending local mutations touched (until the
        server confirms them); empty for SQL text."""
        if not isinstance(self.query, Select):
            return frozenset()
        table = self.query.table
        with self._lock:
            commits = self._set.commits
            cached = self._pending_keys
            if cached is None or cached[0] != commits:
                sql = f"SELECT {quote(table._pk.name)} FROM {quote(undo_table(table._name))}"
                try:
                    keys = frozenset(r[0] for r in self._set.replica.conn.execute(sql))
                except StorageClosed:
                    keys = frozenset() if cached is None else cached[1]
                cached = self._pending_keys = (commits, keys)
        return cached[1]

    # -- refreshing (under the replica's lock) ----------------------------------------------

    def _refresh(self) -> None:
        pending, self._pending = self._pending, []
        if not pending or self._closed:
            return
        try:
            deltas = self._result.apply(pending)
        except (PlasmaError, sqlite3.Error) as exc:
            if not isinstance(exc, StorageClosed):
                logger.exception("live query %r could not refresh", self.query)
                self.error = f"{type(exc).__name__}: {exc}"
            return
        self.error = None
        for delta in deltas:
            self._changed(delta)

    def _changed(self, delta: Delta) -> None:
        self._version += 1
        self._snapshot = None
        if self._tracking and self._patchable:
            if delta.patch is None or len(self._patches) >= MAX_PATCHES:
                self._patches = []
                self._patchable = False
            else:
                self._patches.append(delta.patch)
        if self._subscriptions:
            change = LiveChange(delta.added, delta.removed, delta.changed, self._version)
            self._set.outgoing.append((self, change))

    def _dispatch(self, change: LiveChange) -> None:
        for subscription in list(self._subscriptions):
            if not subscription.active:
                continue
            try:
                result = subscription.callback(change)
                if asyncio.iscoroutine(result):
                    asyncio.ensure_future(result).add_done_callback(_log_failure)
            except Exception:
                logger.exception("live query subscriber %r raised", subscription.callback)

    # -- subscribing and closing -----------------------------------------------------------

    def subscribe(self, callback: LiveCallback) -> Callable[[], None]:
        """Call ``callback(LiveChange)`` once per commit that changes the result, on the
        engine's loop at its next iteration; returns the function that unsubscribes."""
        if not callable(callback):
            raise TypeError(f"subscribe() needs a callable, got {callback!r}")
        if self._closed:
            raise StorageClosed("this live query is closed")
        subscription = _Subscription(callback)
        with self._lock:
            self._subscriptions.append(subscription)
            self._set.hold(self)
            if self._pending:  # changes nobody applied yet: from now on, someone listens
                self._set._dirty.add(self)
                self._set.wake()

        def unsubscribe() -> None:
            with self._lock:
                subscription.active = False
                if subscription in self._subscriptions:
                    self._subscriptions.remove(subscription)
                if not self._subscriptions:
                    self._set.release(self)

        return unsubscribe

    def on_pending(self, callback: Callable[[frozenset[Any]], Any]) -> Callable[[], None]:
        """Call ``callback(pending_keys)`` when the set of pending keys changes, such as
        when a pull confirms mutations without changing any value (which changes nothing
        ``subscribe`` reports); on the engine's loop. Returns the function that stops it."""
        if not callable(callback):
            raise TypeError(f"on_pending() needs a callable, got {callback!r}")
        if self._closed:
            raise StorageClosed("this live query is closed")
        subscription = _Subscription(callback)
        with self._lock:
            if not self._pending_watchers:
                self._pending_heard = self.pending_keys
            self._pending_watchers.append(subscription)
            self._set.watch_pending(self)

        def stop() -> None:
            with self._lock:
                subscription.active = False
                if subscription in self._pending_watchers:
                    self._pending_watchers.remove(subscription)
                if not self._pending_watchers:
                    self._set.unwatch_pending(self)

        return stop

    def _pending_changed(self) -> frozenset[Any] | None:
        """Under the lock: the new pending keys if they differ from those last reported."""
        keys = self.pending_keys
        if keys == self._pending_heard:
            return None
        self._pending_heard = keys
        return keys

    def _dispatch_pending(self, keys: frozenset[Any]) -> None:
        for subscription in list(self._pending_watchers):
            if subscription.active:
                try:
                    subscription.callback(keys)
                except Exception:
                    logger.exception("pending-keys callback %r raised", subscription.callback)

    def close(self) -> None:
        """Stop refreshing (the last rows stay readable). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._pending = []
            for subscription in self._subscriptions:
                subscription.active = False
            self._subscriptions.clear()
            for subscription in self._pending_watchers:
                subscription.active = False
            self._pending_watchers.clear()
            self._set.remove(self)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> LiveQuery:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        query = self.query if isinstance(self.query, Select) else repr(self.query)
        return f"<LiveQuery {query}: {len(self)} rows, v{self.version}{state}>"


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("live query subscriber coroutine raised", exc_info=task.exception())


class _LiveSet:
    """The live queries of one engine, and the replica hook that feeds them."""

    def __init__(
        self, replica: Replica, loop: asyncio.AbstractEventLoop,
        watch: Callable[[frozenset[str]], Callable[[], None]] | None = None,
    ) -> None:
        self.replica = replica
        self.loop = loop
        self.lock = replica.lock
        # How to have other processes sharing the file report their commits to these
        # tables (journal.py): a subscription with the engine, which watches for them.
        self._watch = watch
        self._watching: tuple[frozenset[str], Callable[[], None]] | None = None
        # Weak: a live query nobody holds (a cell run again) stops costing anything.
        # One with subscribers is held here until they unsubscribe or it is closed.
        self._by_table: dict[str, weakref.WeakSet[LiveQuery]] = {}
        self._held: set[LiveQuery] = set()
        self._dirty: weakref.WeakSet[LiveQuery] = weakref.WeakSet()
        self._pending_watched: set[LiveQuery] = set()
        self._scheduled = False
        self.commits = 0  # every commit, changes or not (pending_keys caches by it)
        self.outgoing: list[tuple[LiveQuery, LiveChange]] = []
        replica.commit_hooks.append(self._on_commit)
        journal = getattr(replica, "journal", None)
        if journal is not None:
            # Other processes' commits arrive through the journal, read at the start of a
            # write transaction here (under the lock, before its own changes): chain on.
            previous = journal.on_change

            def on_foreign(change: Change) -> None:
                self._on_commit(change)
                if previous is not None:
                    previous(change)

            journal.on_change = on_foreign
        observed = replica.observed
        # Changes are only collected when someone listens: live queries listen.
        replica.observed = lambda: observed() or any(self._by_table.values())

    def add(self, query: LiveQuery) -> None:
        for name in query.tables:
            self._by_table.setdefault(name, weakref.WeakSet()).add(query)
        self._watch_tables()

    def _watch_tables(self) -> None:
        if self._watch is None:
            return
        tables = frozenset(
            name for name, queries in self._by_table.items()
            if queries and name in self.replica.schema.tables
        )
        current = self._watching
        if current is not None and current[0] == tables:
            return
        try:
            stop = self._watch(tables) if tables else None
        except Exception:  # the engine is closing, say: this process's commits still count
            logger.warning("live queries cannot watch other processes", exc_info=True)
            return
        if current is not None:
            current[1]()
        self._watching = None if stop is None else (tables, stop)

    def remove(self, query: LiveQuery) -> None:
        for name in query.tables:
            queries = self._by_table.get(name)
            if queries is not None:
                queries.discard(query)
                if not queries:
                    del self._by_table[name]
        self._held.discard(query)
        self._pending_watched.discard(query)
        self._watch_tables()

    def watch_pending(self, query: LiveQuery) -> None:
        self._pending_watched.add(query)

    def unwatch_pending(self, query: LiveQuery) -> None:
        self._pending_watched.discard(query)

    def hold(self, query: LiveQuery) -> None:
        self._held.add(query)

    def release(self, query: LiveQuery) -> None:
        self._held.discard(query)

    def _on_commit(self, change: Change) -> None:
        """The replica's commit hook: under its lock, on the committing thread."""
        self.commits += 1
        if self._pending_watched:
            self.wake()  # any commit may confirm mutations (and so change pending keys)
        if not change or not self._by_table:
            return
        try:
            woke = False
            for name in change.tables:
                for query in self._by_table.get(name, ()):
                    pending = query._pending
                    if pending and pending[-1] is change:
                        continue  # it reads several of the tables
                    pending.append(change)
                    # Nobody listening: the next read applies the change, and the engine's
                    # thread stays asleep (waking it costs the reader the GIL). A long
                    # queue is applied anyway, so that unread queries hold little.
                    if query._subscriptions or len(pending) >= LAZY_LIMIT:
                        self._dirty.add(query)
                        woke = True
            if woke:
                self.wake()
        except Exception:  # a hook must not fail the commit
            logger.exception("live queries could not take a commit")

    def wake(self) -> None:
        """Have the engine's loop drain the dirty queries at its next iteration."""
        if not self._scheduled:
            self._scheduled = True
            call_soon(self.loop, self._drain)

    def _drain(self) -> None:
        """On the engine's loop: apply what readers have not, then tell subscribers."""
        with self.lock:
            self._scheduled = False
            dirty, self._dirty = list(self._dirty), weakref.WeakSet()
            for query in dirty:
                query._refresh()
            outgoing, self.outgoing = self.outgoing, []
            pending = []
            for query in list(self._pending_watched):
                keys = query._pending_changed()
                if keys is not None:
                    pending.append((query, keys))
        for query, change in outgoing:
            query._dispatch(change)
        for query, keys in pending:
            query._dispatch_pending(keys)


_SETS: weakref.WeakKeyDictionary[Replica, _LiveSet] = weakref.WeakKeyDictionary()


def _ignore(change: Change) -> None:
    """The engine subscription's callback: the change reaches live queries through the
    replica's commit hook already."""


def open_live(
    engine: Engine, query: Select | str,
    params: Sequence[Any] | Mapping[str, Any] | None = None, *, client: Any = None,
) -> LiveQuery:
    """``client.live(query)``: see ``LiveQuery``."""
    replica = engine.replica
    if isinstance(query, Select):
        if params:
            raise QueryError(
                "params= goes with SQL text: a select(...) carries its own values"
            )
        name = query.table._name
        info = replica.tables.get(name)
        if info is None or info.declared is None:
            raise SchemaError(f"no table named {name!r} in this client's schema")
    elif not isinstance(query, str):
        raise TypeError(f"live() takes select(...) or an SQL string, got {query!r}")
    with replica.lock:
        live_set = _SETS.get(replica)
        if live_set is None:
            watch = None
            if getattr(replica, "journal", None) is not None:
                # Another process may share the file: subscribing makes the engine ask
                # it to journal its commits, and poll for them (they then reach us as
                # part of a commit here). Without a journal, no engine subscription: it
                # would wake the engine's thread at every commit for nothing.
                def watch(tables: frozenset[str]) -> Callable[[], None]:
                    return engine.subscribers.subscribe(tables, _ignore)

            live_set = _SETS[replica] = _LiveSet(replica, engine.loop, watch)
        result: Result
        if isinstance(query, Select):
            try:
                result = SortedResult(replica, query)
            except Unsupported:
                result = RerunResult(replica, query)
            result.load()
        else:
            result = RerunResult(replica, query, params or ())
        live = LiveQuery(live_set, query, params or (), result)
        live.client = client
        live_set.add(live)
    return live
