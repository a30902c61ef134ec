"""Processes killed with SIGKILL: the server in the middle of pushes, many times, and a
client right after ``await h``. Nothing confirmed is lost, nothing is applied twice, and a
mutation that was durable in a dead client's database is pushed by the next process."""

from __future__ import annotations

import asyncio
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

import plasma_nb as plasma
from plasma_nb.client import Client
from tests.client.server_db import ServerDB
from tests.client.test_processes import child_env
from tests.reliability import bank
from tests.reliability.budget import base_seed, replayable, scaled
from tests.reliability.ledger import Book, settle
from tests.reliability.serving import BankServer
from tests.scale.cluster import mutation, push_body

pytestmark = pytest.mark.slow

CHILD = Path(__file__).resolve().parent / "child.py"
# Mutations a client may have waiting before it pauses: without a bound, a backlog built up
# while the server is down goes out in pushes of up to 1000 mutations, which on Postgres on
# a busy machine can outlast the client's 30 s HTTP timeout (the retry waits for the first).
BACKLOG = 200


async def connect(server: BankServer, name: str, **options: Any) -> Client:
    return await plasma.connect(server.url, schema=bank.schema, mutators=bank.mutators,
                                name=name, thread=False, push_delay=0.0, pull_interval=0.2,
                                max_retry_delay=0.5, **options)


class RawPusher:
    """Pushes over plain HTTP, as another implementation would: each push creates a few
    notes; a push answered 200 is confirmed (it committed); one that got no answer is sent
    again, unchanged, until it gets one (pushes are idempotent)."""

    def __init__(self, url: str, rng: random.Random) -> None:
        self.url = url
        self.rng = rng
        self.next_id = 1
        self.confirmed: set[str] = set()
        self.last = ""  # the last answer, or the error instead

    async def push_once(self, http: httpx.AsyncClient) -> None:
        ops = [f"raw:{self.next_id + i}" for i in range(self.rng.randint(1, 5))]
        body = push_body("raw-group", [
            mutation("raw", self.next_id + i, "create_note", op=op, actor="raw", note=op,
                     title="pushed raw")
            for i, op in enumerate(ops)])
        while True:
            try:
                response = await http.post(f"{self.url}/sync/push", json=body)
            except httpx.TransportError as exc:
                self.last = repr(exc)
                await asyncio.sleep(0.05)  # the server is down: the same push again
                continue
            self.last = f"{response.status_code} {response.text[:200]}"
            assert response.status_code in (200, 503), response.text
            if response.status_code == 200:
                assert response.json() == {}, response.text
                self.confirmed.update(ops)
                self.next_id += len(ops)
                return
            await asyncio.sleep(float(response.headers.get("retry-after", "0.1")))


async def test_a_server_killed_during_pushes_loses_nothing_confirmed(
    bank_server: BankServer, server_db: ServerDB,
) -> None:
    kills = scaled(3, 40)
    seed = base_seed(f"server SIGKILLs on {server_db.backend}")
    rng = random.Random(seed)
    book = Book()
    raw = RawPusher(bank_server.url, rng)
    clients = [await connect(bank_server, f"k{i}", storage=rng.choice(["sqlite", "memory"]))
               for i in range(3)]
    stop = asyncio.Event()

    async def work(i: int, client: Client) -> None:
        while not stop.is_set():
            if client.status().pending > BACKLOG:
                await asyncio.sleep(0.05)  # let the backlog drain first
                continue
            booked = book.mutate(client, f"k{i}", "deposit", account=f"a{i % 2}", amount=1)
            assert booked is not None
            await booked.handle
            await asyncio.sleep(rng.random() * 0.02)

    async def push_raw() -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            while not stop.is_set():
                await raw.push_once(http)

    def confirmed() -> set[str]:
        return {b.op for b in book.booked if b.handle.is_confirmed} | raw.confirmed

    workers = [asyncio.create_task(work(i, c)) for i, c in enumerate(clients)]
    workers.append(asyncio.create_task(push_raw()))
    started = time.monotonic()
    try:
        with replayable(seed):
            for _ in range(kills):
                await asyncio.sleep(rng.uniform(0.3, 1.0))
                before = confirmed()
                bank_server.kill()
                stored = set(await asyncio.to_thread(server_db.rows, "SELECT op FROM ledger"))
                assert before <= stored, f"lost after SIGKILL: {sorted(before - stored)[:10]}"
                await asyncio.sleep(rng.uniform(0.0, 0.3))
                bank_server.start()
                await asyncio.to_thread(bank_server.wait_ready)
            stop.set()
            done, stuck = await asyncio.wait(workers, timeout=120)
            assert not stuck, (f"{len(stuck)} workers still busy; the raw pusher's last "
                               f"answer: {raw.last}; clients: {[c.status() for c in clients]}")
            for task in done:
                task.result()
            await settle(clients)
            fates = book.check(server_db, others=raw.confirmed)
    finally:
        stop.set()
        for task in workers:
            task.cancel()
        for client in clients:
            await client.close()
    assert not bank_server.errors(), bank_server.output()
    print(f"{kills} SIGKILLs in {time.monotonic() - started:.1f} s: {fates}, "
          f"{len(raw.confirmed)} raw pushes' notes")
    assert fates["applied"] == len(book.booked) and raw.confirmed


async def test_a_client_killed_right_after_await_h_is_pushed_by_the_next_process(
    bank_server: BankServer, server_db: ServerDB, plasma_home: Path,
) -> None:
    rounds = scaled(3, 30)
    seed = base_seed(f"clients killed after await h on {server_db.backend}")
    rng = random.Random(seed)
    env = child_env(plasma_home)
    printed: dict[str, list[str]] = {}
    made: dict[str, int] = {}
    for batch in range(0, rounds, 3):
        children = {}
        for r in range(batch, min(batch + 3, rounds)):
            name = f"killed{r}"
            made[name] = rng.randint(1, 15)
            children[name] = await asyncio.create_subprocess_exec(
                sys.executable, str(CHILD), bank_server.url, name, name, str(made[name]),
                env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        for name, child in children.items():
            out, err = await asyncio.wait_for(child.communicate(), 60)
            assert child.returncode == -signal.SIGKILL, err.decode()
            printed[name] = out.decode().split()
    with replayable(seed):
        successors = [await connect(bank_server, name, storage="sqlite") for name in printed]
        try:
            await settle(successors)
        finally:
            for client in successors:
                await client.close()
        applied = server_db.rows("SELECT op, n FROM ledger")
        for name, ops in printed.items():
            # Each op was printed right after its `await h`, the last one just before the kill.
            assert ops == [f"{name}:{i}" for i in range(1, made[name] + 1)], ops
            mine = {op: n for op, (n,) in applied.items() if op.startswith(f"{name}:")}
            assert mine == {op: 1 for op in ops}, f"{name}: {mine}"
    print(f"{rounds} clients killed after await h; {sum(map(len, printed.values()))} durable "
          "mutations, each pushed once")
