"""display(live): the widget view with a static HTML table beside it, or the table alone."""

from __future__ import annotations

from typing import Any

import pytest

from plasma_nb.notebook import display
from tests.notebook.helpers import TODOS, RecordingComm

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture
def todos_live(ip: Any) -> Any:
    ip.run_cell(f"%plasma connect local --schema {TODOS} --name d")
    for i in range(25):
        ip.run_cell(f"%plasma mutate add_todo id=t{i:02d} title='Task {i}'")
    result = ip.run_cell("%%plasma sql --live\nSELECT id, title FROM todos ORDER BY id")
    assert result.success
    return result.result


def test_a_live_query_displays_as_a_live_table_with_static_html(
    ip: Any, todos_live: Any, comms: list[RecordingComm]
) -> None:
    data, _ = ip.display_formatter.format(todos_live)
    assert data[WIDGET_VIEW]["model_id"] == display.table_for(todos_live).model_id
    html = data["text/html"]
    assert "25 rows, showing the first 10" in html
    assert html.count("<tr>") == 11
    assert "Task 0" in html and "Task 10" not in html
    assert data["text/plain"].startswith("<LiveQuery ")
    # Shown twice, it is one widget (two views of one model).
    again, _ = ip.display_formatter.format(todos_live)
    assert again[WIDGET_VIEW]["model_id"] == data[WIDGET_VIEW]["model_id"]


def test_displaylimit_sets_the_static_rows(ip: Any, todos_live: Any) -> None:
    ip.run_cell("%config PlasmaMagics.displaylimit = 3")
    try:
        data, _ = ip.display_formatter.format(todos_live)
        assert data["text/html"].count("<tr>") == 4
    finally:
        ip.run_cell("%config PlasmaMagics.displaylimit = 10")


def test_without_anywidget_only_the_static_table_appears(
    ip: Any, todos_live: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(display, "has", lambda module: module != "anywidget")
    monkeypatch.setattr(display, "_tables", type(display._tables)())
    data, _ = ip.display_formatter.format(todos_live)
    assert WIDGET_VIEW not in data
    assert "Task 0" in data["text/html"]


def test_widgets_off_shows_static_html(ip: Any, todos_live: Any) -> None:
    ip.run_cell("%config PlasmaMagics.widgets = False")
    try:
        data, _ = ip.display_formatter.format(todos_live)
        assert WIDGET_VIEW not in data
        assert "text/html" in data
        status = ip.run_cell("%plasma status")
        assert status.result is None
    finally:
        ip.run_cell("%config PlasmaMagics.widgets = True")


def test_status_is_a_widget_with_a_text_summary(ip: Any, comms: list[RecordingComm]) -> None:
    ip.run_cell(f"%plasma connect local --schema {TODOS} --name d")
    ip.run_cell("%plasma mutate add_todo id=a title=A")
    widget = ip.run_cell("%plasma status").result
    data, _ = ip.display_formatter.format(widget)
    assert WIDGET_VIEW in data
    assert data["text/plain"] == "plasma: local only · 1 pending"
    assert widget.pending == 1 and widget.local_only
    widget.close()
