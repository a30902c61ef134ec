"""Exactly-once accounting over the bank schema (bank.py): every mutation a test makes is
booked here with its handle; at the end, the server's tables say what became of each one.

A mutation is *applied* when its op has a ledger row, and *rejected* when the server
recorded an error under its (client id, mutation id). ``check`` asserts that each booked
mutation is exactly one of the two, applied at most once, that handles agree with the
server, that no unbooked mutation reached the ledger, and that the balances add up.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from plasma_nb import MutationError, SyncError, select
from plasma_nb.client import Client
from plasma_nb.client.handle import MutationHandle
from tests.client.server_db import ServerDB
from tests.reliability import bank

__all__ = ["Book", "Booked", "replica_state", "server_state", "settle"]

ERRORS = ("SELECT client_id || ':' || mutation_id, message, name "
          "FROM _plasma_mutation_errors")


@dataclass
class Booked:
    op: str
    name: str
    args: dict[str, Any]
    handle: MutationHandle
    client: Client


@dataclass
class Book:
    """The mutations of one test, and those refused at once by the client's replica."""

    booked: list[Booked] = field(default_factory=list)
    refused_locally: int = 0
    _next: int = 0

    def mutate(self, client: Client, actor: str, name: str, **args: Any) -> Booked | None:
        """``client.mutate.NAME(op=..., actor=actor, **args)``; None if the replica refused it
        (a MutationError at once: then nothing may be queued)."""
        self._next += 1
        op = f"{actor}:{self._next}"
        pending = client.status().pending
        try:
            handle = client.mutate(name, op=op, actor=actor, **args)
        except MutationError:
            assert client.status().pending == pending, "a refused mutation was queued"
            self.refused_locally += 1
            return None
        entry = Booked(op, name, {"op": op, "actor": actor, **args}, handle, client)
        self.booked.append(entry)
        return entry

    def check(self, db: ServerDB, others: Iterable[str] = ()) -> dict[str, int]:
        """Assert every booked mutation's fate, and that each of ``others`` (ops pushed
        without this book) was applied once; return the counts of each fate."""
        applied = {op: n for op, (n,) in db.rows("SELECT op, n FROM ledger").items()}
        others = set(others)
        for op in others:
            assert applied.get(op) == 1, f"{op} was applied {applied.get(op, 0)} times"
        errors = {key: (message, name) for key, (message, name) in db.rows(ERRORS).items()}
        fates: Counter[str] = Counter()
        ops = set()
        for b in self.booked:
            ops.add(b.op)
            key = f"{b.handle.client_id}:{b.handle.mutation_id}"
            done, rejected = b.op in applied, key in errors
            assert done != rejected, (
                f"{b.op} ({b.name} {b.args}) is {'both applied and rejected' if done else 'lost'}")
            if done:
                assert applied[b.op] == 1, f"{b.op} ({b.name}) was applied {applied[b.op]} times"
                fates["applied"] += 1
            else:
                message, name = errors[key]
                assert name == b.name, (key, name, b.name)
                assert message.startswith(b.op) or message == f"internal error in mutator {name}"
                fates["rejected"] += 1
            _check_handle(b, done, errors.get(key, ("", ""))[0])
        strays = set(applied) - ops - others
        assert not strays, f"applied but never made: {sorted(strays)[:10]}"
        assert db.rows("SELECT id, balance FROM accounts") == self.balances(applied)
        fates["refused locally"] = self.refused_locally
        return dict(fates)

    def balances(self, applied: Iterable[str]) -> dict[str, tuple[int]]:
        """What the accounts must hold after the applied deposits and withdrawals."""
        done = set(applied)
        totals: Counter[str] = Counter()
        for b in self.booked:
            if b.op in done and b.name in ("deposit", "withdraw"):
                sign = 1 if b.name == "deposit" else -1
                totals[b.args["account"]] += sign * b.args["amount"]
        return {account: (total,) for account, total in totals.items()}


def _check_handle(b: Booked, applied: bool, message: str) -> None:
    """A handle that settled says what the server did; a closed client's handles say
    nothing (the next process pushed their mutations)."""
    confirmed = b.handle.confirmed
    if not confirmed.done():
        assert b.client._engine.closed, f"{b.op}: its handle never settled ({b.handle!r})"
        return
    error = confirmed.exception()
    if isinstance(error, SyncError) and b.client._engine.closed:
        return
    if applied:
        assert error is None, f"{b.op} was applied but its handle raised {error!r}"
    else:
        assert isinstance(error, MutationError), f"{b.op} was rejected; its handle: {error!r}"
        assert str(error) == message, (str(error), message)


async def settle(clients: Iterable[Client], *, within: float = 120.0) -> None:
    """Sync every client until none has a pending mutation, then once more, so that each
    replica holds the server's final state."""
    clients = list(clients)
    deadline = time.monotonic() + within
    while True:
        for client in clients:
            try:
                await client.sync()
            except SyncError:
                pass  # a 503 or a restart in progress: the next round tries again
        if all(c.status().pending == 0 for c in clients):
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"still pending after {within} s: "
                                 f"{[c.status() for c in clients if c.status().pending]}")
        await asyncio.sleep(0.05)
    for client in clients:
        await client.sync()


def server_state(db: ServerDB) -> dict[str, dict[Any, tuple[Any, ...]]]:
    return {t: db.rows(f"SELECT {', '.join(cols)} FROM {t}") for t, cols in bank.TABLES.items()}


async def replica_state(client: Client) -> dict[str, dict[Any, tuple[Any, ...]]]:
    state: dict[str, dict[Any, tuple[Any, ...]]] = {}
    for t, cols in bank.TABLES.items():
        rows = await client.query(select(bank.schema.tables[t]))
        state[t] = {r[cols[0]]: tuple(r[c] for c in cols[1:]) for r in rows}
    return state
