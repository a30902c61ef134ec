"""The Postgres backend applying mutations, against raw asyncpg doing the same writes.

Both sides write the same tables in their own Postgres schema (namespace) of one database,
with the same change-log triggers (installed by the backend itself); each mutation is two
updates and one insert, in a transaction of its own. The subject is the server engine's
``storage.push`` of one single-mutation push at a time (what one client's push costs, with
no HTTP); the anchor is a bare asyncpg transaction: BEGIN, the three statements, COMMIT.
Both send the same number of round trips (tests/server/test_postgres_push.py counts the
subject's); the subject also writes its client's last mutation id, and its instance LISTENs,
so each commit's NOTIFY wakes its LISTEN connection (the anchor's triggers notify a channel
nobody listens on). With ``synchronous_commit`` on, both wait for one WAL flush per commit.

The database is ``PLASMA_BENCH_POSTGRES``, else ``PLASMA_TEST_POSTGRES``, else the local
server (postgresql://postgres@127.0.0.1:5432/test); the schemas are dropped afterwards.
"""

from __future__ import annotations

import os
import time
import uuid

import asyncpg

from benchmarks.bench_server import ACCOUNTS, _args, mutators, schema
from benchmarks.harness import Context, benchmark, min_ratio
from plasma_nb.core.mutators import Context as Ctx
from plasma_nb.core.protocol import Mutation, PushRequest
from plasma_nb.server.storage.postgres import PostgresStorage

MUTATIONS = 200
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"

UPDATE = 'UPDATE "accounts" SET "balance" = $1 WHERE ("id" = $2)'
INSERT = 'INSERT INTO "entries" ("id", "account", "amount") VALUES ($1, $2, $3)'


def database_url() -> str:
    return (os.environ.get("PLASMA_BENCH_POSTGRES") or os.environ.get("PLASMA_TEST_POSTGRES")
            or DEFAULT_URL)


def namespaced(url: str, namespace: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}schema={namespace}"


async def _seed(url: str, namespace: str) -> None:
    conn = await asyncpg.connect(url, server_settings={"search_path": f'"{namespace}"'})
    try:
        await conn.executemany("INSERT INTO accounts (id, balance) VALUES ($1, 0)",
                               [(f"a{i}",) for i in range(ACCOUNTS)])
    finally:
        await conn.close()


class _Raw:
    """The anchor: the same tables and triggers, written with one plain asyncpg connection."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.n = 0

    async def mutations(self) -> None:
        conn = self.conn
        for _ in range(MUTATIONS):
            self.n += 1
            a = _args(self.n)
            async with conn.transaction():
                await conn.execute(UPDATE, a["src_balance"], a["src"])
                await conn.execute(UPDATE, a["dst_balance"], a["dst"])
                await conn.execute(INSERT, a["entry"], a["src"], a["amount"])


class _Engine:
    """The subject: the server engine's Postgres storage processing one push per mutation."""

    def __init__(self, storage: PostgresStorage) -> None:
        self.storage = storage
        self.ctx = Ctx()
        self.n = 0

    async def mutations(self) -> None:
        for _ in range(MUTATIONS):
            self.n += 1
            request = PushRequest(1, "g1", "p1", "1", (
                Mutation("c1", self.n, "transfer", _args(self.n), time.time()),
            ))
            outcome = await self.storage.push(request, self.ctx, limit=1000)
            assert outcome.processed == 1 and not outcome.response.mutation_errors


@benchmark(bar=min_ratio(0.70))
async def postgres_mutations() -> Context:
    """200 mutations (2 updates + 1 insert), one push each: Postgres backend vs raw asyncpg."""
    url = database_url()
    tag = uuid.uuid4().hex[:10]
    engine_ns, raw_ns = f"plasma_bench_{tag}_engine", f"plasma_bench_{tag}_raw"
    engine_storage = PostgresStorage(namespaced(url, engine_ns), schema, mutators)
    conn: asyncpg.Connection | None = None

    async def close() -> None:
        if conn is not None:
            await conn.close()
        await engine_storage.close()
        admin = await asyncpg.connect(url)
        try:
            for namespace in (engine_ns, raw_ns):
                await admin.execute(f'DROP SCHEMA IF EXISTS "{namespace}" CASCADE')
        finally:
            await admin.close()

    try:
        await engine_storage.open()
        # The anchor's tables and triggers are the backend's own: let it create them.
        setup = PostgresStorage(namespaced(url, raw_ns), schema, mutators)
        await setup.open()
        await setup.close()
        for namespace in (engine_ns, raw_ns):
            await _seed(url, namespace)
        conn = await asyncpg.connect(url, server_settings={"search_path": f'"{raw_ns}"'})
    except BaseException:
        await close()
        raise
    raw, engine = _Raw(conn), _Engine(engine_storage)
    return Context(anchor=raw.mutations, subject=engine.mutations, close=close)
