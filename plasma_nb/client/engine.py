"""The engine's driver: the sync loop, pokes and heartbeats around a ``Synchronizer``.

Everything async here runs on the engine's loop. The loop pushes soon after a
local mutation (debounced), pulls when a poke arrives (pokes.py), and pulls on a timer as a
fallback (pushing too if entries are waiting, such as those of a client that
died). Failures back off with full jitter; 429 and 503 answers set a floor with
Retry-After. ``ClientStateNotFound`` starts a new client group and pushes the
pending mutations again.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from ..core.errors import (
    AccessDenied,
    ClientStateNotFound,
    MutationError,
    PlasmaError,
    SyncError,
    VersionNotSupported,
)
from ..core.protocol import parse_pull_response, parse_push_response
from .backoff import Backoff, Clock
from .change import Change, Subscribers
from .handle import MutationHandle
from .outcome import Outcome, call_soon
from .pokes import PokeListener
from .replica import Replica
from .status import PullProgress, Status
from .synchronizer import Synchronizer
from .transport import Progress, Response, Transport, TransportError
from .versions import explain

if TYPE_CHECKING:
    from .blobs import BlobSync

__all__ = ["Engine", "Options", "RetryLater"]

logger = logging.getLogger("plasma_nb.client")

_T = TypeVar("_T")


@dataclass(frozen=True)
class Options:
    push_delay: float = 0.05  # debounce: a burst of mutations goes out in one push
    pull_interval: float = 30.0  # fallback pull when no poke arrives
    heartbeat_interval: float = 60.0
    pokes: bool = True
    backoff_base: float = 0.5
    backoff_cap: float = 60.0


class RetryLater(SyncError):
    """The server is overloaded or failing (429, 408 or 5xx): try again later."""

    def __init__(self, message: str, status: int, retry_after: float | None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


#: How often a client with subscribers looks for other processes' commits to its file.
WATCH_INTERVAL = 0.1
#: Verdicts kept for handles not registered yet (see settle()); only a race leaves any.
UNCLAIMED_KEPT = 1024
_NONE: Any = object()
#: How long status() waits for the replica before answering with its figures from just
#: before the transaction that holds it (a large pull).
STATUS_WAIT = 0.05

LOCAL_ONLY = (
    "this client is local only (connect() without a URL): no server confirms its "
    "mutations. They stay in the outbox; connecting to a server with the same name "
    "pushes them."
)


class Engine:
    def __init__(
        self, replica: Replica, sync: Synchronizer, transport: Transport | None, *,
        url: str | None, clock: Clock, options: Options, loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.replica = replica
        self.sync = sync
        self.transport = transport
        self.url = url
        self.clock = clock
        self.options = options
        self.loop = loop
        self.subscribers = Subscribers(loop, on_tables=self._watch)
        replica.observed = self.subscribers.__bool__
        if replica.journal is not None:
            replica.journal.on_change = self._foreign_change
        self.backoff = Backoff(
            base=options.backoff_base, cap=options.backoff_cap, random=clock.random
        )
        self._confirmations: dict[int, Outcome[None]] = {}
        self._confirmations_lock = threading.Lock()
        self._unclaimed: dict[int, str | None] = {}  # verdicts that came before their handle
        self._cycle_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        # Set while online: the poke listener waits on it, so online() resumes
        # listening at once rather than at its next timer.
        self._online = asyncio.Event()
        self._online.set()
        # Set by each online(): it cuts a backoff wait short.
        self._resume = asyncio.Event()
        # Set while offline: a request under way is abandoned when it is set.
        self._gone = asyncio.Event()
        self._push_wanted = False
        self._pull_wanted = False
        self._push_due = 0.0
        self._next_periodic = 0.0
        self._push_limit = 1000
        self._push_room = 1000  # mutations per push for now: halved after a push got no answer
        self._described = False
        self._server: dict[str, Any] | None = None  # what GET /sync/schema said
        self._offline = False
        self._halted: SyncError | None = None
        self._closed = False
        self._tasks: list[asyncio.Task[None]] = []
        #: Blob uploads (blobs.py), set by connect(): before a push, on a 409, after a cycle.
        self.blobs: BlobSync | None = None
        self.listener = PokeListener(self)
        self.connected = False
        self.last_push: _dt.datetime | None = None
        self.last_pull: _dt.datetime | None = None
        self.pulling: PullProgress | None = None  # read by status() from any thread
        self._replica_view: tuple[str, str, str | None, int | None, int] | None = None
        self.errors: deque[str] = deque(maxlen=10)
        self.last_error: str | None = None

    # -- lifecycle (engine loop) ---------------------------------------------------

    def start(self) -> None:
        self._next_periodic = self.clock.monotonic() + self.options.pull_interval
        self._tasks.append(self.loop.create_task(self._heartbeats()))
        if self.replica.journal is not None:
            self._tasks.append(self.loop.create_task(self._watch_others()))
        if self.transport is None:
            return
        self._push_wanted = self.sync.pending() > 0
        self._pull_wanted = True
        self._tasks.append(self.loop.create_task(self._run()))
        if self.options.pokes:
            self._tasks.append(self.loop.create_task(self.listener.run()))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        with self._confirmations_lock:
            pending, self._confirmations = self._confirmations, {}
        for outcome in pending.values():
            outcome.set_exception(SyncError(
                "the client was closed before the server confirmed this mutation; it stays "
                "in the outbox and the next client to open this database pushes it"
            ))
        if self.transport is not None:
            await self.transport.aclose()
        if self.replica.journal is not None and self.replica.journal.watched:
            try:  # so that the other processes stop journaling for this one
                self.replica.watch((), self.clock.now_ms())
            except PlasmaError as exc:
                logger.warning("could not unregister from the journal: %s", exc)
        try:  # tabs sharing IndexedDB: write what waits while the replica is still open
            async with self.replica.storage.exclusive():
                pass
        except PlasmaError as exc:
            logger.warning("could not write the last commits: %s", exc)
        await self.replica.close()

    # -- local mutations (any thread) ------------------------------------------------

    def mutate(self, name: str, args: dict[str, Any]) -> MutationHandle:
        local = self.sync.mutate(name, args)
        confirmed: Outcome[None] = Outcome()
        if self.transport is None:
            confirmed.set_exception(SyncError(LOCAL_ONLY))
        elif self._halted is not None:
            confirmed.set_exception(self._halted)  # kept in the outbox; no server will say
        else:
            with self._confirmations_lock:
                early = self._unclaimed.pop(local.seq, _NONE)
                if early is _NONE:
                    self._confirmations[local.seq] = confirmed
            if early is not _NONE:
                _verdict(confirmed, early)
        self.subscribers.notify(local.write.change)
        if self.transport is not None:
            call_soon(self.loop, self.want_push)
        return MutationHandle(
            name, args, seq=local.seq, client_id=local.client_id,
            mutation_id=local.mutation_id, durable=local.write.durable, confirmed=confirmed,
        )

    # -- scheduling (engine loop) ------------------------------------------------------

    def want_push(self) -> None:
        if not self._push_wanted:
            self._push_due = self.clock.monotonic() + self.options.push_delay
        self._push_wanted = True
        self._wake.set()

    def want_pull(self) -> None:
        self._pull_wanted = True
        self._wake.set()

    def set_offline(self, offline: bool) -> None:
        """From any thread. The flag holds at once: the very next ``sync()`` and
        ``status()`` see it. The loop's reaction (closing the poke socket; pushing,
        pulling and listening again) follows on its next iteration."""
        self._offline = offline
        call_soon(self.loop, self._offline_changed)

    def _offline_changed(self) -> None:
        # Read the flag now, not the argument of the call that scheduled this: an
        # offline() followed at once by online() must end up online.
        if self._offline:
            self._online.clear()
            self._gone.set()
            if self.listener.socket is not None:
                # Stop listening at once rather than at the next poke.
                self._tasks.append(self.loop.create_task(self.listener.socket.close()))
        else:
            self._push_wanted = True
            self._pull_wanted = True
            self._gone.clear()
            self._online.set()
            self._resume.set()
        self._wake.set()

    async def wait_online(self, within: float) -> None:
        """Until the client is online (at once if it is), or ``within`` seconds."""
        await _wait_event(self._online, within)

    async def _wait_for_work(self) -> None:
        while not self._closed:
            now = self.clock.monotonic()
            if not self._offline and self._halted is None:
                if now >= self._next_periodic:
                    self._next_periodic = now + self.options.pull_interval
                    self._pull_wanted = True
                    self._push_wanted = self._push_wanted or self.sync.pending() > 0
                if self._pull_wanted or (self._push_wanted and now >= self._push_due):
                    return
            timeout = self._next_periodic - now
            if self._push_wanted:
                timeout = min(timeout, self._push_due - now)
            self._wake.clear()
            await _wait_event(self._wake, timeout)

    async def _run(self) -> None:
        while not self._closed:
            await self._wait_for_work()
            push, pull = self._push_wanted, self._pull_wanted
            self._push_wanted = self._pull_wanted = False
            delay = await self.attempt(push=push, pull=pull)
            if delay is not None:
                self._push_wanted |= push
                self._pull_wanted |= pull
                await self._back_off(delay)

    async def _back_off(self, delay: float) -> None:
        """Wait out a backoff delay, or until online() asks to sync now."""
        self._resume.clear()
        sleep = asyncio.ensure_future(self.clock.sleep(delay))
        resumed = asyncio.ensure_future(self._resume.wait())
        try:
            await asyncio.wait({sleep, resumed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleep.cancel()
            resumed.cancel()

    async def attempt(self, *, push: bool, pull: bool) -> float | None:
        """One sync cycle; None on success, else how long to wait before the next."""
        try:
            await self.cycle(push=push, pull=pull)
        except (TransportError, RetryLater) as exc:
            self._record(exc)
            self.connected = not isinstance(exc, TransportError)
            return self.backoff.next_delay(getattr(exc, "retry_after", None))
        except (VersionNotSupported, AccessDenied):
            return None  # cycle() stopped syncing and recorded why
        except (PlasmaError, ValueError) as exc:
            if self._offline:
                return None  # offline() abandoned the cycle: nothing went wrong
            self._record(exc)
            logger.warning("sync failed: %s", exc)
            return self.backoff.next_delay()
        self.backoff.reset()
        return None

    # -- one cycle: push, then pull ------------------------------------------------------

    async def cycle(self, *, push: bool = True, pull: bool = True) -> None:
        async with self._cycle_lock:
            for _ in range(3):
                group = self.sync.client_group_id
                try:
                    if not self._described:
                        await self._describe()
                    sent = await self._push_all() if push else 0
                    if pull or sent:
                        await self._pull()
                    if self.blobs is not None:
                        await self.blobs.upload_queued()  # none once offline()
                except ClientStateNotFound:
                    logger.warning("the server lost client group %s: starting a new one", group)
                    await self._locked(self.sync.recover, group)
                    push = pull = True
                    continue
                except VersionNotSupported as exc:
                    raise await self._halt(exc) from None
                except AccessDenied as exc:
                    self._stop(exc)
                    raise
                self.connected = True
                self.last_error = None
                return
            raise SyncError("the server keeps answering ClientStateNotFound")

    async def _locked(self, step: Callable[..., _T], *args: Any) -> _T:
        """Run one step of the sync state machine holding the storage's write lock.

        Tabs sharing an IndexedDB database take turns there, each caught up with the
        others' writes first (a no-op for other storage). Every read of what to push
        and every write but a local mutation goes through here; the network round
        trips and blob uploads between them hold no lock.
        """
        async with self.replica.storage.exclusive():
            return step(*args)

    async def _describe(self) -> None:
        response = await self._send("GET", "/sync/schema", None, allow={404})
        self._described = True
        body = response.body
        if response.status != 200 or not isinstance(body, dict):
            return
        self._server = body
        limits = body.get("limits")
        if isinstance(limits, dict) and isinstance(limits.get("maxMutationsPerPush"), int):
            self._push_limit = max(1, min(1000, limits["maxMutationsPerPush"]))
        user = body.get("user")
        await self._locked(self.sync.set_user, user if isinstance(user, str) else None)

    async def _push_all(self) -> int:
        sent, after = 0, 0
        while True:
            if self._offline:
                raise _went_offline()  # before the blob uploads of the next push, too
            limit = min(self._push_limit, self._push_room)
            batch = await self._locked(
                partial(self.sync.push_request, after_seq=after, limit=limit))
            if batch is None:
                break
            if self.blobs is not None:
                # The blobs these mutations store go up first: the server refuses (409) a
                # row naming a blob it lacks. On a 409 all the same, upload and push again.
                await self.blobs.before_push(batch.request.mutations)
            try:
                response = await self._send(
                    "POST", "/sync/push", batch.request.to_json(),
                    allow={409} if self.blobs is not None else frozenset())
            except TransportError:
                # No answer, perhaps a timeout on a slow server: until the outbox is
                # through, pushes carry half as many, so a long outbox cannot keep
                # outrunning the timeout.
                self._push_room = max(1, len(batch.entries) // 2)
                raise
            if response.status == 409:
                assert self.blobs is not None
                await self.blobs.missing(response.body)
                continue
            await self._locked(self.sync.push_done, batch, parse_push_response(response.body))
            after = batch.last_seq
            sent += len(batch.entries)
        self._push_room = self._push_limit  # the outbox is through: full size again
        if sent:
            self.last_push = _dt.datetime.now(_dt.UTC)
        return sent

    async def _pull(self) -> None:
        request = self.sync.pull_request()
        try:
            self.pulling = PullProgress("download", 0, None)
            response = await self._send("POST", "/sync/pull", request.to_json(),
                                        progress=self._downloading)
            parsed = parse_pull_response(response.body)
            self.pulling = PullProgress("apply", 0, len(parsed.patch))
            result = await self._locked(self.sync.pull_done, request, parsed)
        finally:
            self.pulling = None
        self.last_pull = _dt.datetime.now(_dt.UTC)
        if not result.applied:
            self.want_pull()  # another process moved the replica on: ask again
            return
        self.subscribers.notify(result.change)
        self.settle((v.seq, v.error) for v in result.verdicts)
        self.settle_from_replica()

    def _downloading(self, received: int, total: int | None) -> None:
        self.pulling = PullProgress("download", received, total)

    async def _send(
        self, method: str, path: str, body: Any, *, allow: frozenset[int] | set[int] = frozenset(),
        progress: Progress | None = None,
    ) -> Response:
        assert self.transport is not None
        if self._offline:
            raise _went_offline()
        # offline() means no more traffic, so a request under way is abandoned, not
        # awaited: an unanswered push is pushed again later (the server skips what it
        # already processed), and an abandoned pull applied nothing.
        sending = asyncio.ensure_future(
            self.transport.request(method, path, json=body, progress=progress))
        gone = asyncio.ensure_future(self._gone.wait())
        try:
            done, _ = await asyncio.wait({sending, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not sending.done():
                sending.cancel()
        if sending not in done:
            raise _went_offline()
        response = sending.result()
        status = response.status
        if status == 200 or status in allow:
            return response
        message = f"{method} {path}: HTTP {status}"
        if isinstance(response.body, Mapping) and response.body.get("message"):
            message += f": {response.body['message']}"
        if status in (408, 429) or status >= 500:
            raise RetryLater(message, status, response.retry_after)
        if status in (401, 403):
            raise AccessDenied(_refusal(message, status, self.sync.client_group_id), status)
        raise SyncError(message)

    # -- verdicts ----------------------------------------------------------------------

    def settle(self, verdicts: Iterable[tuple[int, str | None]]) -> None:
        for seq, error in verdicts:
            with self._confirmations_lock:
                outcome = self._confirmations.pop(seq, None)
                if outcome is None:
                    # In CPython a mutate() on the caller's thread may commit, and the
                    # engine's thread push and pull its entry, before that mutate()
                    # registers its handle: keep the verdict for it (mutate() looks).
                    self._unclaimed[seq] = error
                    if len(self._unclaimed) > UNCLAIMED_KEPT:
                        del self._unclaimed[next(iter(self._unclaimed))]
                    continue
            _verdict(outcome, error)

    async def _halt(self, exc: VersionNotSupported) -> VersionNotSupported:
        """Retrying cannot help: this client needs an upgrade (or the server a downgrade).
        Stop syncing, and say why in the status and in every waiting handle."""
        try:
            await self._describe()  # what the server accepts now, for the message
        except (PlasmaError, TransportError):
            pass
        halted = explain(exc, schema_version=self.sync.schema.version, server=self._server)
        self._stop(halted)
        return halted

    def _stop(self, halted: SyncError) -> None:
        """Sync stops for good: record why, and tell every handle waiting on the server."""
        self._record(halted)
        self._halted = halted
        self._fail_confirmations(halted)

    def _fail_confirmations(self, exc: SyncError) -> None:
        """Sync stopped for good: the handles waiting on the server learn why."""
        with self._confirmations_lock:
            pending, self._confirmations = self._confirmations, {}
        for outcome in pending.values():
            outcome.set_exception(exc)

    def settle_from_replica(self) -> None:
        """Settle handles whose entries another process saw confirmed."""
        with self._confirmations_lock:
            seqs = list(self._confirmations)
        if seqs:
            self.settle(self.sync.verdicts(seqs).items())

    # -- other processes on the same file ---------------------------------------------

    def _watch(self, tables: frozenset[str]) -> None:
        """The subscribed tables changed (from any thread): tell the journal."""
        if self._closed or self.replica.journal is None:
            return
        if not self.replica.watch(tables, self.clock.now_ms()):
            # Inside this thread's own write transaction: once it is over.
            call_soon(self.loop, lambda: self._watch(self.subscribers.tables))

    def _foreign_change(self, change: Change) -> None:
        """Other processes' commits (journal.py), under the replica's lock: the commit
        hooks (live queries) and the subscribers hear them as they hear a local commit."""
        for hook in self.replica.commit_hooks:
            hook(change)
        self.subscribers.notify(change)

    async def _watch_others(self) -> None:
        """Poll for other processes' commits while anyone subscribes (journal.py)."""
        while not self._closed:
            await asyncio.sleep(WATCH_INTERVAL)
            if not self.subscribers:
                continue
            try:
                self.replica.poll_others()
            except PlasmaError as exc:
                self._record(exc)

    # -- background tasks ----------------------------------------------------------------

    async def _heartbeats(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.options.heartbeat_interval)
            try:
                async with self.replica.storage.exclusive():
                    self.sync.heartbeat()
                    self.settle_from_replica()
            except PlasmaError as exc:
                self._record(exc)

    # -- status ------------------------------------------------------------------------

    def _record(self, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}"
        self.last_error = text
        self.errors.append(text)

    def status(self) -> Status:
        pokes, pokes_detail = self.listener.state, self.listener.detail
        if self._offline and pokes in ("connected", "disconnected"):
            # offline() holds at once; the socket closes on the loop's next iteration.
            pokes, pokes_detail = "disconnected", "offline"
        # A large pull holds the replica for seconds; a progress bar polling status()
        # meanwhile gets the replica's figures from just before it, rather than waiting.
        held = self.replica.lock.acquire(timeout=STATUS_WAIT)
        if not held and self._replica_view is None:
            held = self.replica.lock.acquire()  # the first status() has nothing else to say
        if held:
            try:
                self._replica_view = (
                    self.replica.storage.describe(), self.sync.client_group_id,
                    self.sync.client_id, self.sync.cookie, self.sync.pending())
            finally:
                self.replica.lock.release()
        assert self._replica_view is not None
        storage, group, client_id, cookie, pending = self._replica_view
        return Status(
            url=self.url,
            storage=storage,
            client_group_id=group,
            client_id=client_id,
            cookie=cookie,
            pending=pending,
            offline=self._offline,
            connected=self.connected,
            pokes=pokes,
            last_push=self.last_push,
            last_pull=self.last_pull,
            pulling=self.pulling,
            last_error=self.last_error,
            errors=tuple(self.errors),
            user=self.sync.user,
            pokes_detail=pokes_detail,
        )

    @property
    def offline(self) -> bool:
        return self._offline

    @property
    def halted(self) -> SyncError | None:
        return self._halted

    @property
    def closed(self) -> bool:
        return self._closed


async def _wait_event(event: asyncio.Event, within: float) -> None:
    # asyncio.wait, not wait_for: Python 3.11's wait_for can swallow a cancellation
    # that coincides with the event, and close() would hang.
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=max(within, 0.0))
    finally:
        waiter.cancel()


_KEPT = ("Sync has stopped; pending mutations stay in the local outbox and are pushed by the "
         "first client that opens this database with a token the server accepts.")


def _went_offline() -> SyncError:
    return SyncError("the client went offline: call client.online() to sync again")


def _refusal(message: str, status: int, group: str) -> str:
    """Why a 401 or 403 stops sync, and what the user can do about it."""
    if status == 401:
        return (f"the server refused this client's credentials ({message}). Connect again "
                f"with a token the server accepts (token=...). {_KEPT}")
    return (f"the server refused this client ({message}). Connect with the token of the "
            f"user who owns client group {group}, or open another local database "
            f"(name=...). {_KEPT}")


def _verdict(outcome: Outcome[None], error: str | None) -> None:
    if error is None:
        outcome.set_result(None)
    else:
        outcome.set_exception(MutationError(error))
