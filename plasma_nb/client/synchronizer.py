"""The sync state machine of one client, without I/O.

``Synchronizer`` turns local mutations into outbox entries, builds push and
pull requests from the replica, and applies their responses. It never touches
the network: the engine's driver sends what it builds and hands back what the
server answered. Shared state (client group, cookie, outbox) is read from the
replica each time, never cached, because another process may share the file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..core.errors import MutatorError, StorageError
from ..core.ids import new_id
from ..core.mutators import Context, Mutators
from ..core.protocol import (
    PULL_VERSION,
    PUSH_VERSION,
    PullRequest,
    PullResponse,
    PushRequest,
    PushResponse,
)
from . import clients, outbox, undo
from .layout import FORMAT
from .outbox import Entry
from .rebase import RebaseResult, rebase
from .replica import Replica, Write
from .trace import Op, Trace
from .transaction import run_mutator

__all__ = ["LocalMutation", "PushBatch", "Synchronizer"]


@dataclass(frozen=True)
class LocalMutation:
    """A mutation applied and queued by ``Synchronizer.mutate``."""

    seq: int
    client_id: str
    mutation_id: int
    write: Write


@dataclass(frozen=True)
class PushBatch:
    request: PushRequest
    entries: list[Entry]

    @property
    def last_seq(self) -> int:
        return self.entries[-1].seq


class Synchronizer:
    """Local mutations, push and pull requests, and their responses, for one client."""

    def __init__(
        self, replica: Replica, mutators: Mutators, *, now_ms: Callable[[], int]
    ) -> None:
        self.replica = replica
        self.mutators = mutators
        self.schema = replica.schema
        self.now_ms = now_ms
        self.client_id: str | None = None
        # The statements each pending entry ran, by seq, so that rebases can replay
        # them without running the mutators again (trace.py). In memory only.
        self.traces: dict[int, Trace] = {}

    # -- start -------------------------------------------------------------------

    def start(self, *, reshaped: bool) -> None:
        """Set up the meta data and register this client (one write transaction).

        ``reshaped`` says the user tables changed shape on open: like a schema
        version change, it makes the next pull a full one.
        """
        now = self.now_ms()
        with self.replica.write() as w:
            stored_format = w.get_meta("format")
            if stored_format is None:
                w.set_meta("format", FORMAT)
            elif stored_format > FORMAT:
                raise StorageError(
                    f"{self.replica.storage.describe()} was written by a newer plasma_nb "
                    f"(format {stored_format}, this one reads {FORMAT})"
                )
            if w.get_meta("client_group_id") is None:
                w.set_meta("client_group_id", new_id())
                w.set_meta("cookie", None)
            if w.get_meta("profile_id") is None:
                w.set_meta("profile_id", new_id())
            if w.get_meta("schema_version") != self.schema.version or reshaped:
                # The client migrates its replica and keeps its outbox; a full pull
                # then brings every row in the new shape.
                w.set_meta("schema_version", self.schema.version)
                w.set_meta("cookie", None)
            clients.reap(w, now, keep=None)
            outbox.prune_verdicts(w, now)
            if self.replica.journal is not None:
                self.replica.journal.heartbeat(w.conn, now, clients.LEASE_MS)
            self.client_id = clients.register(w, now)

    # -- reading state -----------------------------------------------------------

    @property
    def client_group_id(self) -> str:
        return str(self.replica.meta("client_group_id"))

    @property
    def cookie(self) -> int | None:
        value = self.replica.meta("cookie")
        return None if value is None else int(value)

    @property
    def user(self) -> str | None:
        value = self.replica.meta("user")
        return None if value is None else str(value)

    def pending(self) -> int:
        with self.replica.lock:
            return outbox.count(self.replica.conn)

    def verdicts(self, seqs: list[int]) -> dict[int, str | None]:
        """Verdicts of the given entries that left the outbox (possibly confirmed by
        another process); entries still pending are absent."""
        if not seqs:
            return {}
        with self.replica.lock:
            conn = self.replica.conn
            still = {e.seq for e in outbox.entries(conn)}
            gone = [s for s in seqs if s not in still]
            found = outbox.verdicts(conn, gone)
        # A verdict pruned before this process looked: the entry was confirmed.
        return {s: found.get(s) for s in gone}

    # -- local mutations ---------------------------------------------------------

    def mutate(self, name: str, args: Mapping[str, Any]) -> LocalMutation:
        """Apply mutator ``name`` to the replica and queue it, in one transaction.

        ``MutationError`` and ``MutatorError`` propagate with nothing written.
        """
        self.mutators.check_args(name, args)
        try:
            args_json = json.dumps(args, allow_nan=False, separators=(",", ":"),
                                   ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise MutatorError(
                f"arguments of mutator {name!r} must be JSON values (they travel to the "
                f"server as JSON): {exc}"
            ) from None
        # The mutator sees the arguments exactly as the server will (tuples as lists...).
        wire_args = json.loads(args_json)
        now = self.now_ms()
        timestamp = float(now)
        with self.replica.write() as w:
            client_id = clients.ensure_client(w, self.client_id, now)
            self.client_id = client_id
            w.segment(1)
            ctx = Context(user=w.get_meta("user"))
            ops: list[Op] = []
            run_mutator(
                w.conn, self.replica.dialect, self.mutators, name, wire_args,
                ctx=ctx, timestamp=timestamp, trace=ops,
            )
            mutation_id = clients.next_mutation_id(w, client_id)
            seq = outbox.append(w, client_id, mutation_id, name, args_json, timestamp)
            undo.record(w, 1, self.replica.user_tables)
        # Only once committed: another process could take the seq of a failed commit.
        self.traces[seq] = Trace(name, args_json, timestamp, ctx.user, tuple(ops))
        return LocalMutation(seq, client_id, mutation_id, w)

    # -- push --------------------------------------------------------------------

    def push_request(self, *, after_seq: int = 0, limit: int = 1000) -> PushBatch | None:
        """The next push: every outbox entry of the group after ``after_seq``, in order,
        whichever client queued it (the entries of dead clients included)."""
        with self.replica.lock:
            conn = self.replica.conn
            rows = conn.execute(
                "SELECT seq FROM _plasma_outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
            if not rows:
                return None
            entries = [e for e in outbox.entries(conn) if after_seq < e.seq <= rows[-1][0]]
            request = PushRequest(
                push_version=PUSH_VERSION,
                client_group_id=self.client_group_id,
                profile_id=str(self.replica.meta("profile_id")),
                schema_version=self.schema.version,
                mutations=tuple(e.to_mutation() for e in entries),
            )
        return PushBatch(request, entries)

    def push_done(self, batch: PushBatch, response: PushResponse) -> None:
        """Remember the rejections a push reported until a pull confirms them."""
        if not response.mutation_errors:
            return
        with self.replica.write() as w:
            if w.get_meta("client_group_id") == batch.request.client_group_id:
                outbox.note_errors(w, response.mutation_errors)

    # -- pull --------------------------------------------------------------------

    def pull_request(self) -> PullRequest:
        with self.replica.lock:
            return PullRequest(
                pull_version=PULL_VERSION,
                client_group_id=self.client_group_id,
                cookie=self.cookie,
                profile_id=str(self.replica.meta("profile_id")),
                schema_version=self.schema.version,
            )

    def pull_done(self, request: PullRequest, response: PullResponse) -> RebaseResult:
        return rebase(
            self.replica, self.mutators, response, group_id=request.client_group_id,
            request_cookie=request.cookie, now_ms=self.now_ms(), traces=self.traces,
        )

    # -- recovery and housekeeping -------------------------------------------------

    def recover(self, lost_group_id: str) -> bool:
        """The server does not know ``lost_group_id``: start a new group and client,
        renumber the pending mutations from 1 and pull from nothing.

        Returns False when another process already did so (the group changed).
        """
        now = self.now_ms()
        with self.replica.write() as w:
            if w.get_meta("client_group_id") != lost_group_id:
                return False
            w.conn.execute("DELETE FROM _plasma_clients")
            client_id = clients.register(w, now)
            next_id = outbox.renumber(w, client_id)
            w.conn.execute(
                "UPDATE _plasma_clients SET next_mutation_id = ? WHERE client_id = ?",
                (next_id, client_id),
            )
            w.set_meta("client_group_id", new_id())
            w.set_meta("cookie", None)
            self.client_id = client_id
        return True

    def set_user(self, user: str | None) -> bool:
        """Record the user the server reported; True if it changed."""
        if self.replica.meta("user") == user:
            return False
        with self.replica.write() as w:
            w.set_meta("user", user)
        return True

    def heartbeat(self) -> None:
        now = self.now_ms()
        with self.replica.write() as w:
            self.client_id = clients.ensure_client(w, self.client_id, now)
            clients.heartbeat(w, self.client_id, now)
            clients.reap(w, now, keep=self.client_id)
            if self.replica.journal is not None:
                self.replica.journal.heartbeat(w.conn, now, clients.LEASE_MS)
