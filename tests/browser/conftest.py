"""tests/browser: the ``--offline`` site in headless Chromium (marked ``browser``).

The browser is Debian's chromium (installed with apt-get when missing and we are
root), driven by Playwright's Python package with ``executable_path``: never
``playwright install``. Without a browser the tests skip, unless ``CI`` is set:
then they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.browser.driver import BrowserUnavailable, ensure_chromium, ensure_playwright
from tests.browser.servers import Process, plasma_server
from tests.lite.sites import BuiltSite, offline_site


@pytest.fixture(scope="session")
def chromium() -> str:
    try:
        ensure_playwright()
        return ensure_chromium()
    except BrowserUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc}; CI is set, so this is a failure, not a skip")
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def site(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> BuiltSite:
    return offline_site(tmp_path_factory)


@pytest.fixture(scope="module")
def server(site: BuiltSite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """``plasma-nb serve notebooks/todos.py --site SITE`` on 127.0.0.1 (one origin)."""
    srv = plasma_server(tmp_path_factory.mktemp("serve"), site=site.path).start()
    try:
        yield srv
    finally:
        srv.stop()
