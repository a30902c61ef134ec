"""SyncStatus through a recording comm: the state it sends and its buttons."""

from __future__ import annotations

import asyncio

import pytest

import plasma_nb as plasma
from plasma_nb.cli import load_schema_module
from plasma_nb.notebook.sync_status import SyncStatus
from tests.notebook.helpers import TODOS, RecordingComm, Server, wait_for

pytestmark = pytest.mark.slow


async def test_status_buttons_and_updates(comms: list[RecordingComm], server: Server) -> None:
    schema, mutators = load_schema_module(str(TODOS))
    client = await plasma.connect(server.url, schema=schema, mutators=mutators, name="st")
    try:
        await client.sync()
        widget = SyncStatus(client, interval=0.05)
        [comm] = [c for c in comms if c.comm_id == widget.comm.comm_id]
        opened = comm.opened["data"]["state"]
        assert opened["url"] == server.url
        assert opened["online"] is True and opened["pending"] == 0
        assert opened["last_pull"].endswith("Z")

        comm.from_browser(custom={"action": "offline"})
        assert widget.offline and not widget.online
        client.mutate.add_todo(id="a", title="A")
        await asyncio.to_thread(wait_for, lambda: widget.pending == 1, 10, "pending 1")

        comm.from_browser(custom={"action": "online"})
        await asyncio.to_thread(wait_for, lambda: widget.pending == 0 and widget.online, 15,
                                "the push")
        assert widget.last_push.endswith("Z")

        comm.from_browser(custom={"action": "sync"})
        await asyncio.to_thread(wait_for, lambda: widget.message == "synced", 15, "the sync")
        assert not widget.busy
        # Each refresh went out as one message with only what changed.
        for state in comm.updates():
            assert set(state) <= set(opened) | {"busy", "message"}
        widget.close()
    finally:
        await client.close()
