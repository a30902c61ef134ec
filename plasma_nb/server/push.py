"""The push rules of the wire protocol, independent of the database engine.

A backend opens a ``PushSession`` (one database transaction) and implements its
few primitives; ``process_push`` applies the rules of DESIGN section 5 in order:
skip what was already processed, run the next id, record rejections, stop at a
gap, refuse foreign clients, and stop at the per-push limit.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from ..core.errors import (
    BadRequest,
    ClientStateNotFound,
    Forbidden,
    MutationError,
    MutatorError,
)
from ..core.mutators import Context, Mutators, Transaction
from ..core.protocol import Mutation, MutationErrorInfo, PushRequest, PushResponse
from .blob_refs import MissingBlob, guard_blobs

__all__ = [
    "ClientState",
    "NeedSavepoints",
    "PushOutcome",
    "PushSession",
    "process_push",
    "run_mutator",
]

logger = logging.getLogger("plasma_nb.server")


class NeedSavepoints(Exception):
    """A mutator failed in a push run without savepoints: roll back and run the push
    again with them. Savepoints cost little, but most pushes never need one."""


@dataclass
class ClientState:
    client_group_id: str
    last_mutation_id: int


@dataclass
class PushOutcome:
    """What a push did: the response to send, or the error that stopped it after
    the mutations before it were kept (a gap, or an unknown client)."""

    response: PushResponse
    stopped_by: Exception | None = None
    processed: int = 0
    #: The version the push committed, when the backend reports it (pokes then go out
    #: without asking the database); None if unknown or nothing was processed.
    version: int | None = None


class PushSession:
    """One push transaction on one backend. Implementations keep it cheap: the
    bookkeeping of a mutation should cost as little as the mutator's own writes.

    With ``savepoints`` false, ``begin_mutation`` may skip the savepoint; a failing
    mutator then makes ``process_push`` raise ``NeedSavepoints``."""

    savepoints = True
    #: Whether rows may store only hashes of known blobs (blob_refs.py): on when the
    #: app has a blob store.
    checks_blobs = False

    async def load_state(
        self, group_id: str, client_ids: list[str]
    ) -> tuple[bool, str | None, dict[str, ClientState]]:
        """Whether the group exists, its owner, and the known clients among
        ``client_ids`` (whatever group they belong to), in one round trip."""
        raise NotImplementedError

    async def create_group(self, group_id: str, owner: str | None) -> None:
        raise NotImplementedError

    async def begin_mutation(self) -> None:
        """Start a mutation: a savepoint and a new version for its writes."""
        raise NotImplementedError

    async def rollback_mutation(self) -> None:
        """Undo the current mutation's writes (the version stays advanced)."""
        raise NotImplementedError

    async def end_mutation(self) -> None:
        raise NotImplementedError

    def transaction(self, ctx: Context, mutation: Mutation) -> Transaction:
        raise NotImplementedError

    async def record_error(self, group_id: str, error: MutationErrorInfo) -> None:
        raise NotImplementedError

    async def load_errors(
        self, client_id: str, ids: list[int]
    ) -> list[MutationErrorInfo]:
        raise NotImplementedError

    async def save_clients(self, group_id: str, changed: Mapping[str, int]) -> None:
        """Store each client's new last mutation id (at the current version)."""
        raise NotImplementedError

    async def missing_blobs(self, hashes: list[str]) -> list[str]:
        """The hashes among ``hashes`` that are not known blobs (``_plasma_blobs``), read
        in this push's transaction."""
        raise NotImplementedError


async def run_mutator(
    mutators: Mutators, tx: Transaction, mutation: Mutation, *, log: bool = True
) -> str | None:
    """Run one mutation's mutator; return None, or the message it was rejected with.

    An unexpected exception is logged with its traceback unless ``log`` is false."""
    try:
        await mutators.start(tx, mutation.name, mutation.args)
    except MissingBlob:
        return None  # the caller stops the push (BlobGuard.missing)
    except MutationError as exc:
        return exc.message
    except MutatorError as exc:
        # Unknown mutator or bad arguments: the caller's mistake, safe to report.
        return str(exc)
    except Exception:
        if log:
            logger.exception(
                "mutator %r raised for client %s mutation %d",
                mutation.name, mutation.client_id, mutation.id,
            )
        return f"internal error in mutator {mutation.name}"
    return None


async def process_push(
    session: PushSession,
    request: PushRequest,
    mutators: Mutators,
    ctx: Context,
    *,
    limit: int,
) -> PushOutcome:
    group_id = request.client_group_id
    client_ids = list(dict.fromkeys(m.client_id for m in request.mutations))
    exists, owner, clients = await session.load_state(group_id, client_ids)
    if exists and owner != ctx.user:
        raise Forbidden(f"client group {group_id!r} belongs to another user")
    for cid, known in clients.items():
        if known.client_group_id != group_id:
            raise Forbidden(f"client {cid!r} belongs to another client group")

    errors: list[MutationErrorInfo] = []
    changed: dict[str, int] = {}
    skipped: dict[str, list[int]] = {}
    stopped: Exception | None = None
    processed = 0
    for mutation in request.mutations:
        state = clients.get(mutation.client_id)
        last = state.last_mutation_id if state else 0
        last = changed.get(mutation.client_id, last)
        if mutation.id <= last:
            # Processed by an earlier push: report its error again, if it had one. (An id
            # repeated within this push is already reported.)
            if state is not None and mutation.id <= state.last_mutation_id:
                skipped.setdefault(mutation.client_id, []).append(mutation.id)
            continue
        if mutation.id > last + 1:
            if state is None and mutation.client_id not in changed:
                stopped = ClientStateNotFound(
                    f"unknown client {mutation.client_id!r} starts at mutation {mutation.id}"
                )
            else:
                stopped = BadRequest(
                    f"mutation id gap for client {mutation.client_id!r}: expected "
                    f"{last + 1}, got {mutation.id}"
                )
            break
        if processed >= limit:
            break
        await session.begin_mutation()
        tx = guard_blobs(session.transaction(ctx, mutation), session, mutation, mutators.schema)
        # Without savepoints a failure reruns the push, which logs it: log it once.
        message = await run_mutator(mutators, tx, mutation, log=session.savepoints)
        missing = getattr(tx, "missing", None)
        if missing is not None:
            # It stores a blob the server lacks: undo it and stop here (409); the client
            # uploads the blob and pushes again.
            if not session.savepoints:
                raise NeedSavepoints
            await session.rollback_mutation()
            await session.end_mutation()
            stopped = missing
            break
        if message is not None:
            if not session.savepoints:
                raise NeedSavepoints
            await session.rollback_mutation()
            info = MutationErrorInfo(mutation.client_id, mutation.id, mutation.name, message)
            await session.record_error(group_id, info)
            errors.append(info)
        await session.end_mutation()
        changed[mutation.client_id] = mutation.id
        processed += 1

    if changed:
        if not exists:
            # Only now: a push refused before its first mutation ran (an unknown client
            # starting past 1, a missing blob) must leave nothing behind, not even the group.
            await session.create_group(group_id, ctx.user)
        await session.save_clients(group_id, changed)
    for cid, ids in skipped.items():
        errors[:0] = await session.load_errors(cid, ids)
    return PushOutcome(PushResponse(tuple(errors)), stopped, processed)
