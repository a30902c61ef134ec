"""Two tabs of one browser on one notebook and one local database (docs/browser.md).

Each page runs its own Pyodide kernel and so its own client of the IndexedDB database
``e2e-tabs``: each sees the other's rows through its live query without running
anything, both rename one row, and after a sync both hold what the server holds.
"""

from __future__ import annotations

import json

import pytest

from tests.browser.driver import Browser, Notebook
from tests.browser.servers import Process, server_rows
from tests.browser.test_offline_site import assert_no_external_requests
from tests.lite.sites import BuiltSite

pytestmark = pytest.mark.browser


def _client(output: str) -> list[str]:
    """The client id and group id of the first cell's ``CLIENT`` line (the cell may print
    more, a warning of the engine's for one: it names what went on)."""
    line = next((x for x in output.splitlines() if x.startswith("CLIENT ")), None)
    assert line is not None, f"no CLIENT line in the first cell's output:\n{output}"
    return line.split()[1:]


def _rows(output: str) -> dict[str, str]:
    line = next(x for x in output.splitlines() if x.startswith("ROWS "))
    return dict(json.loads(line[len("ROWS "):]))


def test_two_tabs_share_a_database_live_and_converge(site: BuiltSite, server: Process) -> None:
    with Browser() as browser:
        a = Notebook(browser, server.url, "e2e_tabs.ipynb")
        b = Notebook(browser, server.url, "e2e_tabs.ipynb", page=browser.new_page())
        a.open()
        # Not at once: JupyterLite's own first load of its contents store, in two pages
        # at the same moment, fails ("File Load Error"). b boots while a's kernel starts.
        b.start()
        client_a, group_a = _client(a.run(0))
        b.wait_open()
        client_b, group_b = _client(b.run(0))
        assert client_a != client_b and group_a == group_b  # one database, two clients

        assert a.run(1) == f"MINE tab-{client_a}"
        assert b.run(1) == f"MINE tab-{client_b}"
        # Each live query shows the other tab's row: nothing was run there to fetch it.
        assert a.run(2) == "SEEN 2"
        assert b.run(2) == "SEEN 2"

        assert a.run(3) == "SHARED"
        assert a.run(4) == "RENAMED"
        assert b.run(4) == "RENAMED"
        out_a = a.run(5)
        out_b = b.run(5)
        out_a = a.run(5)  # a pulls what b's sync confirmed
        assert out_a.endswith("PENDING 0") and out_b.endswith("PENDING 0"), (out_a, out_b)
        rows_a, rows_b = _rows(out_a), _rows(out_b)
        assert rows_a == rows_b
        assert rows_a["shared"] in (f"renamed by {client_a}", f"renamed by {client_b}")
        on_server = {key.split("/", 1)[1]: row["title"]
                     for key, row in server_rows(server.url).items()}
        assert {k: on_server[k] for k in rows_a} == rows_a
        assert_no_external_requests(browser)
