"""Property tests: after random mutations, pulls and rebases, every live query's rows equal the
query run from scratch, its LiveChanges add up to its rows, and its frame equals a fresh one.

The queries are random DSL selects (filters, orders, limits, offsets, projections) and SQL text
(including a join); the windows' row buffers are shrunk so that their edge cases happen often.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import plasma_nb as plasma
from plasma_nb import not_, or_, select
from plasma_nb.client import results
from plasma_nb.client.live import LiveChange, LiveQuery
from plasma_nb.server import create_app
from tests.client.live_app import items, mutators, schema

IDS = [f"i{k}" for k in range(14)]
ids = st.sampled_from(IDS)
values = st.fixed_dictionaries({
    "title": st.none() | st.sampled_from(["", "a", "A", "b", "ab", "aB", "é", "Z"]),
    "n": st.none() | st.integers(-2, 3),
    "r": st.none() | st.sampled_from([0.0, 0.5, -1.0, 2.5]),
    "done": st.booleans(),
    "tags": st.none() | st.sampled_from([[1], {"a": 1}, "x", [1, [2]]]),
    "at": st.none() | st.sampled_from(["2024-01-01T00:00:00Z", "2024-01-01T00:00:00.5Z",
                                        "1999-12-31T23:59:59Z"]),
})
put = st.builds(lambda id, v: ("put", {"id": id, **v}), ids, values)
remove = st.builds(lambda id: ("remove", {"id": id}), ids)
bulk = st.builds(lambda n: ("set_n_where_done", {"n": n}), st.integers(-2, 3))
note = st.builds(lambda k, id: ("note", {"id": k, "item": id, "body": f"b{k}"}),
                 st.integers(0, 4), ids)
mutations = st.one_of(put, put, put, remove, bulk, note)

LEAVES = [
    items.done == False,  # noqa: E712
    items.done,
    items.n > 0,
    items.n <= 1,
    items.n == None,  # noqa: E711
    items.n.in_([0, 2, None]),
    items.title.like("a%"),
    items.title.ilike("a%"),
    items.title != "b",
    items.r >= 0.5,
    items.tags.is_not_null(),
    items.n < items.r,
    items.at > "2000-01-01T00:00:00Z",
]
leaf = st.sampled_from(LEAVES)
conditions = st.recursive(
    leaf,
    lambda inner: st.one_of(
        st.tuples(inner, inner).map(lambda ab: ab[0] & ab[1]),
        st.tuples(inner, inner).map(lambda ab: or_(*ab)),
        inner.map(not_),
    ),
    max_leaves=4,
)
TERMS = [items.title, items.title.desc(), items.n, items.n.desc(), items.r, items.done.desc(),
         items.tags, items.id.desc(), items.at.desc()]
PROJECTIONS = [None, (items.id, items.title, items.n), (items.title, items.n, items.done)]


@st.composite
def dsl_queries(draw):
    projection = draw(st.sampled_from(PROJECTIONS))
    q = select(items) if projection is None else select(*projection)
    if draw(st.booleans()):
        q = q.where(draw(conditions))
    terms = draw(st.lists(st.sampled_from(TERMS), max_size=2,
                          unique_by=lambda o: getattr(o, "expr", o).name))
    if terms:
        q = q.order_by(*terms)
    if draw(st.booleans()):
        q = q.limit(draw(st.integers(0, 5)))
    if draw(st.booleans()):
        q = q.offset(draw(st.integers(0, 4)))
    return q


SQL = [
    ("SELECT id, title, n FROM items WHERE done = :d ORDER BY n, id", {"d": 1}),
    ("SELECT count(*) AS c, sum(n) AS s FROM items", {}),
    ("SELECT i.id, i.title, x.body FROM items i JOIN notes x ON x.item = i.id "
     "ORDER BY x.id", {}),
]


def expected_select(q):
    return q.order_by(q.table._pk)  # the order live queries keep: the key breaks ties


def canonical(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True, default=str)


class Watcher:
    """One live query, the LiveChanges it reported, and the rows they add up to."""

    def __init__(self, live: LiveQuery, *, subscribe: bool = True) -> None:
        self.live = live
        self.model = Counter(canonical(r) for r in live.rows)
        self.changes: list[LiveChange] = []
        self.subscribed = subscribe
        if subscribe:  # else commits wait for the next read (the lazy path)
            live.subscribe(self.heard)

    def heard(self, change: LiveChange) -> None:
        self.changes.append(change)
        for r in change.removed:
            self.model[canonical(r)] -= 1
        for before, after in change.changed:
            self.model[canonical(before)] -= 1
            self.model[canonical(after)] += 1
        for r in change.added:
            self.model[canonical(r)] += 1
        self.model = +self.model


DTYPES = {"id": "str", "title": "str", "n": "Int64", "r": "float64", "done": "bool",
          "tags": "object", "at": "datetime64[us, UTC]"}


def fresh_frame(live: LiveQuery) -> pd.DataFrame:
    """The frame of ``live.rows`` built from scratch (schema dtypes for a select)."""
    rows = live.rows
    if isinstance(live.query, str):
        return pd.DataFrame.from_records([tuple(r.values()) for r in rows], columns=live.columns)
    return pd.DataFrame(
        {c: pd.Series([r[c] for r in rows], dtype=DTYPES[c]) for c in live.columns},
        index=pd.RangeIndex(len(rows)),
    )


async def check(client, watchers: list[Watcher], *, frames: bool) -> None:
    for _ in range(3):  # the subscribers run at the engine loop's next iteration
        await asyncio.sleep(0)
    for w in watchers:
        live = w.live
        if isinstance(live.query, str):
            expected = await client.query(live.query, live.params)
        else:
            expected = await client.query(expected_select(live.query))
        assert live.rows == expected, live.query
        assert len(live) == len(expected)
        assert live.window(1, 2) == expected[1:3]
        if w.subscribed:
            assert w.model == Counter(canonical(r) for r in expected), live.query
            assert live.version == len(w.changes)
            assert [c.version for c in w.changes] == list(range(1, len(w.changes) + 1))
        if frames:
            pd.testing.assert_frame_equal(live.df, fresh_frame(live))


def open_watchers(client, queries) -> list[Watcher]:
    watchers = [Watcher(client.live(q), subscribe=i % 3 != 2) for i, q in enumerate(queries)]
    watchers += [Watcher(client.live(sql, params)) for sql, params in SQL]
    return watchers


@pytest.fixture
def small_buffers(monkeypatch):
    """Windows keep one or two rows past their edge, and big commits re-run sooner."""
    monkeypatch.setattr(results, "BUFFER_MIN", 1)
    monkeypatch.setattr(results, "BUFFER_MAX", 2)
    monkeypatch.setattr(results, "RERUN_MIN", 3)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(queries=st.lists(dsl_queries(), min_size=1, max_size=4),
       steps=st.lists(st.lists(mutations, min_size=1, max_size=3), max_size=12),
       frames=st.booleans())
def test_local_mutations(small_buffers, queries, steps, frames):
    async def scenario() -> None:
        client = await plasma.connect(None, schema=schema, mutators=mutators, name="p",
                                      storage="memory", thread=False)
        try:
            for i in range(6):  # some rows before the queries start
                client.mutate.put(id=IDS[i], title="a" if i % 2 else "b", n=i % 3, done=i > 2)
            watchers = open_watchers(client, queries)
            await check(client, watchers, frames=frames)
            for batch in steps:
                for name, args in batch:
                    client.mutate(name, **args)
                await check(client, watchers, frames=frames)
        finally:
            await client.close()

    asyncio.run(scenario())


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(queries=st.lists(dsl_queries(), min_size=1, max_size=3),
       steps=st.lists(st.tuples(st.sampled_from("abS"), mutations), min_size=1, max_size=14))
def test_pulls_and_rebases(small_buffers, queries, steps):
    """Client b watches; a and b mutate; "S" syncs a then b, so b rebases its pending
    mutations onto a's confirmed ones."""

    async def scenario(path: Path) -> None:
        app = create_app(schema, mutators, database=f"sqlite:///{path}")
        transport = httpx.ASGITransport(app)

        async def connect(name: str):
            return await plasma.connect(
                "http://server", schema=schema, mutators=mutators, name=name, thread=False,
                storage="memory", transport=transport, pokes=False, pull_interval=3600,
                push_delay=3600,
            )

        a, b = await connect("a"), await connect("b")
        try:
            watchers = open_watchers(b, queries)
            for who, (name, args) in steps:
                if who == "S":
                    await a.sync()
                    await b.sync()
                else:
                    (a if who == "a" else b).mutate(name, **args)
                await check(b, watchers, frames=True)
            await a.sync()
            await b.sync()
            await check(b, watchers, frames=True)
            assert all(not w.live.pending_keys for w in watchers)
        finally:
            await a.close()
            await b.close()
            await app.state.plasma.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(scenario(Path(tmp) / "server.db"))
