"""Load: many clients (the CPython client library, concurrently in one event loop) push
deposits to one real ``plasma-nb serve``, each with a token of its own (so each has its
own rate limit, as separate users would). Every mutation is applied once; the push
latencies the clients saw are printed (p50, p99, max), not asserted: docs/reliability.md
records the long version's figures."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from pathlib import Path

import httpx

import plasma_nb as plasma
from plasma_nb.client import Client
from tests.client.server_db import ServerDB
from tests.reliability import bank
from tests.reliability.budget import LONG, base_seed, replayable, scaled
from tests.reliability.ledger import Book
from tests.reliability.serving import BankServer
from tests.scale.cluster import confirmed


class Timed(httpx.AsyncBaseTransport):
    """httpx's own transport, timing each push from request to the end of its answer."""

    def __init__(self, latencies: list[float]) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.latencies = latencies

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        started = time.perf_counter()
        response = await self.inner.handle_async_request(request)
        await response.aread()
        if request.url.path == "/sync/push":
            self.latencies.append(time.perf_counter() - started)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 \
        else values[0]


async def test_many_clients_push_to_one_server_and_each_mutation_applies_once(
    server_db: ServerDB, tmp_path: Path,
) -> None:
    clients_n, per_client = (scaled(10, 50), scaled(50, 200))
    seed = base_seed(f"load on {server_db.backend}")
    rng = random.Random(seed)
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("".join(f"tok-{i} user{i}\n" for i in range(clients_n)))
    server = BankServer(server_db.url, tmp_path, "--token-file", str(tokens))
    server.start()
    latencies: list[float] = []
    book = Book()
    clients: list[Client] = []
    try:
        await asyncio.to_thread(server.wait_ready)
        for i in range(clients_n):
            clients.append(await plasma.connect(
                server.url, schema=bank.schema, mutators=bank.mutators, name=f"load{i}",
                token=f"tok-{i}", storage="memory", thread=False, pokes=False,
                pull_interval=0.5, transport=Timed(latencies)))

        async def work(i: int, client: Client) -> None:
            pause = random.Random(rng.random())
            for _ in range(per_client):
                booked = book.mutate(client, f"user{i}", "deposit", account=f"a{i % 5}",
                                     amount=1)
                assert booked is not None
                await booked.handle
                await asyncio.sleep(pause.random() * 0.02)
            for b in book.booked:
                if b.client is client:
                    await confirmed(client, b.handle, within=300)

        started = time.monotonic()
        with replayable(seed):
            await asyncio.gather(*(work(i, c) for i, c in enumerate(clients)))
            elapsed = time.monotonic() - started
            fates = book.check(server_db)
    finally:
        for client in clients:
            await client.close()
        server.stop()
    total = clients_n * per_client
    assert fates["applied"] == total
    print(f"load ({'long' if LONG else 'short'}, {server_db.backend}): {clients_n} clients x "
          f"{per_client} mutations = {total} in {elapsed:.1f} s ({total / elapsed:.0f}/s), "
          f"{len(latencies)} pushes; push latency p50 {percentile(latencies, 50) * 1000:.0f} ms"
          f", p99 {percentile(latencies, 99) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms")
    assert not server.errors(), server.output()
