"""Helpers of the security tests: an app whose rows belong to users, tokens, clients that
send them, and a dump of a whole database (to check that refused requests wrote nothing)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
from starlette.applications import Starlette

from plasma_nb import MutationError, Mutators, Schema, col, ctx, table
from plasma_nb.server.storage.postgres_sql import split_url

TOKENS = {"tok-alice": "alice", "tok-bob": "bob", "tok-carol": "carol"}
TOKEN_OF = {user: token for token, user in TOKENS.items()}

# -- an app where each user reads only their own notes (and every public one) ------------------

notes = table(
    "notes",
    id=col.id(),
    body=col.text(),
    owner=col.text(nullable=True),
    public=col.boolean(default=False),
)
# Readable by everyone: no rule.
motd = table("motd", id=col.integer(primary_key=True), text=col.text())
schema = Schema([notes, motd], version="1",
                read_rules={notes: (notes.owner == ctx.user) | (notes.public == True)})  # noqa: E712
mutators = Mutators(schema)


@mutators.register
async def add_note(tx, *, id: str, body: str, public: bool = False):
    await tx.insert(notes).values(id=id, body=body, owner=tx.ctx.user, public=public)


@mutators.register
async def edit_note(tx, *, id: str, body: str | None = None, public: bool | None = None,
                    owner: str | None = None):
    # Read rules do not restrict mutators: they check tx.ctx themselves.
    row = await tx.get(notes, id)
    if row is None or row["owner"] != tx.ctx.user:
        raise MutationError(f"note {id} is not yours")
    values: dict[str, Any] = {}
    if body is not None:
        values["body"] = body
    if public is not None:
        values["public"] = public
    if owner is not None:
        values["owner"] = owner  # give it away
    await tx.update(notes).set(**values).where(notes.id == id)


@mutators.register
async def delete_note(tx, *, id: str):
    row = await tx.get(notes, id)
    if row is None or row["owner"] != tx.ctx.user:
        raise MutationError(f"note {id} is not yours")
    await tx.delete(notes).where(notes.id == id)


@mutators.register
async def set_motd(tx, *, id: int, text: str):
    await tx.upsert(motd).values(id=id, text=text)


def note(client_id: str, id: int, note_id: str, body: str = "", **extra: Any) -> dict[str, Any]:
    return {"clientID": client_id, "id": id, "name": "add_note",
            "args": {"id": note_id, "body": body or f"body of {note_id}", **extra},
            "timestamp": 1732590000000 + id}


def call(client_id: str, id: int, name: str, /, **args: Any) -> dict[str, Any]:
    return {"clientID": client_id, "id": id, "name": name, "args": args,
            "timestamp": 1732590000000 + id}


@contextlib.asynccontextmanager
async def as_user(app: Starlette, user: str | None = None, *, token: str | None = None,
                  address: str = "127.0.0.1") -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of ``app`` sending ``user``'s token (or ``token``)."""
    headers = {}
    if user is not None:
        token = TOKEN_OF[user]
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    transport = httpx.ASGITransport(app, client=(address, 4321))
    async with httpx.AsyncClient(transport=transport, base_url="http://test",
                                 headers=headers) as c:
        yield c


# -- the whole database, seen from outside ------------------------------------------------------


async def dump_database(database: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every table (user and internal) with its rows, sorted: equal dumps mean nothing
    was written in between."""
    if database.startswith("sqlite:///"):
        conn = sqlite3.connect(database[len("sqlite:///"):])
        try:
            names = [r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
            return {n: sorted(conn.execute(f'SELECT * FROM "{n}"').fetchall(), key=repr)
                    for n in names}
        finally:
            conn.close()
    url, namespace = split_url(database)
    pg = await asyncpg.connect(url)
    try:
        names = [r[0] for r in await pg.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1 "
            "ORDER BY table_name", namespace)]
        return {n: sorted((tuple(r) for r in await pg.fetch(f'SELECT * FROM "{namespace}"."{n}"')),
                          key=repr)
                for n in names}
    finally:
        await pg.close()


async def execute(database: str, sql: str) -> None:
    """Operator SQL on either backend, committed at once."""
    if database.startswith("sqlite:///"):
        conn = sqlite3.connect(database[len("sqlite:///"):])
        try:
            with conn:
                conn.execute(sql)
        finally:
            conn.close()
        return
    url, namespace = split_url(database)
    pg = await asyncpg.connect(url, server_settings={"search_path": f'"{namespace}"'})
    try:
        await pg.execute(sql)
    finally:
        await pg.close()
