"""The example notebooks, executed by nbclient in a real ipykernel against a real
``plasma-nb serve`` on 127.0.0.1, with their outputs checked."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from tests.notebook.helpers import NOTEBOOKS, Server
from tests.notebook.kernel import data_of, install_kernelspec, text_of

pytestmark = pytest.mark.slow

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    return install_kernelspec(tmp_path / "jupyter", monkeypatch)


@pytest.fixture
def shop_server(tmp_path: Path) -> Iterator[Server]:
    served = Server(NOTEBOOKS / "shop.py", tmp_path)
    try:
        yield served
    finally:
        served.stop()


def execute(name: str, kernel: str, server: Server, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("PLASMA_URL", server.url)
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name=kernel,
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return nb


def cell_after(nb: Any, source: str) -> Any:
    """The first code cell whose source contains ``source``."""
    for cell in nb.cells:
        if cell.cell_type == "code" and source in cell.source:
            return cell
    raise AssertionError(f"no cell contains {source!r}")


def server_rows(server: Server, tmp_path: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(tmp_path / f"server-{server.port}.db")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_getting_started(kernel: str, server: Server, tmp_path: Path,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    nb = execute("getting-started.ipynb", kernel, server, monkeypatch)
    assert (f"Connected 'getting-started' to {server.url}: 0 todos; 0 pending."
            in text_of(cell_after(nb, "%plasma connect")))
    assert "add_todo" in text_of(cell_after(nb, "%plasma mutators"))
    live = cell_after(nb, "live = client.live")
    assert data_of(live, WIDGET_VIEW), "the live query shows as a widget"
    assert "<table" in data_of(live, "text/html")[0]
    frame = text_of(cell_after(nb, 'live.df[["title", "done"]]'))
    assert "Bake bread" in frame and "Buy milk" in frame
    outbox = text_of(cell_after(nb, "%plasma outbox"))
    assert "add_todo" in outbox and "mark_done" in outbox
    refused = text_of(cell_after(nb, 'title=" "'))
    assert refused.strip() == "MutationError: title must not be empty"
    assert "0 pending." in text_of(cell_after(nb, "%plasma online\n%plasma sync"))
    cells = [c for c in nb.cells if c.cell_type == "code" and c.source == "%plasma outbox"]
    assert "Empty DataFrame" in text_of(cells[-1])
    assert "online" in text_of(cell_after(nb, "%plasma status"))
    assert sorted(server_rows(server, tmp_path, "SELECT title, done FROM todos")) == [
        ("Bake bread", 0), ("Buy milk", 1)]


def test_two_people(kernel: str, server: Server, tmp_path: Path,
                    monkeypatch: pytest.MonkeyPatch) -> None:
    nb = execute("two-people.ipynb", kernel, server, monkeypatch)
    assert "Water the plants" in text_of(cell_after(nb, "await until(lambda: len(bob_view)"))
    both = [c for c in nb.cells if c.cell_type == "code" and 'print("Alice sees:"' in c.source]
    assert text_of(both[0]) == ("Alice sees: Water the plants (Alice)\n"
                                "Bob sees:   Water the plants (Bob)\n")
    # The server's order: Bob's rename reached it last.
    assert text_of(both[1]) == ("Alice sees: Water the plants (Bob)\n"
                                "Bob sees:   Water the plants (Bob)\n")
    assert text_of(cell_after(nb, "await renamed.confirmed")) == (
        "The server rejected Bob's rename: no todo with id 'plants'\n")
    assert text_of(cell_after(nb, 'print("Alice has"')) == "Alice has 0 todos; Bob has 0\n"
    assert server_rows(server, tmp_path, "SELECT count(*) FROM todos") == [(0,)]


def test_analytics_duckdb(kernel: str, shop_server: Server, monkeypatch: pytest.MonkeyPatch
                          ) -> None:
    nb = execute("analytics-duckdb.ipynb", kernel, shop_server, monkeypatch)
    tables = text_of(cell_after(nb, "%plasma tables"))
    assert "300" in tables  # orders
    revenue = text_of(cell_after(nb, "AS revenue\nFROM orders o"))
    for city in ("Oslo", "Paris", "Lisbon"):
        assert city in revenue
    best = text_of(cell_after(nb, "rank() OVER"))
    assert best == ""  # captured with `best <<`: nothing shown
    shown = [c for c in nb.cells if c.cell_type == "code" and c.source == "best"]
    assert len(text_of(shown[0]).splitlines()) == 4  # a header and three cities
    weekly = text_of(cell_after(nb, "WHERE c.city = :city"))
    assert "running" in weekly
    live = cell_after(nb, "--live -o to_ship")
    assert data_of(live, WIDGET_VIEW)
    final = text_of(cell_after(nb, "await until(lambda: int(to_ship.df"))
    assert final.startswith("orders to ship: 300 -> 275")

