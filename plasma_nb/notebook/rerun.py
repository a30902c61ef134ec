"""A live result that re-runs its query when a table it reads changes.

``%%plasma sql --live --engine duckdb`` makes one. It offers what the widgets
read from a client ``LiveQuery`` (``rows``, ``columns``, ``version``, ``df``,
``subscribe``, ``window``, ``close``), so a ``LiveTable`` shows either.

Re-running happens off the engine's loop: in CPython on one shared worker thread
(a burst of commits coalesces into one re-run), in Pyodide inline on the page's
loop. Subscribers hear about a new result only when it differs from the last.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ._deps import IN_PYODIDE, require

__all__ = ["RerunLive", "ResultChange", "unique_names"]

logger = logging.getLogger("plasma_nb.notebook")

Runner = Callable[[], tuple[Sequence[str], Sequence[Sequence[Any]]]]

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _worker() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="plasma_nb-rerun")
        return _executor


@dataclass(frozen=True)
class ResultChange:
    """What subscribers of a ``RerunLive`` receive: the new version and row count."""

    version: int
    rows: int


def unique_names(names: Iterable[str]) -> list[str]:
    """Column names made unique (``id``, ``id_2``): rows are dicts by column name."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        count = seen.get(name, 0) + 1
        seen[name] = count
        out.append(name if count == 1 else f"{name}_{count}")
    return out


class RerunLive:
    """A query result kept current by re-running the query (see the module docstring)."""

    key_column: str | None = None
    pending_keys: frozenset[Any] = frozenset()

    def __init__(
        self, client: Any, query: str, tables: Iterable[str], run: Runner, *,
        engine: str = "duckdb",
    ) -> None:
        self.client = client
        self.query = query
        self.tables = frozenset(tables)
        self.engine = engine
        self.error: str | None = None
        self._run = run
        self._lock = threading.RLock()
        self._subscribers: list[Callable[[Any], Any]] = []
        self._version = 0
        self._columns: list[str] = []
        self._tuples: list[tuple[Any, ...]] = []
        self._rows: list[dict[str, Any]] = []
        self._df: tuple[int, Any] | None = None
        self._scheduled = False
        self._closed = False
        self._load(*run())  # a first run that fails raises to the caller
        self._unsubscribe: Callable[[], None] | None = None
        if self.tables:
            self._unsubscribe = client.subscribe(sorted(self.tables), self._changed)

    # -- reading -----------------------------------------------------------------------

    @property
    def version(self) -> int:
        return self._version

    @property
    def columns(self) -> list[str]:
        return list(self._columns)

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def window(self, offset: int, limit: int) -> list[dict[str, Any]]:
        offset = max(0, offset)
        return self._rows[offset:offset + max(0, limit)]

    @property
    def df(self) -> Any:
        """The result as a pandas DataFrame (built once per version)."""
        with self._lock:
            cached = self._df
            if cached is not None and cached[0] == self._version:
                return cached[1]
            pd = require("pandas", "LiveQuery.df")
            frame = pd.DataFrame.from_records(self._tuples, columns=self._columns)
            if not self._tuples:
                frame = pd.DataFrame({c: [] for c in self._columns})
            self._df = (self._version, frame)
            return frame

    # -- subscribing -------------------------------------------------------------------

    def subscribe(self, callback: Callable[[Any], Any]) -> Callable[[], None]:
        """Call ``callback(ResultChange)`` whenever the result changes."""
        if not callable(callback):
            raise TypeError(f"subscribe() needs a callable, got {callback!r}")
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._subscribers.clear()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    @property
    def closed(self) -> bool:
        return self._closed

    # -- refreshing --------------------------------------------------------------------

    def _load(self, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> bool:
        names = unique_names(columns)
        tuples = [tuple(r) for r in rows]
        with self._lock:
            if names == self._columns and tuples == self._tuples and self._version:
                return False
            self._columns = names
            self._tuples = tuples
            self._rows = [dict(zip(names, r, strict=True)) for r in tuples]
            self._version += 1
            return True

    def _changed(self, change: Any) -> None:
        if self._closed:
            return
        if IN_PYODIDE:
            self.refresh()
            return
        with self._lock:
            if self._scheduled:
                return  # the queued re-run will see this commit too
            self._scheduled = True
        _worker().submit(self._rerun)

    def _rerun(self) -> None:
        with self._lock:
            self._scheduled = False
        self.refresh()

    def refresh(self) -> bool:
        """Re-run the query now; True if the result changed (subscribers were told)."""
        if self._closed:
            return False
        try:
            changed = self._load(*self._run())
            error = None
        except Exception as exc:  # shown by the widget; the last good result stays
            changed, error = False, f"{type(exc).__name__}: {exc}"
        if error != self.error:
            self.error = error
            with self._lock:
                self._version += 1
            changed = True
        if changed:
            self._notify()
        return changed

    def _notify(self) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
            change = ResultChange(self._version, len(self._rows))
        for callback in subscribers:
            try:
                callback(change)
            except Exception:
                logger.exception("live result subscriber %r raised", callback)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._rows)} rows, version {self._version}"
        query = " ".join(self.query.split())
        if len(query) > 60:
            query = query[:57] + "..."
        return f"<RerunLive {self.engine}: {state}: {query}>"
