"""The contract every server storage backend keeps.

A backend owns the user tables and the internal ``_plasma_`` tables of DESIGN
section 6. The guarantees:

- ``push`` runs in one transaction: what it reports as processed is committed
  together with the clients' last mutation ids, or nothing is;
- the change log is written by triggers, so writes from outside the server
  (operator SQL) reach clients too, with a version of their own;
- versions only grow, and a ``pull`` reads in one snapshot, so it can never
  miss a change that commits later with a lower version;
- transient failures raise ``Unavailable`` before anything was committed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ...core.mutators import Context, Mutators
from ...core.protocol import PullRequest, PullResponse, PushRequest
from ...core.schema import Schema
from ..push import PushOutcome

__all__ = ["Compacted", "Storage"]


@dataclass(frozen=True)
class Compacted:
    """What a compaction did: the oldest cookie still served incrementally
    (``min_version``) and how many tombstones it dropped."""

    min_version: int
    tombstones: int


class Storage:
    schema: Schema
    mutators: Mutators
    #: Whether a push may store only hashes of known blobs (409 otherwise); create_app
    #: turns it on when the app has a blob store.
    check_blobs: bool = False

    async def open(self) -> None:
        """Create or migrate the tables; refuse an incompatible database."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def push(self, request: PushRequest, ctx: Context, *, limit: int) -> PushOutcome:
        raise NotImplementedError

    async def pull(self, request: PullRequest, ctx: Context) -> PullResponse:
        """Raises ``ClientStateNotFound`` for an unknown group with a cookie."""
        raise NotImplementedError

    async def version(self) -> int:
        """The current global version (the newest cookie)."""
        raise NotImplementedError

    async def group_owner(self, group_id: str) -> tuple[bool, str | None]:
        """Whether the client group exists, and the user it belongs to."""
        raise NotImplementedError

    async def compact(self, horizon_ms: int, now_ms: int) -> Compacted:
        """Drop tombstones (and prior images) as old as the version the database had
        ``horizon_ms`` ago (every one when ``horizon_ms`` is 0), and raise
        ``min_version`` to the newest version dropped: older cookies then get a full
        snapshot. Records a checkpoint (``now_ms``, the current version) for later
        compactions."""
        raise NotImplementedError

    async def record_blob(self, hash: str, size: int) -> None:
        """Add a blob the blob store now holds to the known blobs (``_plasma_blobs``)."""
        raise NotImplementedError

    async def changed_externally(self) -> bool:
        """True if another connection committed since the last call (for pokes)."""
        raise NotImplementedError

    async def wait_for_change(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for a commit made elsewhere; True if one came.

        This default polls ``changed_externally`` once the time is up (SQLite's
        ``PRAGMA data_version``); a backend that is told of commits (Postgres
        LISTEN/NOTIFY) returns as soon as one arrives."""
        await asyncio.sleep(seconds)
        return await self.changed_externally()
