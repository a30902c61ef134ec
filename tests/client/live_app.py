"""The schema and mutators of the live-query tests (client and in-process server share it)."""

from __future__ import annotations

from plasma_nb import Mutators, Schema, col, table

items = table(
    "items",
    id=col.id(),
    title=col.text(nullable=True),
    n=col.integer(nullable=True),
    r=col.real(nullable=True),
    done=col.boolean(default=False),
    tags=col.json(nullable=True),
    at=col.timestamp(nullable=True),
)
notes = table("notes", id=col.integer(primary_key=True), item=col.text(), body=col.text())
schema = Schema([items, notes], version="1")
mutators = Mutators(schema)


@mutators.register
async def put(tx, *, id: str, title=None, n=None, r=None, done=False, tags=None, at=None):
    await tx.upsert(items).values(id=id, title=title, n=n, r=r, done=done, tags=tags, at=at)


@mutators.register
async def remove(tx, *, id: str):
    await tx.delete(items).where(items.id == id)


@mutators.register
async def set_n_where_done(tx, *, n: int):
    """One mutation that changes many rows."""
    await tx.update(items).set(n=n).where(items.done == True)  # noqa: E712


@mutators.register
async def note(tx, *, id: int, item: str, body: str):
    await tx.upsert(notes).values(id=id, item=item, body=body)
