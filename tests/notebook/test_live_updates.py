"""A change made by another client reaches a live query's frame and its widget with no call
from the user: in process, and in a real ipykernel between cells."""

from __future__ import annotations

import asyncio
import json
import queue
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

import plasma_nb as plasma
from plasma_nb import select
from plasma_nb.cli import load_schema_module
from plasma_nb.notebook.live_table import LiveTable
from tests.notebook.helpers import TODOS, RecordingComm, Server, wait_for
from tests.notebook.kernel import install_kernelspec, text_of

pytestmark = pytest.mark.slow

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


async def add_from_another_client(server: Server, id: str, title: str) -> None:
    schema, mutators = load_schema_module(str(TODOS))
    other = await plasma.connect(server.url, schema=schema, mutators=mutators,
                                 name=f"other-{id}", storage="memory")
    try:
        await other.mutate.add_todo(id=id, title=title).confirmed
    finally:
        await other.close()


async def test_in_process(server: Server, comms: list[RecordingComm]) -> None:
    schema, mutators = load_schema_module(str(TODOS))
    todos = schema.tables["todos"]
    client = await plasma.connect(server.url, schema=schema, mutators=mutators, name="me")
    try:
        await client.sync()
        live = client.live(select(todos).order_by(todos.title))
        table = LiveTable(live, client=client)
        [comm] = [c for c in comms if c.comm_id == table.comm.comm_id]
        await add_from_another_client(server, "x1", "From someone else")
        # No sync(), no refresh(): the poke makes the engine pull, the live query
        # updates, and the widget sends its new state.
        await asyncio.to_thread(
            wait_for, lambda: any(u.get("total") == 1 for u in comm.updates()), 15,
            "the widget's update")
        [update] = [u for u in comm.updates() if u.get("total") == 1]
        assert update["window"] == [["x1", "From someone else", False, None, None]]
        assert list(live.df["title"]) == ["From someone else"]
        table.close()
    finally:
        await client.close()


async def test_under_ipykernel(server: Server, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = install_kernelspec(tmp_path / "jupyter", monkeypatch)
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            f"%load_ext plasma_nb\n%plasma connect {server.url} --schema {TODOS} --name k"),
        nbformat.v4.new_code_cell(
            "import plasma_nb as plasma\n"
            "client = %plasma client\n"
            "todos = client.schema.tables['todos']\n"
            "live = client.live(plasma.select(todos).order_by(todos.title))\n"
            "live"),
        nbformat.v4.new_code_cell("print(live.df.to_dict('records'))"),
    ]
    runner = NotebookClient(nb, timeout=60, kernel_name=kernel,
                            resources={"metadata": {"path": str(tmp_path)}})
    async with runner.async_setup_kernel():
        await runner.async_execute_cell(nb.cells[0], 0)
        await runner.async_execute_cell(nb.cells[1], 1)
        [view] = [o["data"][WIDGET_VIEW] for o in nb.cells[1].outputs
                  if WIDGET_VIEW in o.get("data", {})]
        await add_from_another_client(server, "x1", "From someone else")
        # No cell runs now: the kernel's engine thread pulls, and the widget's update
        # arrives on its own, as JupyterLab would receive it.
        update = await next_widget_update(runner, view["model_id"], seconds=15)
        assert update["state"]["window"] == [["x1", "From someone else", False, None, None]]
        assert update["state"]["total"] == 1
        await runner.async_execute_cell(nb.cells[2], 2)
    assert "'title': 'From someone else'" in text_of(nb.cells[2])


async def next_widget_update(runner: Any, model_id: str, seconds: float) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            message = await runner.kc.get_iopub_msg(timeout=0.5)
        except queue.Empty:
            continue
        content = message["content"]
        if (message["msg_type"] == "comm_msg" and content["comm_id"] == model_id
                and content["data"].get("method") == "update"):
            data: dict[str, Any] = content["data"]
            json.dumps(data)  # what went over the wire is plain JSON
            return data
    raise AssertionError("no widget update arrived")
