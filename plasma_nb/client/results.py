"""The rows of a live query, kept current commit by commit.

Two strategies, both behind ``apply(change) -> Delta | None``:

- ``SortedResult``, for a DSL select (one table: filter, order, limit, offset). It
  keeps the result sorted by the query's order with the primary key as the last term
  (so that no two rows tie and the order is the same every time), and applies a
  commit's rows in Python: the filter and the order are evaluated by
  ``core.evaluate``, positions found with ``bisect``. With a limit it keeps a few
  rows past the window, so that a row leaving the window is replaced without asking
  SQLite; it re-runs the query when it cannot know the answer (a change before an
  offset window, a window that ran out of buffered rows, an expression Python does
  not evaluate, a commit touching a large part of the result).
- ``RerunResult``, for SQL text (and DSL queries the evaluator declines): runs the
  query again and diffs the rows.

Everything here runs under the replica's lock.
"""

from __future__ import annotations

import sqlite3
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import QueryError
from ..core.evaluate import Unsupported, compile_predicate, compile_sort_key
from ..core.expr import ColumnRef, Ordering
from ..core.query import Select
from ..core.schema import Table
from .change import Change
from .frame import Patch
from .replica import Replica

__all__ = ["Delta", "RerunResult", "Result", "SortedResult", "sql_tables"]

Row = dict[str, Any]

#: Rows kept past a limited window, so that rows leaving it are replaced in Python.
BUFFER_MIN, BUFFER_MAX = 16, 256
#: A commit touching more rows than this share of the result re-runs the query instead.
RERUN_SHARE, RERUN_MIN = 1 / 20, 500


@dataclass
class Delta:
    """How a result changed: its rows added, removed and changed (as the query returns
    them), and the positional patch of its frame (None: rebuild the frame)."""

    added: list[Row] = field(default_factory=list)
    removed: list[Row] = field(default_factory=list)
    changed: list[tuple[Row, Row]] = field(default_factory=list)
    patch: Patch | None = None


class Result:
    """What both strategies offer the live query."""

    columns: list[str]
    key_column: str | None
    tables: frozenset[str]
    incremental: bool

    def load(self) -> None:
        raise NotImplementedError

    def visible(self) -> list[Row]:
        """The current rows (the live list: copy it before handing it out)."""
        raise NotImplementedError

    def apply(self, changes: Sequence[Change]) -> list[Delta]:
        """Bring the result up to date with ``changes`` (consecutive commits, oldest first);
        one delta per commit that changed it (a re-run may merge several)."""
        raise NotImplementedError


def _projector(names: Sequence[str], table: Table) -> Callable[[Row], Row] | None:
    """How to cut a table row down to the selected columns (None: it already is)."""
    if tuple(names) == tuple(c.name for c in table):
        return None
    keep = list(names)
    return lambda row: {n: row[n] for n in keep}


def _ordered(select: Select) -> Select:
    """The select of every column of the table, ordered with the key as a last term."""
    table = select.table
    order = select.order
    if not any(isinstance(o.expr, ColumnRef) and o.expr.name == table._pk.name for o in order):
        order = (*order, Ordering(table._pk, descending=False))
    return Select(table, tuple(table), select.where_, order, select.limit_, select.offset_)


class _Fetcher:
    """Runs a DSL select (every column, key-ordered) with a given limit."""

    def __init__(self, replica: Replica, select: Select) -> None:
        self.replica = replica
        self.base = _ordered(select)

    def __call__(self, limit: int | None) -> list[Row]:
        stmt = self.base
        if limit is not None:
            stmt = stmt.limit(limit)
        compiled = self.replica.dialect.compile(stmt)
        decode = compiled.decode
        assert decode is not None
        return [decode(r) for r in self.replica.conn.execute(compiled.sql, compiled.params)]


def diff(
    old: Sequence[Row], new: Sequence[Row], key: str | None,
    project: Callable[[Row], Row] | None = None, columns: Sequence[str] = (),
) -> Delta | None:
    """The delta between two lists of rows, by trimming what they share at both ends.

    With a ``key``, rows of the middle part are paired by it (``changed``); without,
    they are compared as values (``added`` and ``removed`` only).
    """
    n, m = len(old), len(new)
    i = 0
    shortest = min(n, m)
    while i < shortest and old[i] == new[i]:
        i += 1
    if i == n == m:
        return None
    j = 0
    while j < shortest - i and old[n - 1 - j] == new[m - 1 - j]:
        j += 1
    mid_old, mid_new = old[i:n - j], new[i:m - j]
    p = project or (lambda r: r)
    delta = Delta()
    if key is None:
        before = Counter(tuple(r.values()) for r in mid_old)
        after = Counter(tuple(r.values()) for r in mid_new)
        gone, came = before - after, after - before
        delta.removed = [r for r in mid_old if _take(gone, tuple(r.values()))]
        delta.added = [r for r in mid_new if _take(came, tuple(r.values()))]
        delta.patch = Patch(removed=list(range(i, n - j)),
                            inserted=[(i + k, r) for k, r in enumerate(mid_new)])
        return delta
    olds = {r[key]: (i, r) for i, r in enumerate(mid_old)}
    news = {r[key]: (i, r) for i, r in enumerate(mid_new)}
    for k, (_, r) in olds.items():
        if k not in news:
            delta.removed.append(p(r))
    for k, (at, r) in news.items():
        previous = olds.get(k)
        if previous is None:
            delta.added.append(p(r))
            continue
        pa, pb = p(previous[1]), p(r)
        if pa != pb or previous[0] != at:
            delta.changed.append((pa, pb))
    if not (delta.added or delta.removed or delta.changed):
        return None  # only columns the query does not return changed
    if len(mid_old) == len(mid_new) and all(
        a[key] == b[key] for a, b in zip(mid_old, mid_new, strict=True)
    ):
        # Same rows in the same places: set the values that differ.
        sets: list[tuple[int, Row, frozenset[str] | None]] = []
        for pos, (a, b) in enumerate(zip(mid_old, mid_new, strict=True), start=i):
            pa, pb = p(a), p(b)
            cols = frozenset(c for c in columns if pa[c] != pb[c])
            if cols:
                sets.append((pos, pb, cols))
        delta.patch = Patch(set=sets)
    else:
        delta.patch = Patch(removed=list(range(i, n - j)),
                            inserted=[(i + k, p(r)) for k, r in enumerate(mid_new)])
    return delta


def _take(counter: Counter[tuple[Any, ...]], item: tuple[Any, ...]) -> bool:
    if counter[item] > 0:
        counter[item] -= 1
        return True
    return False


# -- re-running ---------------------------------------------------------------------------


_READ_ACTIONS = {sqlite3.SQLITE_READ, sqlite3.SQLITE_SELECT, sqlite3.SQLITE_FUNCTION,
                 getattr(sqlite3, "SQLITE_RECURSIVE", 33)}


def sql_tables(
    conn: sqlite3.Connection, sql: str, params: Sequence[Any] | Mapping[str, Any],
) -> tuple[frozenset[str], list[str], list[Row]]:
    """Run SQL text, learning the tables it reads from SQLite's authorizer (which also
    refuses anything but reading); returns (tables, column names, rows)."""
    tables: set[str] = set()
    refused: list[int] = []

    def authorize(action: int, arg1: str | None, arg2: str | None, *_: object) -> int:
        if action == sqlite3.SQLITE_READ and arg1:
            tables.add(arg1)
        if action in _READ_ACTIONS:
            return sqlite3.SQLITE_OK
        refused.append(action)
        return sqlite3.SQLITE_DENY

    conn.set_authorizer(authorize)
    try:
        columns, rows = _run_sql(conn, sql, params)
    except sqlite3.DatabaseError as exc:
        if refused:
            raise QueryError(f"a live query only reads: {sql!r} does more ({exc})") from None
        raise QueryError(f"cannot run live query {sql!r}: {exc}") from None
    finally:
        conn.set_authorizer(None)
    return frozenset(tables), columns, rows


def _run_sql(
    conn: sqlite3.Connection, sql: str, params: Sequence[Any] | Mapping[str, Any],
) -> tuple[list[str], list[Row]]:
    cur = conn.execute(sql, params)
    names = [d[0] for d in cur.description or ()]
    if len(set(names)) != len(names):
        raise QueryError(
            f"a live query's columns need distinct names, got {names}: add AS aliases"
        )
    return names, [dict(zip(names, r, strict=True)) for r in cur]


class RerunResult(Result):
    """Runs the query again whenever a commit touches one of its tables."""

    incremental = False

    def __init__(self, replica: Replica, query: Select | str,
                 params: Sequence[Any] | Mapping[str, Any] = ()) -> None:
        self.replica = replica
        self.query = query
        self.params = params
        self._rows: list[Row] = []
        self._full: list[Row] = []
        self._project: Callable[[Row], Row] | None = None
        if isinstance(query, Select):
            self.columns = [c.name for c in query.columns]
            self.key_column = query.table._pk.name
            self.tables = query.tables
            self._fetch: _Fetcher | None = _Fetcher(replica, query)
            self._project = _projector(self.columns, query.table)
        else:
            self.key_column = None
            self._fetch = None
            self.tables, self.columns, self._rows = sql_tables(replica.conn, query, params)

    def load(self) -> None:
        if self._fetch is not None:
            assert isinstance(self.query, Select)
            self._full = self._fetch(self.query.limit_)
            p = self._project
            self._rows = self._full if p is None else [p(r) for r in self._full]
        else:
            _, self._rows = _run_sql(self.replica.conn, str(self.query), self.params)

    def visible(self) -> list[Row]:
        return self._rows

    def apply(self, changes: Sequence[Change]) -> list[Delta]:
        if not any(c.tables & self.tables for c in changes):
            return []
        old_full, old_rows = self._full, self._rows
        self.load()
        if self._fetch is not None:
            delta = diff(old_full, self._full, self.key_column, self._project, self.columns)
        else:
            delta = diff(old_rows, self._rows, None)
            if delta is not None:
                delta.patch = None  # SQL text frames are rebuilt (their dtypes are inferred)
        return [] if delta is None else [delta]


# -- incremental ----------------------------------------------------------------------------


class _Rerun(Exception):
    """The incremental path cannot tell: run the query again."""


class SortedResult(Result):
    """A DSL select kept sorted and current in Python (see the module docstring)."""

    incremental = True

    def __init__(self, replica: Replica, select: Select) -> None:
        table = select.table
        self.replica = replica
        self.select = select
        self.columns = [c.name for c in select.columns]
        self.pk = table._pk.name
        self.key_column = self.pk if self.pk in self.columns else None
        self.tables = select.tables
        self.table = table._name
        # Unsupported propagates: the caller falls back to RerunResult.
        self.pred = compile_predicate(select.where_, replica.dialect)
        self.key = compile_sort_key(select.order, table, replica.dialect)
        self.limit = select.limit_
        self.offset = select.offset_ or 0
        self.cap = (
            None if self.limit is None
            else self.limit + max(BUFFER_MIN, min(BUFFER_MAX, self.limit // 4))
        )
        self.project = _projector(self.columns, table)
        self._fetch = _Fetcher(replica, select)
        self.buf: list[Row] = []  # rows offset.. of the full result, as the table has them
        self.proj: list[Row] = []  # the same rows as the query returns them
        self.held: dict[Any, Row] = {}  # key -> row of buf
        self.complete = True  # buf reaches the end of the full result
        self.reruns = 0  # times the query ran again after the first (tests read it)

    # -- loading --------------------------------------------------------------------------

    def load(self) -> None:
        rows = self._fetch(self.cap)
        self.buf = rows
        p = self.project
        self.proj = rows if p is None else [p(r) for r in rows]
        pk = self.pk
        self.held = {r[pk]: r for r in rows}
        self.complete = self.cap is None or len(rows) < self.cap

    def visible(self) -> list[Row]:
        limit = self.limit
        if limit is None or len(self.proj) <= limit:
            return self.proj
        return self.proj[:limit]

    def _visible_full(self) -> list[Row]:
        return self.buf if self.limit is None else self.buf[:self.limit]

    def rerun(self) -> Delta | None:
        old = self._visible_full()  # load() replaces the lists rather than changing them
        self.reruns += 1
        self.load()
        return diff(old, self._visible_full(), self.pk, self.project, self.columns)

    # -- applying a commit ----------------------------------------------------------------

    def apply(self, changes: Sequence[Change]) -> list[Delta]:
        out = []
        for change in changes:
            try:
                delta = self._apply(change)
            except (_Rerun, Unsupported):
                delta = self.rerun()
            if delta is not None:
                out.append(delta)
        return out

    def _touched(self, change: Change) -> list[tuple[Any, Row | None, Row | None]]:
        """(key, row before as the commit saw it, row after) for each row of our table."""
        t, pk = self.table, self.pk
        out: list[tuple[Any, Row | None, Row | None]] = []
        for r in change.removed.get(t, ()):
            out.append((r[pk], r, None))
        for r in change.added.get(t, ()):
            out.append((r[pk], None, r))
        for before, after in change.changed.get(t, ()):
            out.append((after[pk], before, after))
        return out

    def _apply(self, change: Change) -> Delta | None:
        touched = self._touched(change)
        if not touched:
            return None
        if len(touched) > RERUN_MIN and len(touched) > len(self.buf) * RERUN_SHARE:
            raise _Rerun
        pred, held = self.pred, self.held
        # What the commit did to our rows: the row we hold (None: not in buf), and
        # the row it became if it matches the filter. Holding the rows (rather than
        # trusting the commit's "before") keeps the result right even if it saw
        # commits out of order.
        items: list[tuple[Row | None, Row | None]] = []
        hints: list[Row] = []
        for k, before, after in touched:
            old = held.get(k)
            new = after if after is not None and pred(after) else None
            if old is None and before is not None and self.offset and pred(before):
                hints.append(before)  # it may have left the rows before the window
            if old is None and new is None:
                continue
            if old is not None and new is not None and old == new:
                continue
            items.append((old, new))
        if self.offset:
            self._check_prefix([n for _, n in items if n is not None] + hints)
        if not items:
            return None
        return self._splice(items)

    def _check_prefix(self, candidates: Iterable[Row]) -> None:
        """A row before an offset window, before or after the commit, moves the window."""
        rows = list(candidates)
        if not rows:
            return
        if not self.buf:
            raise _Rerun
        first = self.key(self.buf[0])
        key = self.key
        if any(key(r) < first for r in rows):
            raise _Rerun

    def _position(self, row: Row) -> int:
        pos = bisect_left(self.buf, self.key(row), key=self.key)
        if pos >= len(self.buf) or self.buf[pos] is not row:
            raise _Rerun  # our rows disagree with the evaluator's order
        return pos

    def _splice(self, items: list[tuple[Row | None, Row | None]]) -> Delta | None:
        buf, proj, held, key, pk = self.buf, self.proj, self.held, self.key, self.pk
        limit, project = self.limit, self.project
        last_key = None if self.complete or not buf else key(buf[-1])
        n_old = len(buf)
        vis_old = n_old if limit is None else min(n_old, limit)

        kept = []
        for old, new in items:
            if (old is not None and new is not None and project is not None
                    and key(old) == key(new) and project(old) == project(new)):
                # Only columns the query neither returns nor sorts by changed: swap
                # the row, nothing shows.
                pos = self._position(old)
                buf[pos] = held[new[pk]] = new
                continue
            kept.append((old, new))
        items = kept
        if not items:
            return None
        # Everything that can raise (and so send us to a re-run) comes before the
        # first change to buf: positions, keys and projections.
        olds = [(self._position(old), old) for old, _ in items if old is not None]
        entering = []
        for _, new in items:
            if new is not None:
                k = key(new)
                if last_key is None or k < last_key:
                    entering.append((k, new, new if project is None else project(new)))
        if limit is not None and not self.complete:
            if n_old - len(olds) + len(entering) < limit:
                raise _Rerun  # the window would run out of buffered rows

        # Old positions, largest first so that deleting keeps the others valid.
        olds.sort(key=lambda item: item[0], reverse=True)
        for pos, old in olds:
            del buf[pos]
            if project is not None:
                del proj[pos]
            del held[old[pk]]
        at: list[int] = []  # where each entering row is, as later ones push it along
        for k, new, shown in entering:
            pos = bisect_left(buf, k, key=key)
            buf.insert(pos, new)
            if project is not None:
                proj.insert(pos, shown)
            held[new[pk]] = new
            at = [q + 1 if q >= pos else q for q in at]
            at.append(pos)
        news = sorted(zip(at, (new for _, new, _ in entering), strict=True),
                      key=lambda item: item[0])
        vis_new = len(buf) if limit is None else min(len(buf), limit)

        delta = self._delta(items, olds, news, vis_old, vis_new)
        if self.cap is not None and len(buf) > self.cap:
            for r in buf[self.cap:]:
                del held[r[pk]]
            del buf[self.cap:]
            if project is not None:
                del proj[self.cap:]
            self.complete = False
        return delta

    def _delta(
        self, items: list[tuple[Row | None, Row | None]], olds: list[tuple[int, Row]],
        news: list[tuple[int, Row]], vis_old: int, vis_new: int,
    ) -> Delta | None:
        p = self.project or (lambda r: r)
        key, pk, buf, columns = self.key, self.pk, self.buf, self.columns
        old_pos = {old[pk]: pos for pos, old in olds}
        new_pos = {new[pk]: pos for pos, new in news}
        delta = Delta()
        removed_at: list[int] = []
        inserted: list[tuple[int, Row]] = []
        sets: list[tuple[int, Row, frozenset[str] | None]] = []
        in_place = True
        for old, new in items:
            was = old is not None and old_pos[old[pk]] < vis_old
            now = new is not None and new[pk] in new_pos and new_pos[new[pk]] < vis_new
            if was and now:
                assert old is not None and new is not None
                po, pn = p(old), p(new)
                moved = key(old) != key(new)
                if po == pn and not moved:
                    continue
                delta.changed.append((po, pn))
                a, b = old_pos[old[pk]], new_pos[new[pk]]
                removed_at.append(a)
                inserted.append((b, pn))
                if a == b:
                    sets.append((b, pn, frozenset(c for c in columns if po[c] != pn[c])))
                else:
                    in_place = False
            elif was:
                assert old is not None
                delta.removed.append(p(old))
                removed_at.append(old_pos[old[pk]])
                in_place = False
            elif now:
                assert new is not None
                delta.added.append(p(new))
                inserted.append((new_pos[new[pk]], p(new)))
                in_place = False
        # Rows the commit did not touch that crossed the window's edge as others came
        # and went: the untouched rows stay in order, so they are the last ones shown
        # (pushed out) or the first ones after (pulled in).
        untouched_old = vis_old - sum(1 for pos, _ in olds if pos < vis_old)
        untouched_new = vis_new - sum(1 for pos, _ in news if pos < vis_new)
        keep = None
        if untouched_new != untouched_old:
            in_place = False
            touched_new = set(new_pos.values())
            if untouched_new < untouched_old:
                keep = untouched_new
                need, pos = untouched_old - untouched_new, vis_new
                while need:
                    if pos not in touched_new:
                        delta.removed.append(p(buf[pos]))
                        need -= 1
                    pos += 1
            else:
                need, pos = untouched_new - untouched_old, vis_new - 1
                while need:
                    if pos not in touched_new:
                        inserted.append((pos, p(buf[pos])))
                        delta.added.append(p(buf[pos]))
                        need -= 1
                    pos -= 1
        if not (delta.added or delta.removed or delta.changed):
            return None
        if in_place:
            delta.patch = Patch(set=sets)
        else:
            delta.patch = Patch(removed=sorted(removed_at), keep=keep, inserted=sorted(
                inserted, key=lambda item: item[0]))
        return delta
