"""Applying patches and replaying pending mutations: every way agrees.

A small patch runs under the capture triggers; a big one runs with them dropped and
its pre-images recorded in bulk, or, with nothing pending, works out its net change
itself (plasma_nb/client/patch.py). Pending mutations replay from their traces
(trace.py) or by running their mutators. Whatever the way, the replica ends in the same
state, the undo log is the same and subscribers get the same change.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plasma_nb import MutationError
from plasma_nb.client import patch as patch_module
from plasma_nb.client import rebase as rebase_module
from plasma_nb.client.change import Change
from plasma_nb.client.replica import Replica
from plasma_nb.client.storage import MemoryStorage
from plasma_nb.client.synchronizer import Synchronizer
from plasma_nb.core.protocol import ClearOp, DelOp, PatchOp, PullResponse, PutOp
from tests.client.app import mutators, schema

KEYS = [f"k{i}" for i in range(4)]  # few keys: pending mutations and patches collide

rows = st.fixed_dictionaries({
    "title": st.sampled_from(["a", "b", "c"]),
    "done": st.booleans(),
    "owner": st.sampled_from([None, "ann"]),
    "score": st.sampled_from([None, 1.0, 2.5]),
    "tags": st.sampled_from([None, ["x"], {"k": [1, 2]}]),
})
ops = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(KEYS), rows),
    st.tuples(st.just("partial"), st.sampled_from(KEYS), rows),  # no tags: the slow path
    st.tuples(st.just("del"), st.sampled_from(KEYS)),
    st.tuples(st.just("counter"), st.sampled_from(KEYS), st.integers(0, 3)),
    st.tuples(st.just("elsewhere"), st.sampled_from(KEYS)),  # a table this client lacks
    st.just(("clear",)),
)
mutations = st.one_of(
    st.tuples(st.just("set_title"), st.sampled_from(KEYS), st.sampled_from(["p", "q"])),
    st.tuples(st.just("add_todo"), st.sampled_from(KEYS), st.sampled_from(["p", "q"])),
    st.tuples(st.just("mark_done"), st.sampled_from(KEYS)),
    st.tuples(st.just("delete_todo"), st.sampled_from(KEYS)),
    st.tuples(st.just("bump"), st.sampled_from(KEYS)),
)


def todo_op(key: str, row: dict[str, Any], *, partial: bool = False) -> PutOp:
    value = {"id": key, **row}
    if partial:
        del value["tags"]
    return PutOp(f"todos/{key}", value)


def patch_of(spec: list[tuple[Any, ...]]) -> list[PatchOp]:
    out: list[PatchOp] = []
    for op in spec:
        if op[0] == "put":
            out.append(todo_op(op[1], op[2]))
        elif op[0] == "partial":
            out.append(todo_op(op[1], op[2], partial=True))
        elif op[0] == "del":
            out.append(DelOp(f"todos/{op[1]}"))
        elif op[0] == "counter":
            out.append(PutOp(f"counters/{op[1]}", {"id": op[1], "n": op[2]}))
        elif op[0] == "elsewhere":
            out.append(PutOp(f"unknown_table/{op[1]}", {"id": op[1]}))
        else:
            out.append(ClearOp())
    return out


def normal(change: Change) -> dict[str, Any]:
    """A change with its lists sorted: the ways may list rows in different orders."""
    return {
        kind: {t: sorted(map(repr, rows)) for t, rows in part.items()}
        for kind, part in (("added", change.added), ("removed", change.removed),
                           ("changed", change.changed))
    }


async def open_sync(watched: bool = True) -> Synchronizer:
    replica = Replica(MemoryStorage(), schema)
    reshaped = await replica.open()
    replica.observed = lambda: watched
    sync = Synchronizer(replica, mutators, now_ms=lambda: 1_700_000_000_000)
    sync.start(reshaped=reshaped)
    return sync


async def model(
    initial: list[tuple[Any, ...]], patches: list[list[PatchOp]],
    outbox: list[tuple[str, str]],
) -> dict[str, Any]:
    """What a rebase means: the server's rows (every patch applied, nothing pending), then
    the mutations still pending run in order."""
    sync = await open_sync()
    try:
        for cookie, patch in enumerate([patch_of(initial), *patches], start=1):
            sync.pull_done(sync.pull_request(), PullResponse(cookie, {}, tuple(patch)))
        for name, args in outbox:
            try:
                sync.mutate(name, json.loads(args))
            except MutationError:
                pass
        read = sync.replica.read
        return {"todos": read("SELECT * FROM todos ORDER BY id"),
                "counters": read("SELECT * FROM counters ORDER BY id")}
    finally:
        await sync.replica.close()


async def run(
    way: str, initial: list[tuple[Any, ...]], pending: list[tuple[Any, ...]],
    spec: list[tuple[Any, ...]], covered: int, watched: bool,
    spec2: list[tuple[Any, ...]] = (),  # type: ignore[assignment]
) -> dict[str, Any]:
    sync = await open_sync(watched)
    replica = sync.replica
    try:
        request = sync.pull_request()
        sync.pull_done(request, PullResponse(1, {}, tuple(patch_of(initial))))
        for name, key, *rest in pending:
            args = {"id": key, **({"title": rest[0]} if rest else {})}
            try:
                sync.mutate(name, args)
            except MutationError:
                pass
        patch = patch_of(spec)
        # Pad with puts to a table this client does not have: they change nothing, but
        # make the patch big enough for the bulk ways.
        if way not in ("small", "untraced", "untriggered"):
            patch = [*[PutOp("padding/x", {"id": "x"})] * 300, *patch]
        assert sync.client_id is not None
        if way == "untraced":  # every pending mutator runs again: the reference
            sync.traces.clear()
        response = PullResponse(3, {sync.client_id: covered}, tuple(patch))
        result = sync.pull_done(sync.pull_request(), response)
        # One more pull: the entries left replay from the traces of the last rebase (a
        # mutator that failed there fails again from its trace).
        if way == "untraced":
            sync.traces.clear()
        # One more pull, which rebases on the undo log the last one left.
        patch2 = [PutOp("padding/x", {"id": "x"}), *patch_of(list(spec2))]
        again = sync.pull_done(sync.pull_request(), PullResponse(4, {}, tuple(patch2)))
        read = replica.read
        expected = await model(initial, [patch, patch2], read(
            "SELECT name, args FROM _plasma_outbox ORDER BY seq"))
        assert {"todos": read("SELECT * FROM todos ORDER BY id"),
                "counters": read("SELECT * FROM counters ORDER BY id")} == expected
        return {
            "again": (normal(again.change), again.skipped),
            "change": normal(result.change),
            "todos": read("SELECT * FROM todos ORDER BY id"),
            "counters": read("SELECT * FROM counters ORDER BY id"),
            "undo": read("SELECT * FROM _plasma_undo_todos ORDER BY id"),
            "undo_counters": read("SELECT * FROM _plasma_undo_counters ORDER BY id"),
            "outbox": read("SELECT seq, name FROM _plasma_outbox ORDER BY seq"),
            "skipped": result.skipped,
        }
    finally:
        await replica.close()


def run_way(way: str, *args: Any) -> dict[str, Any]:
    saved = patch_module.BULK_PATCH, rebase_module.apply_patch, rebase_module.BULK_REPLAY
    try:
        rebase_module.BULK_REPLAY = 10**9
        if way in ("small", "untraced"):
            patch_module.BULK_PATCH = 10**9
        elif way == "untriggered":  # a small patch, every replay and restore in bulk
            patch_module.BULK_PATCH = 10**9
            rebase_module.BULK_REPLAY = 0
        elif way == "recorded":  # big, never direct: pre-images recorded in bulk
            original = saved[1]

            def recorded(w: Any, replica: Any, patch: Any, direct: bool = False) -> Any:
                return original(w, replica, patch)

            rebase_module.apply_patch = recorded
        return asyncio.run(run(way, *args))
    finally:
        patch_module.BULK_PATCH, rebase_module.apply_patch, rebase_module.BULK_REPLAY = saved


@settings(max_examples=80, deadline=None)
@given(
    initial=st.lists(st.tuples(st.just("put"), st.sampled_from(KEYS), rows), min_size=2,
                     max_size=6),
    pending=st.one_of(st.just([]), st.lists(mutations, min_size=1, max_size=6)),
    spec=st.lists(ops, max_size=12),
    covered=st.integers(0, 2),
    watched=st.booleans(),
    spec2=st.lists(ops, max_size=4),
)
def test_every_way_of_applying_a_patch_agrees(initial, pending, spec, covered, watched, spec2):
    args = initial, pending, spec, covered, watched, spec2
    untraced = run_way("untraced", *args)
    small = run_way("small", *args)
    recorded = run_way("recorded", *args)
    direct = run_way("direct", *args)
    untriggered = run_way("untriggered", *args)
    if not watched:
        for result in (untraced, small, recorded, direct, untriggered):
            result.pop("change")
            result.pop("again")
    assert small == untraced  # replaying traces is running the mutators
    assert recorded == untraced
    assert direct == untraced
    assert untriggered == untraced


def test_a_big_snapshot_reports_every_row_once():
    initial = [("put", "k0", {"title": "a", "done": False, "owner": None, "score": None,
                              "tags": None})]
    spec = [("clear",)] + [("put", k, {"title": "b", "done": True, "owner": None,
                                       "score": 1.0, "tags": ["x"]}) for k in KEYS]
    for way in ("small", "recorded", "direct"):
        change = run_way(way, initial, [], spec, 0, True)["change"]
        assert len(change["added"]["todos"]) == len(KEYS) - 1, way
        assert len(change["changed"]["todos"]) == 1, way
        assert change["removed"] == {}, way


@pytest.mark.parametrize("way", ["small", "recorded", "direct"])
def test_a_patch_that_changes_nothing_reports_nothing(way):
    row = {"title": "a", "done": False, "owner": None, "score": 2.5, "tags": {"k": [1, 2]}}
    initial = [("put", k, row) for k in KEYS]
    result = run_way(way, initial, [], [("put", k, row) for k in KEYS], 0, True)
    assert result["change"] == {"added": {}, "removed": {}, "changed": {}}
