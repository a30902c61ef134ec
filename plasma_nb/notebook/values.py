"""Cell values for the browser, the sort order of a column, and static HTML tables.

A widget's rows cross the comm as JSON lists; ``cell`` turns any value a query
returns into something JSON can carry (and JavaScript can show). ``static_table``
is the HTML that notebooks show where widgets cannot render (nbconvert, GitHub).
"""

from __future__ import annotations

import base64
import datetime as _dt
import decimal
import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["cell", "sort_key", "static_table", "text_table"]

_MAX_TEXT = 2000  # longer text is cut in the browser's copy, never in the data


def cell(value: Any) -> Any:
    """A JSON-safe value for the browser (the data itself is not changed)."""
    if value is None or isinstance(value, bool | int | str):
        if isinstance(value, str) and len(value) > _MAX_TEXT:
            return value[:_MAX_TEXT] + "…"
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None if math.isnan(value) else str(value)
    if isinstance(value, _dt.datetime | _dt.date | _dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        if len(data) <= 48:
            return "b64:" + base64.b64encode(data).decode()
        return f"<{len(data)} bytes>"
    if isinstance(value, Mapping | list | tuple):
        text = json.dumps(value, default=str, ensure_ascii=False)
        return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + "…"
    # numpy and pandas scalars, and anything else
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return cell(item())
        except (TypeError, ValueError):
            pass
    if getattr(value, "isoformat", None) is not None:
        return str(value.isoformat())
    return str(value)


def sort_key(value: Any) -> tuple[int, int, Any]:
    """Ascending order of one column: NULLs first (as plasma's queries order them), then
    numbers, then text, then anything else by its text."""
    if value is None:
        return (0, 0, 0)
    if isinstance(value, bool | int | float):
        if isinstance(value, float) and math.isnan(value):
            return (0, 1, 0)
        return (1, 0, value)
    if isinstance(value, str):
        return (1, 1, value)
    if isinstance(value, _dt.datetime | _dt.date):
        return (1, 2, value.isoformat())
    return (1, 3, str(value))


def _html_cell(value: Any) -> str:
    if value is None:
        return '<td class="plasma-null">NULL</td>'
    shown = cell(value)
    align = ' style="text-align: right"' if isinstance(shown, int | float) else ""
    return f"<td{align}>{html.escape(str(shown))}</td>"


def static_table(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], total: int, *,
    caption: str = "", note: str = "",
) -> str:
    """An HTML table of the first rows, for frontends without widgets."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    shown = 0
    for row in rows:
        shown += 1
        body.append("<tr>" + "".join(_html_cell(v) for v in row) + "</tr>")
    summary = f"{total} row{'s' if total != 1 else ''}"
    if shown < total:
        summary += f", showing the first {shown}"
    if note:
        summary += f" · {note}"
    title = f"{html.escape(caption)}: " if caption else ""
    return (
        '<table class="dataframe plasma-static">'
        f'<caption style="caption-side: bottom; text-align: left">{title}{html.escape(summary)}'
        "</caption>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def text_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """An aligned plain-text table (for terminals and text/plain)."""
    texts = [[str(c) for c in columns]]
    for row in rows:
        texts.append(["NULL" if v is None else str(cell(v)) for v in row])
    widths = [max(len(r[i]) for r in texts) for i in range(len(columns))]
    lines = ["  ".join(t.ljust(w) for t, w in zip(r, widths, strict=True)).rstrip() for r in texts]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
