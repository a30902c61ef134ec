"""The schema of the reliability tests: every mutator that applies counts itself in a ledger.

``ledger`` has one row per applied mutation, keyed by the ``op`` argument (unique per
mutation the tests make), with ``n`` = how many times it was applied: a mutation applied
twice shows ``n = 2``, one lost or rolled back has no row. Rejections name their op in the
message (except ``crash``, which the server reports as an internal error), so a test can
tell every mutation's fate from the server's tables alone.

Conflicts come from shared keys: several clients withdraw from the same accounts (the
server refuses an overdraft that a stale replica allowed) and create or retitle the same
notes. ``refuse`` and ``crash`` pass on the client and fail on the server, ``crash`` after
writing (the server must roll its writes back). ``plasma-nb serve tests/reliability/bank.py``
serves it.
"""

from __future__ import annotations

from typing import Any

from plasma_nb import MutationError, Mutators, Schema, col, table

ledger = table("ledger", op=col.text(primary_key=True), actor=col.text(), n=col.integer())
accounts = table("accounts", id=col.id(), balance=col.integer(default=0))
notes = table("notes", id=col.id(), title=col.text(), photo=col.blob(nullable=True))
schema = Schema([ledger, accounts, notes], version="1")
mutators = Mutators(schema)

#: Every table, with its key first: what a replica and the server must agree on.
TABLES = {"ledger": ("op", "actor", "n"), "accounts": ("id", "balance"),
          "notes": ("id", "title", "photo")}


async def _count(tx: Any, op: str, actor: str) -> None:
    row = await tx.get(ledger, op)
    if row is None:
        await tx.insert(ledger).values(op=op, actor=actor, n=1)
    else:
        await tx.update(ledger).set(n=row["n"] + 1).where(ledger.op == op)


@mutators.register
async def deposit(tx: Any, *, op: str, actor: str, account: str, amount: int) -> None:
    row = await tx.get(accounts, account)
    if row is None:
        await tx.insert(accounts).values(id=account, balance=amount)
    else:
        await tx.update(accounts).set(balance=row["balance"] + amount).where(
            accounts.id == account)
    await _count(tx, op, actor)


@mutators.register
async def withdraw(tx: Any, *, op: str, actor: str, account: str, amount: int) -> None:
    row = await tx.get(accounts, account)
    balance = 0 if row is None else row["balance"]
    if balance < amount:
        raise MutationError(f"{op}: account {account} holds {balance}, not {amount}")
    await tx.update(accounts).set(balance=balance - amount).where(accounts.id == account)
    await _count(tx, op, actor)


@mutators.register
async def create_note(tx: Any, *, op: str, actor: str, note: str, title: str,
                      photo: str | None = None) -> None:
    if await tx.get(notes, note) is not None:
        raise MutationError(f"{op}: note {note} exists")
    await tx.insert(notes).values(id=note, title=title, photo=photo)
    await _count(tx, op, actor)


@mutators.register
async def retitle(tx: Any, *, op: str, actor: str, note: str, title: str) -> None:
    if await tx.get(notes, note) is None:
        raise MutationError(f"{op}: no note {note}")
    await tx.update(notes).set(title=title).where(notes.id == note)
    await _count(tx, op, actor)


@mutators.register
async def drop_note(tx: Any, *, op: str, actor: str, note: str) -> None:
    await tx.delete(notes).where(notes.id == note)
    await _count(tx, op, actor)


@mutators.register
async def refuse(tx: Any, *, op: str, actor: str) -> None:
    if tx.location == "server":
        raise MutationError(f"{op}: refused by the server")
    await _count(tx, op, actor)


@mutators.register
async def crash(tx: Any, *, op: str, actor: str) -> None:
    await _count(tx, op, actor)
    if tx.location == "server":
        raise RuntimeError(f"{op}: a bug in the mutator, after it wrote")
