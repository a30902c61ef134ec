"""Live queries: what keeping a result (and its DataFrame) current costs per commit.

Both benchmarks use a client with in-memory storage and its engine in a background
thread, as in a CPython notebook. Memory storage leaves out the SQLite file's fsync,
which is the same for every write whatever live queries there are (the client
benchmarks measure it); what is timed here is the work live queries add.
"""

from __future__ import annotations

import os
import random
import sqlite3
import tempfile
import threading
from typing import Any

from benchmarks.harness import Context, benchmark, max_slowdown, min_ratio
from plasma_nb import Mutators, Schema, col, select, table
from plasma_nb.client import Client, LiveChange, LiveQuery, connect
from plasma_nb.core.dialect import SQLiteDialect

ROWS = 100_000
#: One-row changes per timed unit (a unit of work should take ten milliseconds or more).
CHANGES = 10
QUERY_ROWS = 20_000
QUERIES = 100
SPAN, STEP = 1_000, 200  # query i reads n in [i*STEP, i*STEP + SPAN): each row is in 5
AFFECTED = SPAN // STEP

items = table(
    "items",
    id=col.id(),
    title=col.text(),
    n=col.integer(),
    score=col.real(),
    done=col.boolean(default=False),
    owner=col.text(nullable=True),
)
schema = Schema([items], version="1")
mutators = Mutators(schema)


@mutators.register
async def seed(tx: Any, *, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        await tx.insert(items).values(**row)


@mutators.register
async def retitle(tx: Any, *, id: str, title: str) -> None:
    await tx.update(items).set(title=title).where(items.id == id)


def _rows(count: int, rng: random.Random) -> list[dict[str, Any]]:
    return [
        {
            "id": f"r{i:06d}",
            "title": f"{rng.randrange(10**8):08d}",
            "n": i,
            "score": rng.random(),
            "done": i % 2 == 0,
            "owner": None if i % 3 else f"user{i % 7}",
        }
        for i in range(count)
    ]


async def _client(rows: list[dict[str, Any]]) -> tuple[Client, tempfile.TemporaryDirectory[str]]:
    home = tempfile.TemporaryDirectory(prefix="plasma-bench-")
    os.environ["PLASMA_NB_HOME"] = home.name
    client = await connect(None, schema=schema, mutators=mutators, name="bench",
                           storage="memory", thread=True)
    for start in range(0, len(rows), 5_000):
        client.mutate.seed(rows=rows[start:start + 5_000])
    return client, home


def _closer(client: Client, home: tempfile.TemporaryDirectory[str]) -> Any:
    async def close() -> None:
        await client.close()
        home.cleanup()

    return close


@benchmark(bar=min_ratio(10))
async def live_one_row_100k() -> Context:
    """One-row change under a filter + sort live query on 100k rows, mutate() to .df current,
    against pandas filtering and sorting the same frame."""
    import pandas as pd

    rng = random.Random(1)
    rows = _rows(ROWS, rng)
    client, home = await _client(rows)
    live = client.live(select(items).where(items.done == False).order_by(items.title))  # noqa: E712
    frame = pd.DataFrame(rows).astype(live.df.dtypes.to_dict())
    keys = [r["id"] for r in rows if not r["done"]]  # rows in the result

    def anchor() -> None:
        for _ in range(CHANGES):
            result = frame[~frame["done"]].sort_values("title")
            assert len(result) == ROWS // 2

    def subject() -> None:
        for _ in range(CHANGES):
            version = live.version
            # A new title moves the row: a structural patch, not just a value.
            client.mutate.retitle(id=rng.choice(keys), title=f"{rng.randrange(10**8):08d}")
            df = live.df
            assert live.version == version + 1 and len(df) == ROWS // 2

    return Context(anchor=anchor, subject=subject, close=_closer(client, home))


@benchmark(bar=max_slowdown(1.5))
async def live_100_queries() -> Context:
    """100 live queries, a write that changes 5 of their results, mutate() until the five
    are notified, against running those five queries in SQLite."""
    rng = random.Random(2)
    rows = _rows(QUERY_ROWS, rng)
    client, home = await _client(rows)

    def query(i: int) -> Any:
        lo = i * STEP
        return select(items).where((items.n >= lo) & (items.n < lo + SPAN)).order_by(items.title)

    lives: list[LiveQuery] = []
    heard = threading.Semaphore(0)

    def notified(change: LiveChange) -> None:
        heard.release()

    for i in range(QUERIES):
        live = client.live(query(i))
        live.subscribe(notified)
        lives.append(live)

    # The anchor: the same data in a plain SQLite database, and the same SQL.
    dialect = SQLiteDialect()
    raw = sqlite3.connect(":memory:", check_same_thread=False)
    raw.execute(dialect.create_table_sql(items))
    raw.executemany(
        "INSERT INTO items VALUES (?, ?, ?, ?, ?, ?)",
        [(r["id"], r["title"], r["n"], r["score"], int(r["done"]), r["owner"]) for r in rows],
    )
    compiled = [dialect.compile(query(i)) for i in range(QUERIES)]
    # Rows whose n is in exactly AFFECTED queries' ranges.
    targets = [r for r in rows if SPAN <= r["n"] < (QUERIES - AFFECTED) * STEP]

    def affected(n: int) -> list[int]:
        return [i for i in range(QUERIES) if i * STEP <= n < i * STEP + SPAN]

    def anchor() -> None:
        for _ in range(CHANGES):
            row = rng.choice(targets)
            for i in affected(row["n"]):
                c = compiled[i]
                assert raw.execute(c.sql, c.params).fetchall()

    def subject() -> None:
        for _ in range(CHANGES):
            row = rng.choice(targets)
            client.mutate.retitle(id=row["id"], title=f"{rng.randrange(10**8):08d}")
            for _ in range(AFFECTED):
                assert heard.acquire(timeout=10)

    async def close() -> None:
        raw.close()
        await _closer(client, home)()

    return Context(anchor=anchor, subject=subject, close=close)
