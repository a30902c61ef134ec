"""``%load_ext plasma_nb`` in the browser: ``%plasma connect``, live tables, mutations,
and pokes between two browser profiles, neither running a cell to see the other's change.

Profile A opens a test notebook, profile B the demo notebook (notebooks/demo.ipynb),
both on ``plasma-nb serve --site`` (one origin), each with its own IndexedDB; no
request leaves 127.0.0.1.
"""

from __future__ import annotations

import re

import pytest

from tests.browser.driver import Browser, Notebook
from tests.browser.servers import Process, server_rows
from tests.lite.sites import BuiltSite

pytestmark = pytest.mark.browser

FROM_A = "added by profile A"
FROM_DEMO = "Buy milk"  # what the demo notebook adds


def connect_and_watch(nb: Notebook, server: Process, name: str) -> str:
    """Run the cells up to the live table (the same four in both notebooks)."""
    nb.wait_open()
    assert nb.run(0) == ""  # %load_ext plasma_nb: quiet
    assert server.url in nb.run(1)
    connected = nb.run(2)
    assert re.match(rf"Connected '{name}' to http://127\.0\.0\.1:\d+: \d+ todos; 0 pending\.$",
                    connected), connected
    return nb.run(3)


def test_live_tables_update_here_and_in_another_profile(site: BuiltSite,
                                                        server: Process) -> None:
    with Browser() as a, Browser(share=a) as b:
        nb_a = Notebook(a, server.url, "e2e_magics.ipynb")
        demo = Notebook(b, server.url, "demo.ipynb")
        nb_a.start()
        demo.start()  # both kernels boot at once
        before_a = connect_and_watch(nb_a, server, "e2e-magics")
        before_b = connect_and_watch(demo, server, "todos")
        assert FROM_A not in before_a and FROM_A not in before_b

        assert "add_todo" in nb_a.run(4)  # %plasma mutate add_todo ...
        # The live table of cell 3 changed without running it again: here at once ...
        nb_a.wait_for_output(3, re.escape(FROM_A), timeout=30)
        # ... and in the other profile once the server poked it (it runs nothing).
        demo.wait_for_output(3, re.escape(FROM_A), timeout=60)

        assert "add_todo" in demo.run(4)  # the demo notebook adds "Buy milk"
        nb_a.wait_for_output(3, re.escape(FROM_DEMO), timeout=60)
        assert "mark_done" in demo.run(5)
        status = demo.run(6)  # the Python API on the same connection
        assert "Status(" in status and "indexeddb:" in status, status

        expected = {FROM_A, FROM_DEMO, "Water the plants"}
        for _ in range(60):  # the last one is pushed in the background
            titles = {row["title"] for row in server_rows(server.url).values()}
            if expected <= titles:
                break
            b.wait(0.5)
        assert expected <= titles
        for browser in (a, b):
            assert browser.requests.external() == [], browser.requests.external()
