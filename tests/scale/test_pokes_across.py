"""Pokes across instances: a change through either instance (or by operator SQL) pokes the
WebSocket listeners of both, and an instance whose LISTEN connection is killed reconnects and
pokes again."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

import plasma_nb as plasma
from plasma_nb import select
from tests.scale.app import mutators, notes, schema
from tests.scale.cluster import Cluster, Instance, eventually, mutation, push_body

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

WAIT = 10.0  # seconds a poke may take before the test gives up


class Listener:
    """A raw WebSocket listener of one instance: the cookies it was poked with."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.cookies: list[int] = []

    async def next_poke(self) -> int:
        async with asyncio.timeout(WAIT):
            message = json.loads(await self.ws.recv())
        assert message["type"] == "poke", message
        cookie = int(message["cookie"])
        self.cookies.append(cookie)
        return cookie

    async def poked_at_least(self, version: int) -> int:
        """Read pokes until one carries ``version`` or later."""
        async with asyncio.timeout(WAIT):
            while True:
                cookie = await self.next_poke()
                if cookie >= version:
                    return cookie


@asynccontextmanager
async def listening(instance: Instance, group: str) -> AsyncIterator[Listener]:
    async with connect(f"{instance.ws_url}?clientGroupID={group}", open_timeout=10) as ws:
        listener = Listener(ws)
        await listener.next_poke()  # the current cookie, sent first
        yield listener


class Pusher:
    """A raw client pushing one note at a time; returns the version it produced."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        self.cluster = cluster
        self.group = f"pusher-{name}"
        self.client = f"pusher-client-{name}"
        self.next_id = 1

    async def push(self, instance: Instance, note: str) -> int:
        body = push_body(self.group, [mutation(self.client, self.next_id, "add_note",
                                               id=note, author=self.client, n=self.next_id)])
        async with httpx.AsyncClient(timeout=30) as http:
            r = await http.post(f"{instance.url}/sync/push", json=body)
        assert r.status_code == 200, r.text
        self.next_id += 1
        return await self.version()

    async def version(self) -> int:
        [(version,)] = await self.cluster.fetch("SELECT version FROM _plasma_meta")
        return int(version)


async def test_a_poke_through_either_instance_reaches_a_listener_of_the_other(
    cluster: Cluster,
) -> None:
    a, b = cluster[0], cluster[1]
    pusher = Pusher(cluster, "across")
    async with listening(a, "on-a") as on_a, listening(b, "on-b") as on_b:
        version = await pusher.push(a, "via-a")
        assert await on_b.poked_at_least(version) == version
        assert await on_a.poked_at_least(version) == version
        version = await pusher.push(b, "via-b")
        assert await on_a.poked_at_least(version) == version
        assert await on_b.poked_at_least(version) == version

        # Operator SQL pokes both too.
        op = await cluster.operator()
        try:
            await op.execute("INSERT INTO notes (id, author, n) VALUES ('by-sql', 'psql', 0)")
        finally:
            await op.close()
        version = await pusher.version()
        assert await on_a.poked_at_least(version) == version
        assert await on_b.poked_at_least(version) == version


async def test_a_change_through_one_instance_reaches_a_client_of_the_other(
    cluster: Cluster,
) -> None:
    a, b = cluster[0], cluster[1]
    # Neither client pulls by itself for an hour: only a poke can bring the change.
    writer = await plasma.connect(a.url, schema=schema, mutators=mutators, name="writer",
                                  storage="memory", thread=False, pull_interval=3600)
    reader = await plasma.connect(b.url, schema=schema, mutators=mutators, name="reader",
                                  storage="memory", thread=False, pull_interval=3600)
    try:
        await eventually(lambda: reader.status().pokes == "connected")
        await writer.sync()
        await reader.sync()
        writer.mutate.add_note(id="w1", author="writer", n=1, body="through a")

        async def reader_has_it() -> bool:
            rows = await reader.query(select(notes.id).where(notes.author == "writer"))
            return [r["id"] for r in rows] == ["w1"]

        await eventually(reader_has_it)
    finally:
        await writer.close()
        await reader.close()


async def test_a_killed_listen_connection_reconnects_and_pokes_resume(cluster: Cluster) -> None:
    a, b = cluster[0], cluster[1]
    pusher = Pusher(cluster, "listen")
    async with listening(b, "listens-on-b") as on_b:
        [old_pid] = await cluster.listen_pids(b)
        op = await cluster.operator()
        try:
            assert await op.fetchval("SELECT pg_terminate_backend($1)", old_pid)
            # A commit right away, through the other instance: whether it lands before b
            # listens again or after, b's listener must be poked with it.
            version = await pusher.push(a, "while-b-reconnects")
            assert await on_b.poked_at_least(version) == version

            async def reconnected() -> list[int]:
                pids = await cluster.listen_pids(b)  # the old one may linger a moment
                return pids if len(pids) == 1 and old_pid not in pids else []

            [new_pid] = await eventually(reconnected)
            assert new_pid != old_pid
            # Pokes resume: a push through a, and operator SQL, both reach b's listener.
            version = await pusher.push(a, "after-reconnect")
            assert await on_b.poked_at_least(version) == version
            await op.execute("UPDATE notes SET body = 'edited' WHERE id = 'after-reconnect'")
            [(version,)] = await cluster.fetch("SELECT version FROM _plasma_meta")
            assert await on_b.poked_at_least(version) == version
        finally:
            await op.close()
    # The instance is healthy and serves the change.
    async with httpx.AsyncClient(timeout=10) as http:
        health = (await http.get(f"{b.url}/healthz")).json()
    assert health["ok"] and health["version"] == version
