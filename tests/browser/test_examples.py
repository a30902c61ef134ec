"""The example notebooks open in the lite site's Pyodide kernel as they are.

They declare ``python3`` (ipykernel's name), so that plain Jupyter and nbclient run them
(tests/notebook); the site's only kernel is ``python`` (Pyodide). JupyterLab, and so
JupyterLite, starts the one kernel of the notebook's language when no kernel has its
name: no "Select Kernel" dialog. This checks that on the real site.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.browser.driver import Browser, Notebook
from tests.browser.servers import Process
from tests.lite.sites import BuiltSite

pytestmark = pytest.mark.browser

EXAMPLES = Path(__file__).resolve().parents[2] / "notebooks"


def test_every_example_declares_python_so_either_kernel_starts() -> None:
    for path in sorted(EXAMPLES.glob("*.ipynb")):
        meta = json.loads(path.read_text())["metadata"]
        assert meta["kernelspec"]["language"] == "python", path.name
        assert meta["language_info"]["name"] == "python", path.name


def test_an_example_notebook_runs_in_the_pyodide_kernel(site: BuiltSite,
                                                         server: Process) -> None:
    name = "getting-started.ipynb"
    assert json.loads((site.path / "files" / name).read_text())["metadata"]["kernelspec"][
        "name"] == "python3"
    with Browser() as browser:
        nb = Notebook(browser, server.url, name)
        nb.open()
        # The first code cell imports plasma_nb and loads the magics; it prints nothing.
        assert nb.run(0) == ""
        assert nb.page.locator(".jp-Dialog").count() == 0
        assert nb.page.locator(".jp-Toolbar-kernelName").first.inner_text() == (
            "Python (Pyodide)")
        assert browser.requests.external() == [], browser.requests.external()
