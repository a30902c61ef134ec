"""Two server instances on one Postgres database, written to concurrently through both.

Raw pushers (httpx, one client group each) alternate between the instances; real plasma_nb
clients push through one instance each; meanwhile a puller pulls incrementally, alternating
too. At the end the puller holds exactly what the database holds: no pull missed a change
committed late with a lower version, and every mutation was applied once.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx
import pytest

import plasma_nb as plasma
from tests.scale.app import mutators, schema
from tests.scale.cluster import (
    Cluster,
    apply_patch,
    confirmed,
    eventually,
    mutation,
    pull_body,
    push_body,
)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

RAW_PUSHERS = 4
PUSHES = 30
CLIENT_MUTATIONS = 15


class RawPusher:
    """One client group, pushing batches of 1-3 mutations through alternating instances,
    and keeping what the server must end up holding for it."""

    def __init__(self, k: int, http: list[httpx.AsyncClient], seed: int) -> None:
        self.k = k
        self.group = f"raw-group-{k}"
        self.client = f"raw-client-{k}"
        self.http = http
        self.rng = random.Random(seed)
        self.next_id = 1
        self.notes: dict[str, dict[str, Any]] = {}
        self.bumps = 0
        self.retries = 0
        self._count = 0

    def _one(self) -> dict[str, Any]:
        mid, self.next_id = self.next_id, self.next_id + 1
        roll = self.rng.random()
        if roll < 0.15:
            self.bumps += 1
            return mutation(self.client, mid, "bump", id="shared")
        if self.notes and roll < 0.30:
            victim = self.rng.choice(sorted(self.notes))
            del self.notes[victim]
            return mutation(self.client, mid, "delete_note", id=victim)
        if self.notes and roll < 0.55:
            target = self.rng.choice(sorted(self.notes))
            body = f"edit {mid}"
            self.notes[target]["body"] = body
            return mutation(self.client, mid, "edit_note", id=target, body=body)
        self._count += 1
        id = f"raw{self.k}-{self._count}"
        note: dict[str, Any] = {"id": id, "author": self.client, "n": self._count, "body": None}
        self.notes[id] = note
        return mutation(self.client, mid, "add_note", **note)

    async def run(self) -> None:
        for i in range(PUSHES):
            batch = [self._one() for _ in range(self.rng.randint(1, 3))]
            http = self.http[(self.k + i) % len(self.http)]
            while True:
                r = await http.post("/sync/push", json=push_body(self.group, batch))
                if r.status_code != 503:  # transient: the same push again is safe
                    break
                self.retries += 1
                await asyncio.sleep(0.05)
            assert r.status_code == 200, r.text
            assert r.json().get("mutationErrors", []) == [], r.text
            await asyncio.sleep(self.rng.random() * 0.01)


class Puller:
    """Pulls incrementally from alternating instances until told to stop."""

    def __init__(self, http: list[httpx.AsyncClient]) -> None:
        self.http = http
        self.state: dict[str, dict[str, Any]] = {}
        self.cookie: int | None = None
        self.pulls = 0
        self.clears = 0
        self.stop = asyncio.Event()

    async def pull_once(self) -> None:
        http = self.http[self.pulls % len(self.http)]
        self.pulls += 1
        r = await http.post("/sync/pull", json=pull_body("puller", self.cookie))
        if r.status_code == 503:
            return
        assert r.status_code == 200, r.text
        body = r.json()
        assert "error" not in body, body
        if self.cookie is not None:
            assert body["cookie"] >= self.cookie, "a cookie went backwards"
        self.clears += sum(op["op"] == "clear" for op in body["patch"])
        apply_patch(self.state, body["patch"])
        self.cookie = body["cookie"]

    async def run(self) -> None:
        while not self.stop.is_set():
            await self.pull_once()
            await asyncio.sleep(0.003)
        for _ in self.http:  # one more from each instance, after everything committed
            await self.pull_once()


async def test_concurrent_pushers_through_two_instances_and_an_incremental_puller(
    cluster: Cluster,
) -> None:
    a, b = cluster[0], cluster[1]
    async with (
        httpx.AsyncClient(base_url=a.url, timeout=30) as http_a,
        httpx.AsyncClient(base_url=b.url, timeout=30) as http_b,
    ):
        http = [http_a, http_b]
        pushers = [RawPusher(k, http, seed=k) for k in range(RAW_PUSHERS)]
        puller = Puller(http)
        clients = [
            await plasma.connect(inst.url, schema=schema, mutators=mutators, name=f"c-{inst.name}",
                                 storage="memory", thread=False, push_delay=0.005)
            for inst in (a, b)
        ]
        try:
            pulling = asyncio.create_task(puller.run())

            async def real_client(client: plasma.Client, tag: str) -> None:
                handles = []
                for i in range(CLIENT_MUTATIONS):
                    handles.append(client.mutate.add_note(id=f"{tag}-{i}", author=tag, n=i))
                    handles.append(client.mutate.bump(id="shared"))
                    await asyncio.sleep(0.01)
                for h in handles:
                    await confirmed(client, h, within=30)

            await asyncio.gather(
                *(p.run() for p in pushers),
                *(real_client(c, f"client-{inst.name}") for c, inst in zip(clients, (a, b),
                                                                          strict=True)),
            )
            puller.stop.set()
            await asyncio.wait_for(pulling, 30)
        finally:
            for c in clients:
                await c.close()

        # The puller, pulling incrementally throughout, ends with exactly the database.
        assert puller.clears == 1  # the first pull only: every later one was incremental
        assert puller.pulls > 10
        assert puller.state == await cluster.state()
        [(version,)] = await cluster.fetch("SELECT version FROM _plasma_meta")
        assert puller.cookie == version

        # Every mutation applied once: the shared counter and every group's last id.
        total_bumps = sum(p.bumps for p in pushers) + 2 * CLIENT_MUTATIONS
        assert puller.state["counters/shared"]["n"] == total_bumps
        expected = {f"notes/{id}": note for p in pushers for id, note in p.notes.items()}
        raw_notes = {k: v for k, v in puller.state.items() if k.startswith("notes/raw")}
        assert raw_notes == expected
        for tag in ("client-a", "client-b"):
            assert {k for k in puller.state if k.startswith(f"notes/{tag}-")} == {
                f"notes/{tag}-{i}" for i in range(CLIENT_MUTATIONS)
            }
        clients_table = await cluster.fetch("SELECT id, last_mutation_id FROM _plasma_clients")
        last_ids = {r["id"]: r["last_mutation_id"] for r in clients_table}
        for p in pushers:
            assert last_ids[p.client] == p.next_id - 1
        assert await cluster.fetch("SELECT * FROM _plasma_mutation_errors") == []

        # And each group's own pull reports its last mutation id, whichever instance answers.
        for p in pushers:
            answer = await http[p.k % 2].post("/sync/pull", json=pull_body(p.group, None))
            body = answer.json()
            assert body["lastMutationIDChanges"] == {p.client: p.next_id - 1}


async def test_both_instances_serve_the_same_snapshot(cluster: Cluster) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        answers = [
            (await http.post(f"{inst.url}/sync/pull", json=pull_body("snapshot", None))).json()
            for inst in cluster
        ]

        async def healthy() -> bool:
            versions = {(await http.get(f"{inst.url}/healthz")).json()["version"]
                        for inst in cluster}
            return len(versions) == 1

        await eventually(healthy)
    first, second = answers
    assert first["cookie"] == second["cookie"]
    assert sorted(first["patch"], key=str) == sorted(second["patch"], key=str)
