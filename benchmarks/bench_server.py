"""The server engine applying mutations, against raw sqlite3 doing the same writes.

Both sides use one SQLite file in WAL mode with synchronous=NORMAL and the same
change-log triggers; each mutation is two updates and one insert.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import Context, benchmark, min_ratio
from plasma_nb import Mutators, Schema, col, table
from plasma_nb.core.dialect import SQLiteDialect
from plasma_nb.core.mutators import Context as Ctx
from plasma_nb.core.protocol import Mutation, PushRequest
from plasma_nb.server.storage.sqlite import SQLiteStorage
from plasma_nb.server.storage.sqlite_sql import internal_ddl, trigger_ddl

SINGLE_MUTATIONS = 200
BATCH = 1000
ACCOUNTS = 100

accounts = table("accounts", id=col.id(), balance=col.integer())
entries = table("entries", id=col.id(), account=col.text(), amount=col.integer())
schema = Schema([accounts, entries])
mutators = Mutators(schema)


@mutators.register
async def transfer(tx: Any, *, entry: str, src: str, dst: str, src_balance: int,
                   dst_balance: int, amount: int) -> None:
    await tx.update(accounts).set(balance=src_balance).where(accounts.id == src)
    await tx.update(accounts).set(balance=dst_balance).where(accounts.id == dst)
    await tx.insert(entries).values(id=entry, account=src, amount=amount)


def _args(n: int) -> dict[str, Any]:
    return {
        "entry": f"e{n:09d}",
        "src": f"a{n % ACCOUNTS}",
        "dst": f"a{(n + 1) % ACCOUNTS}",
        "src_balance": -n,
        "dst_balance": n,
        "amount": n,
    }


class _Raw:
    """The anchor: the same tables and triggers, written with plain sqlite3."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        dialect = SQLiteDialect()
        self.conn.executescript(internal_ddl())
        self.conn.execute(
            "INSERT INTO _plasma_meta (id, version, pushing, min_version) VALUES (1, 1, 0, 1)"
        )
        for t in schema:
            self.conn.execute(dialect.create_table_sql(t))
            self.conn.executescript(trigger_ddl(t))
        self.conn.executemany(
            "INSERT INTO accounts (id, balance) VALUES (?, 0)",
            [(f"a{i}",) for i in range(ACCOUNTS)],
        )
        self.n = 0

    def _writes(self, a: dict[str, Any]) -> None:
        execute = self.conn.execute
        update = 'UPDATE "accounts" SET "balance" = ? WHERE ("id" = ?)'
        execute(update, (a["src_balance"], a["src"]))
        execute(update, (a["dst_balance"], a["dst"]))
        execute('INSERT INTO "entries" ("id", "account", "amount") VALUES (?, ?, ?)',
                (a["entry"], a["src"], a["amount"]))

    def single(self) -> None:
        for _ in range(SINGLE_MUTATIONS):
            self.n += 1
            self.conn.execute("BEGIN")
            self._writes(_args(self.n))
            self.conn.execute("COMMIT")

    def batch(self) -> None:
        self.conn.execute("BEGIN")
        for _ in range(BATCH):
            self.n += 1
            self._writes(_args(self.n))
        self.conn.execute("COMMIT")


class _Engine:
    """The subject: the server engine's storage processing pushes."""

    def __init__(self, path: Path) -> None:
        self.storage = SQLiteStorage(str(path), schema, mutators)
        self.ctx = Ctx()
        self.n = 0
        self.client = "c1"

    async def open(self) -> None:
        await self.storage.open()
        conn = sqlite3.connect(self.storage.path)
        conn.executemany(
            "INSERT INTO accounts (id, balance) VALUES (?, 0)",
            [(f"a{i}",) for i in range(ACCOUNTS)],
        )
        conn.commit()
        conn.close()

    def _request(self, count: int) -> PushRequest:
        mutations = []
        for _ in range(count):
            self.n += 1
            mutations.append(Mutation(self.client, self.n, "transfer", _args(self.n), time.time()))
        return PushRequest(1, "g1", "p1", "1", tuple(mutations))

    async def single(self) -> None:
        for _ in range(SINGLE_MUTATIONS):
            outcome = await self.storage.push(self._request(1), self.ctx, limit=BATCH)
            assert outcome.processed == 1 and not outcome.response.mutation_errors

    async def batch(self) -> None:
        outcome = await self.storage.push(self._request(BATCH), self.ctx, limit=BATCH)
        assert outcome.processed == BATCH and not outcome.response.mutation_errors


async def _setup() -> tuple[tempfile.TemporaryDirectory[str], _Raw, _Engine]:
    tmp = tempfile.TemporaryDirectory(prefix="plasma-bench-")
    raw = _Raw(Path(tmp.name) / "raw.db")
    engine = _Engine(Path(tmp.name) / "engine.db")
    await engine.open()
    return tmp, raw, engine


def _closer(tmp: tempfile.TemporaryDirectory[str], raw: _Raw, engine: _Engine) -> Any:
    async def close() -> None:
        raw.conn.close()
        await engine.storage.close()
        tmp.cleanup()

    return close


@benchmark(bar=min_ratio(0.50))
async def server_single_mutations() -> Context:
    """200 mutations (2 updates + 1 insert), one transaction each: server engine vs raw."""
    tmp, raw, engine = await _setup()
    return Context(anchor=raw.single, subject=engine.single, close=_closer(tmp, raw, engine))


@benchmark(bar=min_ratio(0.35))
async def server_push_1000() -> Context:
    """One push of 1,000 mutations vs the raw execute loop in one transaction."""
    tmp, raw, engine = await _setup()
    return Context(anchor=raw.batch, subject=engine.batch, close=_closer(tmp, raw, engine))


