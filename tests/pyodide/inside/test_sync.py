"""Two Pyodide clients (two IndexedDB databases) sync through a real ``plasma-nb serve``.

The server runs in CPython on 127.0.0.1 (started by tests/pyodide/test_in_pyodide.py);
the clients reach it with the Pyodide transport (``pyodide.http.pyfetch``, which in
Node is Node's fetch; pokes over Node's WebSocket). After this module, the CPython
side checks the server's rows (``test_server_state_after_pyodide_sync``).
"""

from __future__ import annotations

import pytest
from pyodide.code import run_js
from pyodide_helpers import eventually, idb_databases, idb_dump

from plasma_nb import MutationError, select
from plasma_nb.client.fetch_transport import FetchTransport


async def connect(client_api, todos, url: str, name: str, **kw):
    return await client_api(
        url, schema=todos.schema, mutators=todos.mutators, name=name, **kw
    )


async def test_fetch_transport_reaches_the_server(server_url: str) -> None:
    transport = FetchTransport(server_url)
    answer = await transport.request("GET", "/healthz")
    assert answer.status == 200
    schema = await transport.request("GET", "/sync/schema")
    assert schema.status == 200 and schema.body["version"] == "1"
    await transport.aclose()


async def test_two_clients_sync_a_mutation(client_api, todos, server_url, run_id) -> None:
    t = todos.todos
    a = await connect(client_api, todos, server_url, f"sync-a-{run_id}", storage="indexeddb")
    # B never pulls on its timer here (pull_interval): the rename must come by poke.
    b = await connect(
        client_api, todos, server_url, f"sync-b-{run_id}", storage="indexeddb",
        pull_interval=600,
    )
    try:
        assert a.status().client_group_id != b.status().client_group_id
        ha = a.mutate.add_todo(id=f"{run_id}-a", title=f"from A {run_id}")
        await ha
        await a.sync()
        await ha.confirmed
        assert a.status().pending == 0

        await b.sync()
        got = await b.query(select(t).where(t.id == f"{run_id}-a"))
        assert [(r["title"], r["done"]) for r in got] == [(f"from A {run_id}", False)]

        hb = b.mutate.mark_done(id=f"{run_id}-a")
        hb2 = b.mutate.add_todo(id=f"{run_id}-b", title=f"from B {run_id}")
        await b.sync()
        await hb.confirmed
        await hb2.confirmed

        await a.sync()
        rows = {r["id"]: r for r in await a.query(select(t))}
        assert rows[f"{run_id}-a"]["done"] is True
        assert rows[f"{run_id}-b"]["title"] == f"from B {run_id}"

        # A's write reaches B through a poke (or B's fallback pull) without B syncing.
        a.mutate.rename(id=f"{run_id}-b", title=f"renamed by A {run_id}")

        async def b_sees_rename():
            got = await b.query(select(t.title).where(t.id == f"{run_id}-b"))
            assert got == [{"title": f"renamed by A {run_id}"}]

        await eventually(b_sees_rename)
    finally:
        await a.close()
        await b.close()


async def test_pokes_connect_in_node(client_api, todos, server_url, run_id) -> None:
    """Node 20 runs with --experimental-websocket, so js.WebSocket exists: pokes connect."""
    c = await connect(client_api, todos, server_url, f"pokes-{run_id}")
    try:
        async def connected():
            assert c.status().pokes == "connected", c.status()

        await eventually(connected)
    finally:
        await c.close()


async def test_without_a_global_websocket_pokes_are_unavailable(
    client_api, todos, server_url, run_id
) -> None:
    """Node without --experimental-websocket (or a worker) has no WebSocket: the client
    says so in its status and syncs on its timer, instead of retrying a socket."""
    assert run_js("typeof WebSocket") == "function"
    run_js("globalThis.__plasmaWebSocket = WebSocket; delete globalThis.WebSocket")
    try:
        assert run_js("typeof WebSocket") == "undefined"
        c = await connect(client_api, todos, server_url, f"no-ws-{run_id}", pull_interval=7)
        try:
            async def unavailable():
                status = c.status()
                assert status.pokes == "unavailable", status
                assert "no WebSocket" in status.pokes_detail, status
                assert "every 7 s" in status.pokes_detail, status

            await eventually(unavailable)
            assert not any("WebSocket" in e for e in c.status().errors)
            await c.mutate.add_todo(id=f"{run_id}-nows", title="polled")
            await c.sync()
            assert c.status().pending == 0
        finally:
            await c.close()
    finally:
        run_js("globalThis.WebSocket = globalThis.__plasmaWebSocket")


async def test_rejection_from_the_server(client_api, todos, server_url, run_id) -> None:
    """A mutation the client accepts but the server rejects: the server's verdict wins."""
    c = await connect(client_api, todos, server_url, f"reject-{run_id}")
    try:
        # rename checks that the row exists: locally it does (added offline, never
        # pushed before the rename is), so craft the conflict through the server:
        # another client deletes the row first.
        other = await connect(client_api, todos, server_url, f"reject-other-{run_id}")
        try:
            await other.mutate.add_todo(id=f"{run_id}-r", title="doomed")
            await other.sync()
            await c.sync()
            c.offline()
            h = c.mutate.rename(id=f"{run_id}-r", title="too late")
            await h
            await other.mutate.delete_todo(id=f"{run_id}-r")
            await other.sync()
        finally:
            await other.close()
        c.online()
        # online() holds at once: a sync() right after it goes out.
        assert not c.status().offline
        await c.sync()
        with pytest.raises(MutationError, match="no todo with id"):
            await h.confirmed
        assert await c.query(select(todos.todos).where(todos.todos.id == f"{run_id}-r")) == []
        assert c.status().pending == 0
    finally:
        await c.close()


async def test_outbox_survives_reopen_then_syncs(client_api, todos, server_url, run_id):
    """Mutated offline, closed (a page reload), reopened: the outbox is pushed."""
    name = f"reload-{run_id}"
    c = await connect(client_api, todos, server_url, name)
    c.offline()
    h = c.mutate.add_todo(id=f"{run_id}-o", title="written offline")
    await h
    await c.close()

    database = next(n for n in await idb_databases() if n.endswith(f":{name}"))
    assert any(k.startswith("_plasma_outbox/") for k in await idb_dump(database))

    c = await connect(client_api, todos, server_url, name)
    try:
        assert c.status().pending == 1
        await c.sync()
        assert c.status().pending == 0
    finally:
        await c.close()
    probe = await connect(client_api, todos, server_url, f"reload-probe-{run_id}")
    try:
        await probe.sync()
        got = await probe.query(select(todos.todos.title).where(todos.todos.id == f"{run_id}-o"))
        assert got == [{"title": "written offline"}]
    finally:
        await probe.close()
