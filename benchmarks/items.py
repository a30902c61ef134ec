"""The ``items`` table the client and pull benchmarks share, and rows to fill it with."""

from __future__ import annotations

import json
from typing import Any

from plasma_nb import Schema, col, table

__all__ = ["COLUMNS", "INSERT", "items", "row", "schema"]

items = table(
    "items",
    id=col.id(),
    title=col.text(),
    done=col.boolean(default=False),
    priority=col.integer(default=0),
    estimate=col.real(nullable=True),
    owner=col.text(nullable=True),
    tags=col.json(nullable=True),
)
schema = Schema([items], version="1")
COLUMNS = ("id", "title", "done", "priority", "estimate", "owner", "tags")
INSERT = f"INSERT INTO items ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"


def row(i: int) -> tuple[Any, ...]:
    """Row ``i``, as stored: a mix of nulls, numbers, booleans and JSON."""
    tags = json.dumps(["red", "blue"]) if i % 10 == 0 else None
    return (f"item-{i:06d}", f"Item number {i}", i % 3 == 0, i % 5,
            None if i % 4 == 0 else i / 8, None if i % 2 else f"user-{i % 17}", tags)
