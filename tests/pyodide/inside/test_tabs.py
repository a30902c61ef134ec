"""Tabs sharing one IndexedDB database: each its own client, all converging.

Two clients opened on one database name behave as two browser tabs: each has its own
in-memory replica and client id, writes go through one Web Lock (the Node harness
supplies navigator.locks) and a change journal, and a BroadcastChannel message wakes
the other tab. The last test runs the second tab in a second Pyodide instance of the
same Node process (``js.plasmaBootPeer``, tests/pyodide/node/run.mjs), sharing the one
fake-indexeddb.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import js
from pyodide_helpers import eventually, idb_dump

from plasma_nb import select
from plasma_nb.client.fetch_transport import FetchTransport


async def rows_of(client, table) -> dict[str, dict]:
    return {r["id"]: r for r in await client.query(select(table))}


async def server_state(url: str, group: str) -> tuple[dict[str, dict], dict[str, int]]:
    """The server's rows (a fresh pull from nothing) and this group's last mutation ids."""
    transport = FetchTransport(url)
    try:
        fresh = await transport.request("POST", "/sync/pull", json={
            "pullVersion": 1, "clientGroupID": f"check-{uuid.uuid4().hex}", "cookie": None,
            "profileID": "check", "schemaVersion": "1"})
        mine = await transport.request("POST", "/sync/pull", json={
            "pullVersion": 1, "clientGroupID": group, "cookie": None,
            "profileID": "check", "schemaVersion": "1"})
    finally:
        await transport.aclose()
    rows = {op["key"].split("/", 1)[1]: op["value"]
            for op in fresh.body["patch"] if op["op"] == "put"}
    return rows, mine.body["lastMutationIDChanges"]


async def test_a_tab_sees_another_tabs_mutations_live(client_api, todos, idb_name) -> None:
    t = todos.todos
    a = await client_api(None, schema=todos.schema, mutators=todos.mutators, name=idb_name)
    b = await client_api(None, schema=todos.schema, mutators=todos.mutators, name=idb_name)
    try:
        live = b.live(select(t).order_by(t.id))
        heard = []
        live.subscribe(heard.append)
        h = a.mutate.add_todo(id="t1", title="from A")
        await h

        async def b_shows_it():
            assert [r["title"] for r in live.rows] == ["from A"]
            assert heard, "b's subscriber heard nothing"
        await eventually(b_shows_it)
        # b's own mutation of a's row, rebased nowhere: a sees it in turn.
        await b.mutate.mark_done(id="t1")

        async def a_shows_it():
            assert (await rows_of(a, t))["t1"]["done"] is True
        await eventually(a_shows_it)

        # Taking in another tab's write writes nothing back: the tabs fall quiet.
        storages = [a._engine.replica.storage, b._engine.replica.storage]
        heads = [s._seen for s in storages]
        await asyncio.sleep(0.5)
        assert [s._seen for s in storages] == heads
        assert heads[0] == heads[1], heads
    finally:
        await a.close()
        await b.close()


async def test_conflicting_tabs_converge_with_the_server(
    client_api, todos, server_url, run_id
) -> None:
    t = todos.todos
    name = f"tabs-{run_id}-{uuid.uuid4().hex[:6]}"

    async def open_tab():
        return await client_api(server_url, schema=todos.schema, mutators=todos.mutators,
                                name=name, pull_interval=600)

    a, b = await open_tab(), await open_tab()
    row = f"{run_id}-tabs-{uuid.uuid4().hex[:6]}"
    try:
        a.offline()  # nothing reaches the server before the tabs have converged locally
        b.offline()
        await a.mutate.add_todo(id=row, title="first")

        async def b_has_it():
            assert row in await rows_of(b, t)
        await eventually(b_has_it)
        # Both tabs edit one row at once, before either write reaches IndexedDB.
        handles = [a.mutate.rename(id=row, title="from A"), b.mutate.rename(id=row, title="from B"),
                   b.mutate.add_todo(id=row + "-b", title="b's own"),
                   a.mutate.mark_done(id=row)]
        for h in handles:
            await h

        async def replicas_agree():
            ra, rb = await rows_of(a, t), await rows_of(b, t)
            assert ra == rb and {row, row + "-b"} <= set(ra)
        await eventually(replicas_agree)
        assert a.status().pending == b.status().pending == 5
        # The second tab to write found the first one's write and rebased onto it.
        storages = [a._engine.replica.storage, b._engine.replica.storage]
        assert sum(s.rebased for s in storages) >= 1, [s.rebased for s in storages]

        # IndexedDB holds that same state whole: a fresh tab loads it.
        fresh = await client_api(None, schema=todos.schema, mutators=todos.mutators, name=name)
        try:
            assert await rows_of(fresh, t) == await rows_of(a, t)
            assert fresh.status().pending == 5
        finally:
            await fresh.close()

        a.online()
        b.online()
        await a.sync()
        await b.sync()
        for h in handles:
            await asyncio.wait_for(h.confirmed, 10)
        await a.sync()
        ra, rb = await rows_of(a, t), await rows_of(b, t)
        assert ra == rb
        assert a.status().pending == b.status().pending == 0
        rows, last = await server_state(server_url, a.status().client_group_id)
        assert {k: v for k, v in rows.items() if k.startswith(row)} == {
            k: {**v, "done": bool(v["done"])} for k, v in ra.items() if k.startswith(row)}
        # Every mutation ran once on the server: each tab's last id is its own count.
        assert last == {a.status().client_id: 3, b.status().client_id: 2}
    finally:
        await a.close()
        await b.close()


async def test_closing_a_tab_writes_its_last_mutations(client_api, todos, idb_name) -> None:
    """Nothing durable-to-be is lost: a tab closed right after mutating, while another
    tab's write got in first, still writes its mutation (rebased) before it lets go."""
    t = todos.todos
    a = await client_api(None, schema=todos.schema, mutators=todos.mutators, name=idb_name)
    b = await client_api(None, schema=todos.schema, mutators=todos.mutators, name=idb_name)
    try:
        hb = b.mutate.add_todo(id="b1", title="from b")
        ha = a.mutate.add_todo(id="a1", title="from a")
        await hb
        await a.close()
        await ha
    finally:
        await b.close()
    again = await client_api(None, schema=todos.schema, mutators=todos.mutators, name=idb_name)
    try:
        assert set(await rows_of(again, t)) == {"a1", "b1"}
        assert again.status().pending == 2
    finally:
        await again.close()


_PEER = """
import json
import plasma_nb
from plasma_nb import select
from plasma_nb._notebooks import todos as T
client = await plasma_nb.connect({url!r}, schema=T.schema, mutators=T.mutators,
                                 name={name!r}, pull_interval=600)
json.dumps([client.status().client_id, client.status().storage])
"""


async def test_two_pyodide_instances_share_one_database(
    client_api, todos, server_url, run_id
) -> None:
    """Two Pyodide interpreters (two tabs) on one fake IndexedDB, both mutating one row."""
    t = todos.todos
    name = f"peer-{run_id}-{uuid.uuid4().hex[:6]}"
    peer = await js.plasmaBootPeer()

    async def in_peer(code: str):
        return json.loads(str(await peer.runPythonAsync(code)))

    a = await client_api(server_url, schema=todos.schema, mutators=todos.mutators, name=name,
                         pull_interval=600)
    row = f"{run_id}-peer-{uuid.uuid4().hex[:6]}"
    try:
        peer_id, storage = await in_peer(_PEER.format(url=server_url, name=name))
        assert storage == a.status().storage and peer_id != a.status().client_id
        await a.mutate.add_todo(id=row, title="from the page")

        async def peer_has_it():
            got = await in_peer(
                f"json.dumps([r['title'] for r in await client.query(select(T.todos))"
                f" if r['id'] == {row!r}])")
            assert got == ["from the page"]
        await eventually(peer_has_it)

        ha = a.mutate.rename(id=row, title="renamed in the page")
        await in_peer(f"h1 = client.mutate.rename(id={row!r}, title='renamed in the peer')\n"
                      f"h2 = client.mutate.add_todo(id={row + '-p'!r}, title='peer row')\n"
                      "await h1; await h2; json.dumps(None)")
        await ha

        async def both_agree():
            mine = await rows_of(a, t)
            theirs = await in_peer(
                "json.dumps({r['id']: r for r in await client.query(select(T.todos))},"
                " default=str)")
            assert json.loads(json.dumps(mine, default=str)) == theirs
            assert {row, row + "-p"} <= set(mine)
        await eventually(both_agree)

        await a.sync()
        await in_peer("await client.sync(); await h1.confirmed; await h2.confirmed; "
                      "json.dumps(client.status().pending)")
        await asyncio.wait_for(ha.confirmed, 10)
        await a.sync()
        await eventually(both_agree)
        rows, last = await server_state(server_url, a.status().client_group_id)
        mine = await rows_of(a, t)
        assert rows[row]["title"] == mine[row]["title"]
        assert rows[row + "-p"]["title"] == "peer row"
        assert last == {a.status().client_id: 2, peer_id: 2}
        stored = await idb_dump(f"plasma_nb::{name}")
        assert f'todos/["{row}-p"]' in stored
    finally:
        await a.close()
        try:
            await peer.runPythonAsync("await client.close()")
        except Exception:  # the peer may not have connected
            pass
