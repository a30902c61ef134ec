"""The schema and mutators the client tests share (imported by conftest and tests)."""

from __future__ import annotations

import asyncio

from plasma_nb import MutationError, Mutators, Schema, col, table

todos = table(
    "todos",
    id=col.id(),
    title=col.text(),
    done=col.boolean(default=False),
    owner=col.text(nullable=True),
    score=col.real(nullable=True),
    tags=col.json(nullable=True),
)
counters = table("counters", id=col.text(primary_key=True), n=col.integer(default=0))
schema = Schema([todos, counters], version="1")
mutators = Mutators(schema)


@mutators.register
async def add_todo(tx, *, id: str, title: str):
    if not title.strip():
        raise MutationError("title must not be empty")
    await tx.insert(todos).values(id=id, title=title, owner=tx.ctx.user)


@mutators.register
async def mark_done(tx, *, id: str):
    await tx.update(todos).set(done=True).where(todos.id == id)


@mutators.register
async def set_title(tx, *, id: str, title: str):
    if await tx.get(todos, id) is None:
        raise MutationError(f"no todo with id {id!r}")
    await tx.update(todos).set(title=title).where(todos.id == id)


@mutators.register
async def set_score(tx, *, id: str, score: float):
    await tx.update(todos).set(score=score).where(todos.id == id)


@mutators.register
async def delete_todo(tx, *, id: str):
    await tx.delete(todos).where(todos.id == id)


@mutators.register
async def picky(tx, *, id: str, title: str):
    """Accepted by the client, rejected by the server."""
    if tx.location == "server":
        raise MutationError(f"the server refuses {title!r}")
    await tx.insert(todos).values(id=id, title=title)


@mutators.register
async def bump(tx, *, id: str):
    row = await tx.get(counters, id)
    if row is None:
        await tx.insert(counters).values(id=id, n=1)
    else:
        await tx.update(counters).set(n=row["n"] + 1).where(counters.id == id)


@mutators.register
async def sleepy(tx, *, id: str):
    await asyncio.sleep(0)
    await tx.insert(todos).values(id=id, title="never")


@mutators.register
async def broken(tx, *, id: str):
    await tx.insert(todos).values(id=id, title="half")
    raise RuntimeError("a bug in the mutator")


