"""Randomized runs: 3 to 5 clients mutate shared accounts and notes, go offline and come
back, close and reopen their local database, and sync, while the server restarts now and
then. At the end every replica equals the server's tables and every mutation was applied
exactly once or rejected with a recorded error (ledger.py).

A seed fixes each run's script of actions (which client does what, when the server goes
down); the interleaving with the clients' background sync loops is left to timing.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

from plasma_nb import SyncError
from plasma_nb.client import Client
from tests.client.server_db import ServerDB
from tests.reliability.budget import LONG, base_seed, replayable, scaled
from tests.reliability.ledger import Book, replica_state, server_state, settle
from tests.reliability.serving import Restartable

ACCOUNTS = ["a0", "a1", "a2"]
NOTES = ["n0", "n1", "n2", "n3"]


@dataclass
class Actor:
    """One client of a run: its local database name and its current ``Client``."""

    name: str
    storage: str
    client: Client
    clients: list[Client] = field(default_factory=list)


class Run:
    def __init__(self, rng: random.Random, server: Restartable, prefix: str) -> None:
        self.rng = rng
        self.server = server
        self.prefix = prefix
        self.book = Book()
        self.actors: list[Actor] = []
        self.down_for = 0  # steps until the server is back
        self.restarts = 0

    async def connect(self, name: str, storage: str) -> Client:
        return await self.server.connect(
            name, storage=storage, push_delay=self.rng.choice([0.0, 0.01, 0.05]),
            pull_interval=self.rng.choice([0.05, 0.2, 1.0]), max_retry_delay=0.5,
        )

    async def setup(self) -> None:
        for i in range(self.rng.randint(3, 5)):
            name = f"{self.prefix}c{i}"
            storage = self.rng.choice(["sqlite", "sqlite", "memory"])
            client = await self.connect(name, storage)
            self.actors.append(Actor(name, storage, client, [client]))

    def mutate(self, actor: Actor) -> None:
        rng = self.rng
        kind = rng.choices(["deposit", "withdraw", "create_note", "retitle", "drop_note",
                            "refuse", "crash"], weights=[5, 5, 3, 3, 1, 1, 1])[0]
        args: dict[str, Any] = {}
        if kind in ("deposit", "withdraw"):
            args = {"account": rng.choice(ACCOUNTS), "amount": rng.randint(1, 20)}
        elif kind in ("create_note", "retitle"):
            args = {"note": rng.choice(NOTES), "title": f"{actor.name} {rng.randrange(1000)}"}
        elif kind == "drop_note":
            args = {"note": rng.choice(NOTES)}
        self.book.mutate(actor.client, actor.name, kind, **args)

    async def step(self) -> None:
        rng = self.rng
        actor = rng.choice(self.actors)
        action = rng.choices(["mutate", "toggle", "sync", "restart", "reopen", "wait"],
                             weights=[60, 8, 8, 3, 3, 10])[0]
        if action == "mutate":
            for _ in range(rng.randint(1, 3)):
                self.mutate(actor)
        elif action == "toggle":
            if actor.client.status().offline:
                actor.client.online()
            else:
                actor.client.offline()
        elif action == "sync" and not actor.client.status().offline:
            try:
                await actor.client.sync()
            except SyncError as exc:
                assert self.server.down, f"sync failed with the server up: {exc}"
        elif action == "restart" and not self.server.down:
            await self.server.stop()
            self.down_for = rng.randint(1, 6)
            self.restarts += 1
        elif action == "reopen" and actor.storage == "sqlite":
            # Another process on the same local database: it pushes what this one left.
            offline = actor.client.status().offline
            await actor.client.close()
            actor.client = await self.connect(actor.name, actor.storage)
            actor.clients.append(actor.client)
            if offline:
                actor.client.offline()
        await asyncio.sleep(rng.random() * 0.03)
        if self.server.down:
            self.down_for -= 1
            if self.down_for <= 0:
                self.server.start()

    async def finish(self, db: ServerDB) -> dict[str, int]:
        if self.server.down:
            self.server.start()
        live = [a.client for a in self.actors]
        for client in live:
            client.online()
        await settle(live)
        expected = server_state(db)
        for actor in self.actors:
            assert await replica_state(actor.client) == expected, f"{actor.name} differs"
        fates = self.book.check(db)
        assert 500 not in self.server.statuses, self.server.statuses
        fates["restarts"] = self.restarts
        return fates

    async def close(self) -> None:
        for actor in self.actors:
            for client in actor.clients:
                await client.close()


async def run_once(seed: int, db: ServerDB, index: int) -> dict[str, int]:
    rng = random.Random(seed)
    server = Restartable(db.url)
    run = Run(rng, server, f"r{index}")
    try:
        await run.setup()
        for _ in range(rng.randint(15, 40)):
            await run.step()
        return await run.finish(db)
    finally:
        await run.close()
        await server.close()


async def test_random_clients_offline_periods_and_restarts_end_equal_and_exactly_once(
    server_db: ServerDB,
) -> None:
    runs = scaled(8, 500) if server_db.backend == "sqlite" else scaled(3, 100)
    seed = base_seed(f"randomized runs on {server_db.backend}")
    totals: dict[str, int] = {}
    started = time.monotonic()
    for i in range(runs):
        # Every run starts on an empty database: on SQLite a file of its own; on Postgres
        # the same schema, wiped (its tables are recreated by the next app).
        if i:
            await server_db.wipe()
        with replayable(seed + i):
            fates = await run_once(seed + i, server_db, i)
        for key, n in fates.items():
            totals[key] = totals.get(key, 0) + n
    elapsed = time.monotonic() - started
    print(f"{runs} runs in {elapsed:.1f} s ({'long' if LONG else 'short'}): {totals}")
    assert totals["applied"] and totals["rejected"]
