"""The clients of one local database: one per process or browser tab that opens it.

Each client has its own client id and numbers its own mutations. Ids are
allocated inside a write transaction (``BEGIN IMMEDIATE``), so two processes
opening the same file at once get different ids. A heartbeat marks a client
alive; a client silent for longer than the lease whose mutations are all
confirmed is forgotten. Mutations of a dead client need no adoption: whoever
pushes sends every outbox entry of the group, under the id it was queued with.
"""

from __future__ import annotations

from ..core.ids import new_id
from .replica import Write

__all__ = ["LEASE_MS", "ensure_client", "heartbeat", "next_mutation_id", "reap", "register"]

#: A client whose heartbeat is older than this is presumed dead.
LEASE_MS = 5 * 60 * 1000


def register(w: Write, now_ms: int) -> str:
    client_id = new_id()
    w.conn.execute(
        "INSERT INTO _plasma_clients (client_id, next_mutation_id, heartbeat) VALUES (?, 1, ?)",
        (client_id, now_ms),
    )
    return client_id


def ensure_client(w: Write, client_id: str | None, now_ms: int) -> str:
    """``client_id`` if this database still knows it, else a newly registered id.

    A client can be forgotten under a live process: another process recovered
    from ClientStateNotFound (a new group), or reaped it after a long sleep.
    """
    if client_id is not None:
        row = w.conn.execute(
            "SELECT 1 FROM _plasma_clients WHERE client_id = ?", (client_id,)
        ).fetchone()
        if row is not None:
            return client_id
    return register(w, now_ms)


def next_mutation_id(w: Write, client_id: str) -> int:
    (number,) = w.conn.execute(
        "UPDATE _plasma_clients SET next_mutation_id = next_mutation_id + 1 "
        "WHERE client_id = ? RETURNING next_mutation_id - 1",
        (client_id,),
    ).fetchone()
    return int(number)


def heartbeat(w: Write, client_id: str, now_ms: int) -> None:
    w.conn.execute(
        "UPDATE _plasma_clients SET heartbeat = ? WHERE client_id = ?", (now_ms, client_id)
    )


def reap(w: Write, now_ms: int, *, keep: str | None, lease_ms: int = LEASE_MS) -> int:
    """Forget dead clients that have nothing left in the outbox; return how many."""
    cur = w.conn.execute(
        "DELETE FROM _plasma_clients WHERE heartbeat < ? AND client_id IS NOT ? "
        "AND client_id NOT IN (SELECT client_id FROM _plasma_outbox)",
        (now_ms - lease_ms, keep),
    )
    return cur.rowcount
