"""What the notebook layer reads from a client beyond its public API.

The outbox, the server's recorded verdicts and the replica's tables live in the
client's SQLite replica. Reading them here, in one place, keeps the widgets and
magics synchronous (they run in comm handlers and engine-thread callbacks, where
awaiting ``client.query`` is not possible) and keeps every reach into the
client's internals visible.
"""

from __future__ import annotations

import json
import sqlite3
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..core.errors import QueryError

__all__ = [
    "OutboxEntry",
    "client_of",
    "Rejection",
    "first_seen",
    "outbox",
    "read",
    "rejections",
    "storage_of",
    "table_rows",
]

_FIRST_SEEN: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()


def _replica(client: Any) -> Any:
    try:
        return client._engine.replica
    except AttributeError:
        raise TypeError(f"expected a plasma_nb Client, got {client!r}") from None


def storage_of(client: Any) -> Any:
    """The client's storage backend (for ``%plasma reset``)."""
    return _replica(client).storage


def read(
    client: Any, sql: str, params: Sequence[Any] | Mapping[str, Any] = (), *,
    limit: int | None = None, read_only: bool = True,
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one SQL statement on the replica: (column names, rows as stored).

    ``read_only`` refuses writes (``PRAGMA query_only``): the replica's tables change
    only through mutators, or sync would not know about the change.
    """
    replica = _replica(client)
    with replica.lock:
        conn: sqlite3.Connection = replica.conn
        if read_only:
            conn.execute("PRAGMA query_only = ON")
        try:
            cursor = conn.execute(sql, params)
            names = [d[0] for d in cursor.description or ()]
            rows = cursor.fetchmany(limit) if limit else cursor.fetchall()
        except sqlite3.Error as exc:
            text = str(exc)
            if "readonly" in text or "read-only" in text or "query_only" in text:
                raise QueryError(
                    "SQL on the replica is read-only: change data with a mutator "
                    "(%plasma mutate NAME key=value ...)"
                ) from None
            raise QueryError(f"SQLite: {text}") from None
        finally:
            if read_only:
                conn.execute("PRAGMA query_only = OFF")
    return names, rows


def table_rows(client: Any, table: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Every row of a user table, as stored."""
    if table not in client.schema.tables:
        raise QueryError(f"no table named {table!r}")
    return read(client, f'SELECT * FROM "{table}"')


@dataclass(frozen=True)
class OutboxEntry:
    seq: int
    name: str
    args: dict[str, Any]
    client_id: str
    mutation_id: int
    queued_ms: float
    error: str | None


def outbox(client: Any) -> list[OutboxEntry]:
    """The mutations not yet confirmed by a pull, in local order."""
    _, rows = read(
        client,
        "SELECT seq, name, args, client_id, mutation_id, timestamp, error "
        "FROM _plasma_outbox ORDER BY seq",
    )
    return [
        OutboxEntry(seq, name, json.loads(args), cid, mid, ts, error)
        for seq, name, args, cid, mid, ts, error in rows
    ]


@dataclass(frozen=True)
class Rejection:
    """A mutation the server rejected, with its message."""

    seq: int
    name: str
    message: str
    at_ms: float | None  # when a pull recorded it (None: a push reported it, no pull yet)


def rejections(client: Any, *, since_ms: float = 0.0, limit: int = 5) -> list[Rejection]:
    """The newest rejected mutations: those a pull recorded since ``since_ms``, and
    those a push reported that no pull has confirmed yet."""
    _, pushed = read(
        client,
        "SELECT seq, name, error FROM _plasma_outbox WHERE error IS NOT NULL "
        "ORDER BY seq DESC LIMIT ?",
        (limit,),
    )
    _, pulled = read(
        client,
        "SELECT seq, name, error, at FROM _plasma_verdicts "
        "WHERE error IS NOT NULL AND at >= ? ORDER BY seq DESC LIMIT ?",
        (since_ms, limit),
    )
    found = [Rejection(seq, name, error, None) for seq, name, error in pushed]
    found += [Rejection(seq, name, error, at) for seq, name, error, at in pulled]
    found.sort(key=lambda r: r.seq, reverse=True)
    return found[:limit]


def first_seen(client: Any) -> float:
    """When the notebook layer first saw ``client`` (ms since the epoch): widgets show the
    rejections recorded since then, not those of earlier sessions."""
    try:
        return _FIRST_SEEN[client]
    except KeyError:
        # A small margin: the engine stamps verdicts with its own clock reading.
        seen = _FIRST_SEEN[client] = time.time() * 1000 - 1000
        return seen


def client_of(live: Any) -> Any:
    """The client a live query reads from, or None if the notebook layer never saw it.

    A ``RerunLive`` says (``.client``); a client ``LiveQuery`` knows only its replica,
    which is matched against the clients the notebook layer has seen (connected by
    ``%plasma connect``, or shown in a widget).
    """
    client = getattr(live, "client", None)
    if client is not None and hasattr(client, "status"):
        return client
    replica = getattr(getattr(live, "_set", None), "replica", None)
    if replica is None:
        return None
    for known in list(_FIRST_SEEN.keys()):
        if getattr(getattr(known, "_engine", None), "replica", None) is replica:
            return known
    return None
