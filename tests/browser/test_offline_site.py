"""The ``--offline`` site in Chromium: plasma_nb in the Pyodide kernel, IndexedDB, sync.

Served the way users serve it, ``plasma-nb serve notebooks/todos.py --site DIR``
(site and ``/sync`` on one origin, 127.0.0.1). Every request to any other host is
aborted and counted: there must be none. Each test uses a fresh browser profile.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import re
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from plasma_nb.cli import load_schema_module
from tests.browser.driver import Browser, Notebook
from tests.browser.servers import SCHEMA, Process, server_rows
from tests.lite.sites import BuiltSite

pytestmark = pytest.mark.browser


def assert_no_external_requests(browser: Browser) -> None:
    assert browser.requests.external() == [], browser.requests.external()
    assert browser.requests.blocked == []
    # the count is real: the app, Pyodide and the wheels all went through the router
    assert len(browser.requests.seen) > 100


def test_local_mutation_is_kept_in_indexeddb_across_a_reload(site: BuiltSite,
                                                              server: Process) -> None:
    with Browser() as browser:
        nb = Notebook(browser, server.url, "e2e_local.ipynb")
        nb.open()
        first = nb.run(0)
        # plain `import plasma_nb`: preloaded from the site's own Pyodide lock
        assert re.search(r"plasma_nb \S+ emscripten 3\.14", first), first
        assert "STORAGE indexeddb:" in first, first
        assert nb.run(1) == "DURABLE"
        assert nb.run(2) == "ROWS [('local-1', 'written in the browser')]"
        pip = nb.run(3)
        assert pip.endswith(f"PIP {importlib.metadata.version('plasma-nb')}"), pip

        nb.reload()  # a new kernel: the replica loads back from IndexedDB
        nb.run(0)
        assert nb.run(2) == "ROWS [('local-1', 'written in the browser')]"
        databases = nb.page.evaluate("async () => (await indexedDB.databases()).map(d => d.name)")
        assert any("e2e-local" in name for name in databases), databases
        assert_no_external_requests(browser)


async def _cpython_client_round(url: str, title: str) -> list[str]:
    """A CPython client: add a row, sync, and return every title it sees."""
    import plasma_nb as plasma

    schema, mutators = load_schema_module(str(SCHEMA))
    client = await plasma.connect(url, schema=schema, mutators=mutators,
                                  name=f"cpython-{uuid.uuid4().hex[:8]}", storage="memory")
    try:
        h = client.mutate.add_todo(id=f"cpython-{uuid.uuid4().hex[:8]}", title=title)
        await h
        await client.sync()
        await h.confirmed  # raises if the server rejected it
        rows = await client.query("SELECT title FROM todos")
        return sorted(r["title"] for r in rows)
    finally:
        await client.close()


def test_a_browser_and_a_cpython_client_converge(site: BuiltSite, server: Process) -> None:
    with Browser() as browser:
        nb = Notebook(browser, server.url, "e2e_sync.ipynb")
        nb.open()
        assert f"URL {server.url}" in nb.run(0)
        assert nb.run(1) == "CONFIRMED None"
        titles = {row["title"] for row in server_rows(server.url).values()}
        assert "from the browser" in titles

        # Playwright's sync API runs a loop in this thread: the CPython client gets its own.
        with ThreadPoolExecutor(1) as pool:
            seen_by_cpython = pool.submit(
                asyncio.run, _cpython_client_round(server.url, "from CPython")).result(60)
        assert "from the browser" in seen_by_cpython and "from CPython" in seen_by_cpython

        out = nb.run(2)
        assert "'from CPython'" in out and "'from the browser'" in out, out
        assert_no_external_requests(browser)


def test_the_harness_sees_and_stops_requests_to_other_hosts(chromium: str) -> None:
    """What the tests above rely on: a request to another host is recorded and fails."""
    with Browser() as browser:
        page = browser.new_page()
        outcome = page.evaluate("""async () => {
            try { await fetch('https://pypi.org/simple/'); return 'reached'; }
            catch (e) { return 'failed'; } }""")
        browser.wait(0.2)
        assert outcome == "failed"
        assert browser.requests.external() == ["https://pypi.org/simple/"]
        assert browser.requests.blocked == ["https://pypi.org/simple/"]
