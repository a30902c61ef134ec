"""The schema of the scale tests: notes written by many clients, and shared counters.

``plasma-nb serve tests/scale/app.py`` serves it; the tests' plasma_nb clients import it.
"""

from __future__ import annotations

from typing import Any

from plasma_nb import MutationError, Mutators, Schema, col, table

notes = table(
    "notes",
    id=col.id(),
    author=col.text(),
    n=col.integer(),
    body=col.text(nullable=True),
)
counters = table("counters", id=col.text(primary_key=True), n=col.integer(default=0))
schema = Schema([notes, counters], version="1")
mutators = Mutators(schema)


@mutators.register
async def add_note(tx: Any, *, id: str, author: str, n: int,
                   body: str | None = None) -> None:
    await tx.insert(notes).values(id=id, author=author, n=n, body=body)


@mutators.register
async def edit_note(tx: Any, *, id: str, body: str) -> None:
    if await tx.get(notes, id) is None:
        raise MutationError(f"no note {id!r}")
    await tx.update(notes).set(body=body).where(notes.id == id)


@mutators.register
async def delete_note(tx: Any, *, id: str) -> None:
    await tx.delete(notes).where(notes.id == id)


@mutators.register
async def bump(tx: Any, *, id: str) -> None:
    row = await tx.get(counters, id)
    if row is None:
        await tx.insert(counters).values(id=id, n=1)
    else:
        await tx.update(counters).set(n=row["n"] + 1).where(counters.id == id)
