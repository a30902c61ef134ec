"""Schema changes at start: a new nullable (or defaulted) column or table migrates the
database in place; an incompatible change is refused with a message naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from plasma_nb import Mutators, Schema, SchemaError, col, table
from plasma_nb.server import create_app
from tests.server.helpers import http, mutation, pull, push, puts, query


@pytest.fixture
def backend() -> str:
    """SQLite only: the Postgres migrations are tested in test_postgres_backend.py."""
    return "sqlite"

def notes_schema(**extra) -> tuple[Schema, Mutators]:
    """Version 1 of a notes app, plus ``extra`` columns; ``add_note`` writes the
    columns it is given."""
    notes = table("notes", id=col.id(), body=col.text(), **extra)
    schema = Schema([notes], version="1")
    mutators = Mutators(schema)

    @mutators.register
    async def add_note(tx, *, id: str, body: str, **more):
        await tx.insert(notes).values(id=id, body=body, **more)

    return schema, mutators


async def open_and_close(db: Path, schema: Schema, mutators: Mutators) -> None:
    app = create_app(schema, mutators, database=f"sqlite:///{db}")
    try:
        await app.state.plasma.ensure_open()
    finally:
        await app.state.plasma.close()


def columns(db: Path, name: str) -> list[tuple[str, str, int]]:
    return [(r[1], r[2], r[3]) for r in query(db, f'PRAGMA table_info("{name}")')]


async def test_a_new_nullable_column_is_added_in_place(db_path):
    first = create_app(*notes_schema(), database=f"sqlite:///{db_path}")
    try:
        async with http(first) as c:
            await push(c, mutation("c1", 1, "add_note", id="n1", body="old"))
            cookie = (await pull(c))["cookie"]
    finally:
        await first.state.plasma.close()  # ASGITransport runs no lifespan

    v2 = notes_schema(tag=col.text(nullable=True), stars=col.integer(default=3),
                      note=col.text(default="a, b) c"))
    app = create_app(*v2, database=f"sqlite:///{db_path}")
    try:
        async with http(app) as c:
            # Old rows get NULL or the default; the old cookie still pulls incrementally.
            assert (await pull(c, cookie))["patch"] == []
            full = puts((await pull(c))["patch"])
            assert full["notes/n1"] == {"id": "n1", "body": "old", "tag": None, "stars": 3,
                                        "note": "a, b) c"}
            await push(c, mutation("c1", 2, "add_note", id="n2", body="new", tag="x",
                                   stars=5))
            since = puts((await pull(c, cookie))["patch"])
            assert since == {"notes/n2": {"id": "n2", "body": "new", "tag": "x", "stars": 5,
                                          "note": "a, b) c"}}
    finally:
        await app.state.plasma.close()
    assert columns(db_path, "notes") == [
        ("id", "TEXT", 1), ("body", "TEXT", 1), ("tag", "TEXT", 0),
        ("stars", "INTEGER", 1), ("note", "TEXT", 1)]


async def test_a_new_table_is_created_in_place(db_path):
    await open_and_close(db_path, *notes_schema())
    notes = table("notes", id=col.id(), body=col.text())
    tags = table("tags", id=col.integer(primary_key=True), name=col.text())
    schema = Schema([notes, tags])
    await open_and_close(db_path, schema, Mutators(schema))
    assert columns(db_path, "tags") == [("id", "INTEGER", 1), ("name", "TEXT", 1)]
    triggers = query(db_path, "SELECT name FROM sqlite_master WHERE type = 'trigger' "
                              "AND tbl_name = 'tags' ORDER BY name")
    assert triggers == [("_plasma_tags_delete",), ("_plasma_tags_insert",),
                        ("_plasma_tags_update",)]


async def test_a_column_named_like_its_table_can_be_added(db_path):
    note = table("note", id=col.id())
    schema = Schema([note])
    await open_and_close(db_path, schema, Mutators(schema))
    note2 = table("note", id=col.id(), note=col.text(nullable=True))
    schema2 = Schema([note2])
    await open_and_close(db_path, schema2, Mutators(schema2))
    assert columns(db_path, "note") == [("id", "TEXT", 1), ("note", "TEXT", 0)]


async def test_a_new_not_null_column_without_default_is_refused(db_path):
    await open_and_close(db_path, *notes_schema())
    with pytest.raises(SchemaError) as refused:
        await open_and_close(db_path, *notes_schema(rank=col.integer()))
    assert str(refused.value) == (
        "cannot add column notes.rank to the existing database: a new column must be "
        "nullable or have a default"
    )
    # Nothing changed.
    assert [c[0] for c in columns(db_path, "notes")] == ["id", "body"]


@pytest.mark.parametrize(
    ("new_body", "message"),
    [
        (col.integer(), "notes.body is TEXT in the database but the schema declares integer "
                        "(INTEGER); change it with a new column instead"),
        (col.real(), "notes.body is TEXT in the database but the schema declares real "
                     "(REAL); change it with a new column instead"),
    ],
)
async def test_a_type_change_is_refused(db_path, new_body, message):
    await open_and_close(db_path, *notes_schema())
    notes = table("notes", id=col.id(), body=new_body)
    schema = Schema([notes])
    with pytest.raises(SchemaError) as refused:
        await open_and_close(db_path, schema, Mutators(schema))
    assert str(refused.value) == message


async def test_a_refused_schema_answers_500_without_details_in_process(db_path, caplog):
    # Without a lifespan (httpx's ASGITransport) the database opens on first use.
    await open_and_close(db_path, *notes_schema())
    notes = table("notes", id=col.id(), body=col.integer())
    schema = Schema([notes])
    app = create_app(schema, Mutators(schema), database=f"sqlite:///{db_path}")
    try:
        async with http(app) as c:
            response = await c.get("/healthz")
    finally:
        await app.state.plasma.close()
    assert response.status_code == 500
    assert response.json() == {"error": "InternalError", "message": "internal server error"}
    assert "notes.body is TEXT in the database" in caplog.text
