"""Fixtures of the notebook tests: an IPython shell with the extension loaded, a real
``plasma-nb serve``, and a recording comm for widgets."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.notebook.helpers import TODOS, RecordingComm, Server


@pytest.fixture(autouse=True)
def plasma_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep replicas out of the real home directory."""
    home = tmp_path / "plasma_home"
    monkeypatch.setenv("PLASMA_NB_HOME", str(home))
    return home


@pytest.fixture
def comms(monkeypatch: pytest.MonkeyPatch) -> list[RecordingComm]:
    """Every comm a widget opens, recorded instead of sent to a frontend."""
    import ipywidgets.comm

    opened: list[RecordingComm] = []

    def create_comm(**kwargs: Any) -> RecordingComm:
        comm = RecordingComm(**kwargs)
        opened.append(comm)
        return comm

    monkeypatch.setattr(ipywidgets.comm, "create_comm", create_comm)
    return opened


@pytest.fixture
def ip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, comms: list[RecordingComm]
) -> Iterator[Any]:
    """IPython's test shell with ``%load_ext plasma_nb``; connections closed afterwards."""
    from IPython.testing import globalipapp

    globalipapp.start_ipython()  # once per process; it then rebinds get_ipython
    shell = globalipapp.get_ipython()
    monkeypatch.chdir(tmp_path)
    shell.run_line_magic("load_ext", "plasma_nb")
    yield shell
    magics = shell.user_ns.get("__plasma_magics__")
    if magics is not None:
        for conn in list(magics.connections.values()):
            conn.close_extras()
            asyncio.run(conn.client.close())
        magics.connections.clear()
        magics.current = None
    shell.run_line_magic("unload_ext", "plasma_nb")
    shell.user_ns.pop("__plasma_magics__", None)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """``plasma-nb serve notebooks/todos.py`` on a free port."""
    served = Server(TODOS, tmp_path)
    try:
        yield served
    finally:
        served.stop()
