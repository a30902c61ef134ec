"""LiveTable through a recording comm: what crosses to the browser, how much of it, and
that each refresh is one update message, from whichever thread it comes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

import plasma_nb as plasma
from plasma_nb import select
from plasma_nb.notebook.live_table import LiveTable
from tests.notebook.helpers import TODOS, FakeLive, RecordingComm, Server, wait_for

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def rows(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"id": f"k{i:06d}", "title": f"title {i}", "n": i} for i in range(start, start + n)]


def comm_of(comms: list[RecordingComm], widget: Any) -> RecordingComm:
    [comm] = [c for c in comms if c.comm_id == widget.comm.comm_id]
    return comm


def test_opening_sends_the_columns_once_and_only_a_window(comms: list[RecordingComm]) -> None:
    live = FakeLive(["id", "title", "n"], rows(100_000))
    table = LiveTable(live, page_size=50)
    comm = comm_of(comms, table)
    state = comm.opened["data"]["state"]
    assert state["columns"] == ["id", "title", "n"]
    assert state["total"] == 100_000
    assert state["window_offset"] == 0
    assert len(state["window"]) == 50
    assert state["window"][0] == ["k000000", "title 0", 0]  # lists in column order
    # Besides the module's code and style (sent once per widget), only a few kB.
    data = {k: v for k, v in state.items() if k not in ("_esm", "_css")}
    assert len(json.dumps(data)) < 4_000


def test_each_refresh_is_one_update_message(comms: list[RecordingComm]) -> None:
    live = FakeLive(["id", "title", "n"], rows(1000))
    table = LiveTable(live, page_size=20)
    comm = comm_of(comms, table)
    assert comm.updates() == []
    new = rows(1000)
    new[3] = {"id": "k000003", "title": "changed", "n": 3}
    live.set(new)
    [update] = comm.updates()
    assert set(update) == {"version", "window"}
    assert update["window"][3] == ["k000003", "changed", 3]
    assert "columns" not in update  # the column names went once, at the start

    # A change outside the window sends no rows at all.
    new = list(new)
    new[900] = {"id": "k000900", "title": "far away", "n": 900}
    live.set(new)
    assert comm.updates()[-1] == {"version": live.version}
    # Rows added: the count changes, the visible rows do not.
    live.set(new + rows(5, start=1000))
    assert comm.updates()[-1] == {"version": live.version, "total": 1005}
    assert len(comm.updates()) == 3
    assert table.refreshes == 3


def test_scrolling_asks_for_a_window_and_gets_one_message(comms: list[RecordingComm]) -> None:
    live = FakeLive(["id", "title", "n"], rows(100_000))
    table = LiveTable(live, page_size=40)
    comm = comm_of(comms, table)
    comm.from_browser(state={"viewport": [50_000, 40]})
    [update] = comm.updates()
    assert update["window_offset"] == 50_000
    assert [r[2] for r in update["window"]] == list(range(50_000, 50_040))
    assert max(comm.sizes()) < 4_000
    # Past the end: the last full window.
    comm.from_browser(state={"viewport": [200_000, 40]})
    assert comm.updates()[-1]["window_offset"] == 100_000 - 40


def test_sorting_orders_every_row_not_just_the_window(comms: list[RecordingComm]) -> None:
    data = [{"id": "a", "n": 3}, {"id": "b", "n": None}, {"id": "c", "n": 1},
            {"id": "d", "n": 2}]
    live = FakeLive(["id", "n"], data)
    table = LiveTable(live, rows_visible=2, page_size=2)
    comm = comm_of(comms, table)
    comm.from_browser(state={"sort": ["n", "asc"]})
    assert comm.updates()[-1]["window"] == [["b", None], ["c", 1]]  # NULLs first
    comm.from_browser(state={"sort": ["n", "desc"]})
    assert comm.updates()[-1]["window"] == [["a", 3], ["d", 2]]
    comm.from_browser(state={"viewport": [2, 2]})
    assert comm.updates()[-1]["window"] == [["c", 1], ["b", None]]  # NULLs last
    comm.from_browser(state={"sort": []})
    assert comm.updates()[-1]["window"] == [["c", 1], ["d", 2]]


def test_pending_rows_are_marked(comms: list[RecordingComm]) -> None:
    live = FakeLive(["id", "title", "n"], rows(10))
    table = LiveTable(live, rows_visible=5, page_size=5)
    comm = comm_of(comms, table)
    live.set(rows(10), pending=frozenset({"k000001", "k000004", "k000009"}))
    [update] = comm.updates()
    assert update["pending"] == [1, 4]  # positions in the window; k000009 is not in it
    assert update["pending_count"] == 3


def test_the_mime_bundle_has_the_widget_and_a_static_table(comms: list[RecordingComm]) -> None:
    live = FakeLive(["id", "title", "n"], rows(30))
    table = LiveTable(live)
    bundle = table._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert data[WIDGET_VIEW]["model_id"] == table.model_id
    html = data["text/html"]
    assert html.count("<tr>") == 1 + 10  # the header and displaylimit rows
    assert "30 rows, showing the first 10" in html
    assert "<th>title</th>" in html


def test_values_are_made_safe_for_json(comms: list[RecordingComm]) -> None:
    import datetime as dt

    live = FakeLive(["id", "v"], [
        {"id": "a", "v": float("nan")}, {"id": "b", "v": {"x": [1, 2]}},
        {"id": "c", "v": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)},
        {"id": "d", "v": b"\x00\x01"},
    ])
    table = LiveTable(live)
    window = comm_of(comms, table).opened["data"]["state"]["window"]
    assert window == [["a", None], ["b", '{"x": [1, 2]}'], ["c", "2024-01-02T03:04:05+00:00"],
                      ["d", "b64:AAE="]]
    json.dumps(window, allow_nan=False)


# -- with a real client ------------------------------------------------------------------------


@pytest.fixture
def todos_module() -> Any:
    from plasma_nb.cli import load_schema_module

    return load_schema_module(str(TODOS))


async def test_local_mutations_refresh_the_table_and_stay_marked_pending(
    comms: list[RecordingComm], todos_module: Any,
) -> None:
    schema, mutators = todos_module
    todos = schema.tables["todos"]
    client = await plasma.connect(None, schema=schema, mutators=mutators, name="lt")
    try:
        live = client.live(select(todos).order_by(todos.title))
        table = LiveTable(live, client=client, page_size=10)
        comm = comm_of(comms, table)
        client.mutate.add_todo(id="b", title="Bread")
        client.mutate.add_todo(id="a", title="Apples")
        await asyncio.to_thread(wait_for, lambda: table.total == 2, 10, "two rows")
        assert table.window == [["a", "Apples", False, None, None],
                                ["b", "Bread", False, None, None]]
        # Local only: nothing confirms them, so both stay marked.
        await asyncio.to_thread(wait_for, lambda: table.pending == [0, 1], 10, "pending marks")
        assert table.pending_count == 2
        # Every refresh was a single update message.
        assert len(comm.updates()) == table.refreshes

        # Sorting a select() opens a second, ordered live query in the client.
        comm.from_browser(state={"sort": ["title", "desc"]})
        assert table._derived is not None
        assert [r[1] for r in table.window] == ["Bread", "Apples"]
        client.mutate.add_todo(id="c", title="Cherries")
        await asyncio.to_thread(wait_for, lambda: table.total == 3, 10, "three rows")
        assert [r[1] for r in table.window] == ["Cherries", "Bread", "Apples"]
        derived = table._derived
        table.close()
        assert derived.closed
    finally:
        await client.close()


@pytest.mark.slow
async def test_a_rejected_mutation_shows_its_message(
    comms: list[RecordingComm], todos_module: Any, server: Server,
) -> None:
    schema, mutators = todos_module
    todos = schema.tables["todos"]
    alice = await plasma.connect(server.url, schema=schema, mutators=mutators, name="alice")
    bob = await plasma.connect(server.url, schema=schema, mutators=mutators, name="bob")
    try:
        await alice.mutate.add_todo(id="t1", title="Milk").confirmed
        await bob.sync()
        live = bob.live(select(todos))
        table = LiveTable(live, client=bob)
        bob.offline()
        bob.mutate.rename(id="t1", title="Oat milk")  # fine locally: bob still has t1
        await alice.mutate.delete_todo(id="t1").confirmed
        bob.online()
        await asyncio.to_thread(wait_for, lambda: table.rejected, 15, "the rejection")
        assert table.rejected == [{"seq": 1, "name": "rename",
                                   "message": "no todo with id 't1'"}]
        assert table.total == 0  # the server's order: the delete came first
        comm = comm_of(comms, table)
        comm.from_browser(custom={"type": "dismiss"})
        assert table.rejected == []
    finally:
        await alice.close()
        await bob.close()
