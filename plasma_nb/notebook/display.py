"""How live queries display: a ``LiveTable`` widget, with a static HTML table beside it.

``%load_ext plasma_nb`` calls ``enable(ip)``, which registers a mime-bundle
formatter for live queries, so ``display(live)`` (or a live query as a cell's
last expression) shows a ``LiveTable``. The bundle also carries ``text/html``:
the first rows as a static table, which is what nbconvert, GitHub and other
frontends without widgets show. Where anywidget is missing (a bare Pyodide
kernel), the static table is all there is.

The client package never imports IPython: the formatter is registered from here,
by the class's module and name.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from typing import Any

from ._deps import MissingDependency, has
from .rerun import RerunLive
from .values import static_table

__all__ = ["OPTIONS", "DisplayOptions", "disable", "enable", "live_mimebundle", "table_for"]

logger = logging.getLogger("plasma_nb.notebook")

#: The client's live query class, registered by name so the client stays IPython-free.
LIVE_QUERY = ("plasma_nb.client.live", "LiveQuery")


@dataclass
class DisplayOptions:
    """Display settings; ``%config PlasmaMagics.displaylimit`` and friends set them."""

    displaylimit: int = 10  # rows of the static HTML table
    rows_visible: int = 12  # rows a LiveTable shows at once
    page_size: int = 50  # rows per window a LiveTable sends
    widgets: bool = True  # False: static HTML only


OPTIONS = DisplayOptions()

_tables: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_tables_by_id: dict[int, Any] = {}


def table_for(live: Any) -> Any:
    """The ``LiveTable`` of ``live`` (one per live query, made on first display)."""
    try:
        table = _tables.get(live)
    except TypeError:  # not weakly referenceable
        table = _tables_by_id.get(id(live))
    if table is not None and not table._closed:
        return table
    if not has("anywidget"):
        raise MissingDependency("anywidget", "the live table widget")
    try:
        from .live_table import LiveTable
    except ImportError as exc:  # anywidget there, but something it needs is not
        raise MissingDependency(exc.name or "anywidget", "the live table widget") from None

    table = LiveTable(live, rows_visible=OPTIONS.rows_visible, page_size=OPTIONS.page_size)
    try:
        _tables[live] = table
    except TypeError:
        _tables_by_id[id(live)] = table
    return table


def static_html(live: Any, limit: int | None = None) -> str:
    limit = OPTIONS.displaylimit if limit is None else limit
    columns = list(live.columns)
    rows = live.window(0, limit) if limit else live.rows
    return static_table(
        columns, ([r.get(c) for c in columns] for r in rows), len(live),
        caption="live query", note="the live view needs Jupyter widgets",
    )


def live_mimebundle(live: Any, include: Any = None, exclude: Any = None) -> dict[str, Any]:
    """The mime bundle of a live query: the widget view, static HTML and text."""
    data: dict[str, Any] = {}
    if OPTIONS.widgets:
        try:
            bundle = table_for(live)._repr_mimebundle_()
        except MissingDependency:
            bundle = {}
        except Exception as exc:  # a closed live query, say: the static table still shows
            logger.warning("cannot show %r as a live table: %s", live, exc)
            bundle = {}
        data.update(bundle[0] if isinstance(bundle, tuple) else bundle)
    data["text/html"] = static_html(live)
    data["text/plain"] = repr(live)
    return data


def enable(ip: Any) -> None:
    """Show live queries as live tables in this IPython shell."""
    formatter = ip.display_formatter.mimebundle_formatter
    formatter.for_type_by_name(*LIVE_QUERY, live_mimebundle)
    formatter.for_type(RerunLive, live_mimebundle)


def disable(ip: Any) -> None:
    formatter = ip.display_formatter.mimebundle_formatter
    for key in (LIVE_QUERY, RerunLive):
        try:
            formatter.pop(key)
        except KeyError:
            pass
