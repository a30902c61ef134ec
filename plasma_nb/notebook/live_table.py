"""``LiveTable``: an anywidget view of a live query that keeps itself current.

Only a window of rows crosses the comm, as lists in column order (the column
names travel once, in ``columns``); the browser asks for another window as the
user scrolls (``viewport``). When the live query changes (its subscriber is
called on the engine's thread in CPython), the table recomputes the state the
browser needs and sends what changed in one ``update`` message.

Sorting by a column (a click on its header, or ``table.sort = [column, "asc"]``)
opens a second live query ordered by that column when the query is a
``select(...)`` without limit or offset (the client then keeps the order
incrementally); otherwise it orders the current rows in Python, once per version.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from . import _access
from .values import cell, sort_key

__all__ = ["LiveTable"]

logger = logging.getLogger("plasma_nb.notebook")

STATIC = Path(__file__).with_name("static")

#: Rows shown at once, and rows sent per window, unless told otherwise.
ROWS_VISIBLE = 12
PAGE_SIZE = 50


class LiveTable(anywidget.AnyWidget):  # type: ignore[misc, unused-ignore]
    """A live query as a scrollable, sortable table that refreshes itself.

    ``LiveTable(live)``; ``display(live)`` makes one after ``%load_ext plasma_nb``.
    """

    _esm = STATIC / "live_table.js"
    _css = STATIC / "live_table.css"

    columns = traitlets.List(traitlets.Unicode()).tag(sync=True)
    total = traitlets.Int(0).tag(sync=True)
    version = traitlets.Int(0).tag(sync=True)
    window_offset = traitlets.Int(0).tag(sync=True)
    window: traitlets.List[list[Any]] = traitlets.List().tag(sync=True)
    pending = traitlets.List(traitlets.Int()).tag(sync=True)
    pending_count = traitlets.Int(0).tag(sync=True)
    rejected = traitlets.List(traitlets.Dict()).tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    # Set by the browser (or by Python): the rows wanted and the sort order.
    viewport = traitlets.List(traitlets.Int(), default_value=[0, PAGE_SIZE]).tag(sync=True)
    sort = traitlets.List(traitlets.Unicode(), default_value=[]).tag(sync=True)
    rows_visible = traitlets.Int(ROWS_VISIBLE).tag(sync=True)
    page_size = traitlets.Int(PAGE_SIZE).tag(sync=True)

    def __init__(
        self, live: Any, *, client: Any = None, rows_visible: int = ROWS_VISIBLE,
        page_size: int | None = None, **kwargs: Any,
    ) -> None:
        self._live = live
        self._view = live  # what is shown: the live query, or a sorted copy of it
        self._derived: Any = None
        self._client = client if client is not None else _access.client_of(live)
        self._since_ms = _access.first_seen(self._client) if self._client is not None else 0.0
        self._lock = threading.RLock()
        self._sorted: tuple[int, tuple[str, ...], list[dict[str, Any]]] | None = None
        self._dismissed = 0
        self._closed = False
        #: Refreshes that sent something (for tests and benchmarks).
        self.refreshes = 0
        page = max(page_size or PAGE_SIZE, rows_visible)
        state = self._state([0, page], [])
        super().__init__(
            rows_visible=rows_visible, page_size=page, viewport=[0, page], sort=[],
            **state, **kwargs,
        )
        self.observe(self._wanted, names=["viewport"])
        self.observe(self._resort, names=["sort"])
        self.on_msg(self._message)
        self._unsubscribe: Callable[[], None] | None = live.subscribe(self._changed)
        self.refresh()  # in case the live query moved on while we were starting

    @property
    def live(self) -> Any:
        """The live query shown."""
        return self._live

    @property
    def df(self) -> Any:
        """The live query's current pandas DataFrame."""
        return self._live.df

    # -- the state the browser needs --------------------------------------------------

    def _sorted_query(self, sort: list[str]) -> Any:
        """A live query like ours, ordered by ``sort`` first, or None if there is none."""
        from ..core.expr import Ordering
        from ..core.query import Select

        query = getattr(self._live, "query", None)
        if (self._client is None or not sort or not isinstance(query, Select)
                or query.limit_ is not None or query.offset_ is not None):
            return None
        column = query.table._columns.get(sort[0])
        if column is None:
            return None
        first = Ordering(column, descending=len(sort) > 1 and sort[1] == "desc")
        ordered = Select(query.table, query.columns, query.where_,
                         (first, *query.order), None, None)
        try:
            return self._client.live(ordered)
        except Exception:  # a closed client, say: sort in Python instead
            return None

    def _resort(self, change: dict[str, Any]) -> None:
        with self._lock:
            if self._derived is not None:
                self._derived.close()  # closing also ends our subscription to it
                self._derived = None
            derived = self._sorted_query(list(self.sort))
            view = derived if derived is not None else self._live
            if view is not self._view:
                if self._unsubscribe is not None:
                    self._unsubscribe()
                self._view = view
                self._derived = derived
                self._unsubscribe = view.subscribe(self._changed)
        self.refresh()

    def _rows_in_order(self, version: int, sort: list[str]) -> list[dict[str, Any]] | None:
        if not sort or self._derived is not None:
            return None
        key = tuple(sort)
        cached = self._sorted
        if cached is not None and cached[0] == version and cached[1] == key:
            return cached[2]
        column, direction = sort[0], sort[1] if len(sort) > 1 else "asc"
        rows = list(self._view.rows)
        if column in self._view.columns:
            # NULLs first ascending, last descending: as plasma's queries order them.
            rows.sort(key=lambda r: sort_key(r.get(column)), reverse=direction == "desc")
        self._sorted = (version, key, rows)
        return rows

    def _state(self, viewport: list[int], sort: list[str]) -> dict[str, Any]:
        # A commit on another thread may land while we read: read again until the
        # version is the same before and after, so one message never mixes two versions.
        for _ in range(5):
            version = self._view.version
            state = self._state_at(version, viewport, sort)
            if self._view.version == version:
                break
        return state

    def _state_at(self, version: int, viewport: list[int], sort: list[str]) -> dict[str, Any]:
        live = self._view
        columns = list(live.columns)
        ordered = self._rows_in_order(version, sort)
        total = len(ordered) if ordered is not None else len(live)
        offset = max(0, int(viewport[0]) if viewport else 0)
        limit = max(1, int(viewport[1]) if len(viewport) > 1 else self.page_size)
        if offset >= total:
            offset = max(0, total - limit)
        if ordered is not None:
            rows = ordered[offset:offset + limit]
        else:
            rows = live.window(offset, limit)
        key = live.key_column
        keys = live.pending_keys if key else frozenset()
        pending = [i for i, r in enumerate(rows) if key and r.get(key) in keys]
        state: dict[str, Any] = {
            "columns": columns,
            "total": total,
            # The live query's own version, also while a sorted copy of it is shown.
            "version": self._live.version if self._view is not self._live else version,
            "window_offset": offset,
            "window": [[cell(r.get(c)) for c in columns] for r in rows],
            "pending": pending,
            "pending_count": len(keys),
            "error": getattr(live, "error", None) or "",
            "rejected": self._rejections(),
        }
        return state

    def _rejections(self) -> list[dict[str, Any]]:
        if self._client is None:
            return []
        try:
            found = _access.rejections(self._client, since_ms=self._since_ms)
        except Exception:  # a closed client: nothing to show
            return []
        return [{"seq": r.seq, "name": r.name, "message": r.message}
                for r in found if r.seq > self._dismissed]

    def refresh(self) -> bool:
        """Bring the browser's state up to date (one update message); True if one was sent."""
        if self._closed:
            return False
        with self._lock:
            state = self._state(list(self.viewport), list(self.sort))
            changed = {k: v for k, v in state.items() if getattr(self, k) != v}
            if not changed:
                return False
            with self.hold_sync():
                for name, value in changed.items():
                    setattr(self, name, value)
            self.refreshes += 1
            return True

    # -- events ------------------------------------------------------------------------

    def _changed(self, change: Any) -> None:
        # On the engine's thread in CPython: comm messages may be sent from any thread.
        try:
            self.refresh()
        except Exception:
            logger.exception("LiveTable could not refresh")

    def _wanted(self, change: dict[str, Any]) -> None:
        self.refresh()

    def _message(self, widget: Any, content: Any, buffers: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "dismiss":
            with self._lock:
                if self.rejected:
                    self._dismissed = max(r["seq"] for r in self.rejected)
            self.refresh()

    # -- display and lifetime ------------------------------------------------------------

    def static_html(self, limit: int | None = None) -> str:
        """An HTML table of the first rows (what frontends without widgets show)."""
        from .display import static_html

        return static_html(self._live, limit)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        if isinstance(data, dict):
            data["text/html"] = self.static_html()
            data["text/plain"] = repr(self._live)
        return bundle

    def close(self) -> None:
        """Stop following the live query and close the view (the query stays open)."""
        self._closed = True
        unsubscribe = getattr(self, "_unsubscribe", None)
        if unsubscribe is not None:
            unsubscribe()
            self._unsubscribe = None
        derived = getattr(self, "_derived", None)
        if derived is not None:
            derived.close()
            self._derived = None
        super().close()

