"""A schema whose mutator can be held mid-push, for the Postgres tests of transient failures
and of the push connection: ``gate.armed = True``, then the next ``slow_add`` waits inside
its transaction (``gate.entered`` is set) until ``gate.release`` is."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from plasma_nb import MutationError, Mutators, Schema, col, table

__all__ = ["Gate", "gate", "slow", "slow_mutators", "slow_schema"]

slow = table("slow", id=col.id(), title=col.text())
slow_schema = Schema([slow], version="1")
slow_mutators = Mutators(slow_schema)


class Gate:
    """Holds a mutator in the middle of its push until the test lets it go."""

    def __init__(self) -> None:
        self.armed = False
        self.entered = asyncio.Event()
        self.release = asyncio.Event()


GATE = Gate()


@slow_mutators.register
async def slow_add(tx: Any, *, id: str, title: str) -> None:
    await tx.insert(slow).values(id=id, title=title)
    if GATE.armed:
        GATE.entered.set()
        await GATE.release.wait()


@slow_mutators.register
async def slow_rename(tx: Any, *, id: str, title: str) -> None:
    if await tx.get(slow, id) is None:
        raise MutationError(f"no row {id}")
    await tx.update(slow).set(title=title).where(slow.id == id)


@pytest.fixture
def gate() -> Gate:
    """A fresh gate, the one ``slow_add`` looks at."""
    global GATE
    GATE = Gate()
    return GATE
