"""The generated wire-row decoder: fast for well-typed rows, None for anything else."""

from __future__ import annotations

import pytest

from plasma_nb import col, table
from plasma_nb.client.decoder import WireDecoder
from plasma_nb.core.dialect import SQLiteDialect

events = table(
    "events", id=col.integer(primary_key=True), name=col.text(), weight=col.real(),
    ok=col.boolean(default=False), note=col.text(nullable=True), data=col.json(nullable=True),
    at=col.timestamp(nullable=True),
    photo=col.blob(nullable=True),
)
decode = WireDecoder(events, SQLiteDialect())
ROW = {"id": 7, "name": "n", "weight": 2, "ok": True, "note": None, "data": {"a": [1]},
       "at": "2024-01-02T03:04:05.000006Z", "photo": "ab" * 32}


def test_a_well_typed_row_becomes_its_stored_tuple():
    assert decode(ROW, "7") == (
        7, "n", 2.0, 1, None, '{"a":[1]}', "2024-01-02T03:04:05.000006Z", "ab" * 32
    )
    assert isinstance(decode(ROW, "7")[2], float)  # type: ignore[index]


@pytest.mark.parametrize("change", [
    {"id": True}, {"id": 2**60}, {"name": 3}, {"weight": float("inf")}, {"weight": "1"},
    {"ok": 1}, {"note": 5}, {"photo": "XYZ"}, {"at": "yesterday"}, {"extra": 1},
])
def test_anything_unusual_takes_the_slow_path(change):
    assert decode({**ROW, **change}, "7") is None


def test_missing_columns_and_mismatched_keys_take_the_slow_path():
    partial = dict(ROW)
    del partial["note"]
    assert decode(partial, "7") is None
    assert decode(ROW, "8") is None
