"""The public face of the client engine: ``await plasma.connect(...)`` and ``Client``."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any

from ..core.errors import MutatorError, SchemaError, StorageClosed, SyncError, UnknownMutator
from ..core.mutators import Mutators
from ..core.query import Select
from ..core.schema import Schema, Table
from . import tabs
from .backoff import Clock, SystemClock
from .blob_cache import make_blob_cache
from .blobs import Blobs, BlobSync
from .change import Callback
from .engine import Engine, Options
from .handle import MutationHandle
from .live import LiveQuery, open_live
from .replica import Replica
from .runner import InlineRunner, Runner, ThreadRunner
from .status import Status
from .storage import Storage, make_storage
from .synchronizer import Synchronizer
from .transport import Transport, default_transport

__all__ = ["Client", "connect"]

IN_PYODIDE = sys.platform == "emscripten"


class _Mutate:
    """``client.mutate.NAME(**args)``, or ``client.mutate("NAME", **args)``."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Callable[..., MutationHandle]:
        if name.startswith("_"):
            raise AttributeError(name)
        mutators = self._client.mutators
        if name not in mutators:
            raise UnknownMutator(name, list(mutators))
        return partial(self._client._mutate, name)

    def __call__(self, name: str, /, **args: Any) -> MutationHandle:
        return self._client._mutate(name, **args)

    def __dir__(self) -> list[str]:
        return sorted(self._client.mutators)


class Client:
    """A connected client: its replica, outbox and sync loop. Made by ``connect()``."""

    def __init__(self, engine: Engine, runner: Runner, mutators: Mutators) -> None:
        self._engine = engine
        self._runner = runner
        self.mutators = mutators
        self.schema = mutators.schema
        self.mutate = _Mutate(self)
        assert engine.blobs is not None
        #: Files as blobs: ``await client.blobs.put(path)``, ``await client.blobs.get(hash)``.
        self.blobs = Blobs(self, engine.blobs)
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise StorageClosed("this client is closed")

    def _mutate(self, name: str, /, **args: Any) -> MutationHandle:
        self._check_open()
        return self._engine.mutate(name, args)

    async def query(
        self, query: Select | str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[dict[str, Any]]:
        """Rows of ``select(...)`` as dicts of Python values, or of an SQL string as
        SQLite stores them (booleans as 0/1, JSON as text)."""
        self._check_open()
        if not isinstance(query, Select | str):
            raise TypeError(f"query() takes select(...) or an SQL string, got {query!r}")
        return self._engine.replica.query(query, params)

    def live(
        self, query: Select | str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> LiveQuery:
        """A query whose result stays current: ``.rows``, ``.df``, ``.subscribe(cb)``.

        ``query`` is ``select(...)`` (kept current in Python, commit by commit) or SQL
        text with ``params`` (run again when a commit touches a table it reads). See
        docs/live.md.
        """
        self._check_open()
        return open_live(self._engine, query, params, client=self)

    def subscribe(
        self, tables: Iterable[str | Table] | str | Table, callback: Callback
    ) -> Callable[[], None]:
        """Call ``callback(change)`` once per commit that touches ``tables``; returns
        the function that unsubscribes.

        Callbacks run on the engine's loop on its next iteration (in CPython, in the
        engine's thread): keep them short, and hand work to your own loop if needed.
        """
        self._check_open()
        names = [tables] if isinstance(tables, str | Table) else list(tables)
        for t in names:
            name = t._name if isinstance(t, Table) else t
            if name not in self.schema.tables:
                raise SchemaError(
                    f"no table named {name!r}; tables: {', '.join(self.schema.tables)}"
                )
        return self._engine.subscribers.subscribe(names, callback)

    async def sync(self) -> None:
        """Push, then pull, now. Raises if the server cannot be reached."""
        self._check_open()
        engine = self._engine
        if engine.transport is None:
            raise SyncError("this client is local only (connect() without a URL): nothing to sync")
        if engine.offline:
            raise SyncError("the client is offline: call client.online() first")
        if engine.halted is not None:
            raise engine.halted
        await self._runner.call(engine.cycle)

    def status(self) -> Status:
        self._check_open()
        return self._engine.status()

    def offline(self) -> None:
        """Stop talking to the server (mutations keep queueing)."""
        self._check_open()
        self._engine.set_offline(True)

    def online(self) -> None:
        """Resume syncing: push what queued up, then pull."""
        self._check_open()
        self._engine.set_offline(False)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._runner.call(self._engine.close)
        if self._engine.blobs is not None:
            await self._engine.blobs.close()
        await self._runner.aclose()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        engine = self._engine
        state = "closed" if self._closed else ("local" if engine.url is None else engine.url)
        return f"<Client {engine.replica.storage.describe()} {state}>"


async def connect(
    url: str | None = None,
    *,
    schema: Schema,
    mutators: Mutators,
    name: str = "default",
    token: str | None = None,
    storage: Storage | str | None = None,
    transport: Transport | Any = None,
    thread: bool | None = None,
    push_delay: float = 0.05,
    pull_interval: float = 30.0,
    pokes: bool = True,
    max_retry_delay: float = 60.0,
    clock: Clock | None = None,
) -> Client:
    """Open the local database ``name`` and start syncing it with the server at ``url``.

    ``url=None`` keeps the client local only. ``storage`` is ``"sqlite"`` (CPython's
    default, ``~/.plasma_nb/<name>.db``), ``"memory"``, ``"indexeddb"`` (Pyodide's
    default) or a ``Storage``. ``transport`` is a plasma ``Transport`` or an httpx
    transport (``httpx.ASGITransport(app)`` talks to an app in-process). ``thread``
    runs the engine's loop in a background thread (CPython's default, so syncing
    goes on between notebook cells); in Pyodide it is always the page's loop.
    ``push_delay`` debounces pushes, ``pull_interval`` is the fallback pull period,
    ``max_retry_delay`` caps the backoff; ``clock`` is for tests.
    """
    if not isinstance(schema, Schema):
        raise SchemaError(f"connect() needs schema=Schema(...), got {schema!r}")
    if not isinstance(mutators, Mutators):
        raise MutatorError(f"connect() needs mutators=Mutators(schema), got {mutators!r}")
    if mutators.schema is not schema:
        raise MutatorError("the mutators were registered for a different schema")
    if url is None and (token is not None or transport is not None):
        raise SyncError("token= and transport= need a server URL")
    store = make_storage(storage, name)
    if thread is None:
        thread = not IN_PYODIDE
    if thread and IN_PYODIDE:
        raise SyncError("thread=True is not available in Pyodide (it has no threads)")
    runner: Runner = ThreadRunner() if thread else InlineRunner()
    options = Options(push_delay=push_delay, pull_interval=pull_interval, pokes=pokes,
                      backoff_cap=max_retry_delay)

    async def start() -> Engine:
        the_clock = clock or SystemClock()
        replica = Replica(store, schema)
        try:
            # Exclusive: other tabs sharing an IndexedDB database wait while this one
            # loads and registers (storage.exclusive(); a no-op for other backends).
            async with store.exclusive():
                reshaped = await replica.open()
                sync = Synchronizer(replica, mutators, now_ms=the_clock.now_ms)
                sync.start(reshaped=reshaped)
            the_transport = _transport(url, token, transport)
        except BaseException:
            await replica.close()
            raise
        engine = Engine(replica, sync, the_transport, url=url, clock=the_clock,
                        options=options, loop=runner.loop)
        engine.blobs = BlobSync(engine, make_blob_cache(store))
        tabs.attach(engine)
        engine.start()
        return engine

    try:
        engine = await runner.call(start)
    except BaseException:
        await runner.aclose()
        raise
    return Client(engine, runner, mutators)


def _transport(url: str | None, token: str | None, transport: Any) -> Transport | None:
    if url is None:
        return None
    if transport is None:
        return default_transport(url, token=token)
    if hasattr(transport, "request") and hasattr(transport, "websocket"):
        return transport  # type: ignore[no-any-return]
    # Anything else is taken for an httpx transport (httpx.ASGITransport(app), a mock...).
    from .httpx_transport import HttpxTransport

    return HttpxTransport(url, token=token, transport=transport)
