"""Changes to the replica, and the subscribers that hear about them.

A ``Change`` is the net effect of one local commit on the user's tables: rows
that appeared, rows that disappeared, and rows whose values differ, each as the
row dict a query returns. A row that a commit changed and changed back (a rebase
that replays the same optimistic edit) is not in it, so subscribers never see a
flicker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.schema import Table
from .outcome import call_soon

__all__ = ["Change", "Subscribers"]

logger = logging.getLogger("plasma_nb.client")

Row = dict[str, Any]


@dataclass(frozen=True)
class Change:
    """The net change of one commit, by table name.

    ``added["todos"]`` lists new rows, ``removed["todos"]`` rows that are gone,
    and ``changed["todos"]`` ``(before, after)`` pairs. Tables without changes are
    absent.
    """

    added: Mapping[str, list[Row]] = field(default_factory=dict)
    removed: Mapping[str, list[Row]] = field(default_factory=dict)
    changed: Mapping[str, list[tuple[Row, Row]]] = field(default_factory=dict)

    @property
    def tables(self) -> frozenset[str]:
        return frozenset(self.added) | frozenset(self.removed) | frozenset(self.changed)

    def __bool__(self) -> bool:
        return bool(self.tables)

    def merged(self, other: Change) -> Change:
        """This change and ``other`` (about other rows) together."""
        if not other:
            return self
        if not self:
            return other
        def both(
            mine: Mapping[str, list[Any]], theirs: Mapping[str, list[Any]]
        ) -> dict[str, list[Any]]:
            return {t: [*mine.get(t, ()), *theirs.get(t, ())] for t in mine.keys() | theirs}

        return Change(both(self.added, other.added), both(self.removed, other.removed),
                      both(self.changed, other.changed))

    def restricted(self, tables: Iterable[str]) -> Change:
        """The part of this change that concerns ``tables``."""
        keep = set(tables)
        return Change(
            {t: rows for t, rows in self.added.items() if t in keep},
            {t: rows for t, rows in self.removed.items() if t in keep},
            {t: rows for t, rows in self.changed.items() if t in keep},
        )

    def __repr__(self) -> str:
        parts = []
        for t in sorted(self.tables):
            counts = (
                len(self.added.get(t, ())),
                len(self.removed.get(t, ())),
                len(self.changed.get(t, ())),
            )
            parts.append(f"{t}: +{counts[0]} -{counts[1]} ~{counts[2]}")
        return f"Change({'; '.join(parts)})"


Callback = Callable[[Change], Any]


class _Subscription:
    __slots__ = ("active", "callback", "tables")

    def __init__(self, tables: frozenset[str], callback: Callback) -> None:
        self.tables = tables
        self.callback = callback
        self.active = True


class Subscribers:
    """Callbacks by table; each is called once per commit that touches its tables.

    Calls happen on ``loop`` (the engine's loop: the page's in Pyodide, the engine
    thread's in CPython) on its next iteration, never inside the commit, so a
    callback may read the replica or mutate again.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop,
        on_tables: Callable[[frozenset[str]], object] | None = None,
    ) -> None:
        self._loop = loop
        self._subscriptions: list[_Subscription] = []
        # Told the union of the watched tables whenever it changes (the engine then
        # asks other processes sharing the file to journal their commits to them).
        self._on_tables = on_tables
        self._tables: frozenset[str] = frozenset()

    def subscribe(
        self, tables: Iterable[str | Table] | str | Table, callback: Callback
    ) -> Callable[[], None]:
        if isinstance(tables, str | Table):
            tables = [tables]
        names = frozenset(t._name if isinstance(t, Table) else t for t in tables)
        if not callable(callback):
            raise TypeError(f"subscribe() needs a callable, got {callback!r}")
        subscription = _Subscription(names, callback)
        self._subscriptions.append(subscription)
        try:
            self._tables_changed()
        except BaseException:
            self._subscriptions.remove(subscription)
            raise

        def unsubscribe() -> None:
            subscription.active = False
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)
                self._tables_changed()

        return unsubscribe

    @property
    def tables(self) -> frozenset[str]:
        """Every table some subscriber watches."""
        return frozenset().union(*(s.tables for s in list(self._subscriptions)))

    def _tables_changed(self) -> None:
        tables = self.tables
        if tables != self._tables:
            self._tables = tables
            if self._on_tables is not None:
                self._on_tables(tables)

    def __bool__(self) -> bool:
        return bool(self._subscriptions)

    def notify(self, change: Change) -> None:
        """Schedule the callbacks interested in ``change`` (from any thread)."""
        if not change or not self._subscriptions:
            return
        touched = change.tables
        for subscription in list(self._subscriptions):
            if subscription.tables & touched:
                part = change.restricted(subscription.tables)
                call_soon(self._loop, _invoke, subscription, part)


def _invoke(subscription: _Subscription, change: Change) -> None:
    if not subscription.active:
        return
    try:
        result = subscription.callback(change)
        if asyncio.iscoroutine(result):
            task = asyncio.ensure_future(result)
            task.add_done_callback(_log_failure)
    except Exception:
        logger.exception("subscriber %r raised", subscription.callback)


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("subscriber coroutine raised", exc_info=task.exception())
