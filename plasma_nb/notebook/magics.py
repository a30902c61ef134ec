"""``%plasma`` and ``%%plasma sql``: the magics, registered by ``%load_ext plasma_nb``.

Every command is a word after ``%plasma`` (see commands.py for their arguments).
Mistakes and errors the user can fix appear as one line, through IPython's
``UsageError``; ``%config PlasmaMagics.short_errors = False`` shows tracebacks.

``connect``, ``sync`` and ``reset`` wait for the network. On a line of their own
at the top level of a cell, the input transformer (transformer.py) rewrites them
into ``await __plasma_magics__.line_async(...)``, which both ipykernel and the
Pyodide kernel run with top-level await, so the next cell finds the client ready
even under "Run all". Elsewhere (inside a function, say), CPython waits for them on
a helper thread; Pyodide, which cannot block, starts them and returns the task.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import inspect
import json
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from IPython.core.error import UsageError
from IPython.core.magic import (
    Magics,
    line_cell_magic,
    magics_class,
    needs_local_scope,
    no_var_expand,
)
from traitlets import Bool, Enum, Int, Unicode, observe

from ..core.errors import PlasmaError
from . import _access, commands
from ._deps import IN_PYODIDE, has
from .commands import AWAITED, CommandError, SqlArgs
from .display import OPTIONS
from .parameters import bind
from .progress import watching
from .values import static_table, text_table

__all__ = ["Connection", "PlasmaMagics", "TextTable"]


class TextTable:
    """Rows shown as a table where pandas is not installed (a bare Pyodide kernel)."""

    def __init__(self, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
        self.columns = columns
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return text_table(self.columns, self.rows)

    def _repr_html_(self) -> str:
        return static_table(self.columns, self.rows, len(self.rows))


def tabular(columns: list[str], rows: list[tuple[Any, ...]]) -> Any:
    """A pandas DataFrame if pandas is installed, else a ``TextTable``."""
    if not has("pandas"):
        return TextTable(columns, rows)
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]

    if not rows:
        return pd.DataFrame({c: [] for c in columns})
    return pd.DataFrame.from_records(rows, columns=columns)


@dataclass
class Connection:
    """One ``%plasma connect``: its client and how it was made (``reset`` remakes it)."""

    name: str
    client: Any
    url: str | None
    schema: str
    token_env: str | None
    storage: str | None
    log: deque[tuple[Any, ...]] = field(default_factory=deque)
    unsubscribe: Callable[[], None] | None = None
    duck: Any = None

    def close_extras(self) -> None:
        if self.unsubscribe is not None:
            self.unsubscribe()
            self.unsubscribe = None
        if self.duck is not None:
            self.duck.close()
            self.duck = None


def _with_doc(doc: str) -> Callable[[Any], Any]:
    def set_doc(fn: Any) -> Any:
        fn.__doc__ = doc
        return fn

    return set_doc


def _label(exc: BaseException) -> str:
    return type(exc).__name__


@magics_class
class PlasmaMagics(Magics):
    """The ``%plasma`` magics; settings with ``%config PlasmaMagics.<name> = value``."""

    displaylimit = Int(10, help="Rows in the static HTML table shown where widgets cannot "
                       "render (nbconvert, GitHub); 0 shows every row.").tag(config=True)
    autolimit = Int(0, help="Most rows `%%plasma sql` fetches (not --live); 0 for no "
                    "limit.").tag(config=True)
    default_name = Unicode("", help="The local database name `%plasma connect` uses without "
                           "--name; empty: the schema file's name.").tag(config=True)
    default_engine = Enum(["sqlite", "duckdb"], "sqlite", help="The engine of "
                          "`%%plasma sql` without --engine.").tag(config=True)
    short_errors = Bool(True, help="Show errors as one line; False shows the traceback."
                        ).tag(config=True)
    sync_on_connect = Bool(True, help="`%plasma connect` to a server syncs once before it "
                           "returns, so the next cell sees the server's data.").tag(config=True)
    rows_visible = Int(12, help="Rows a live table shows at once.").tag(config=True)
    page_size = Int(50, help="Rows a live table sends per window.").tag(config=True)
    widgets = Bool(True, help="Show live queries and the status as widgets; False: static "
                   "HTML only.").tag(config=True)
    log_size = Int(1000, help="Row changes `%plasma log` keeps per connection."
                   ).tag(config=True)

    def __init__(self, shell: Any, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self.connections: dict[str, Connection] = {}
        self.current: str | None = None
        self._schemas: dict[tuple[str, float], tuple[Any, Any]] = {}
        self._options_changed()

    @observe("displaylimit", "rows_visible", "page_size", "widgets")
    def _options_changed(self, change: Any = None) -> None:
        OPTIONS.displaylimit = max(0, self.displaylimit)
        OPTIONS.rows_visible = max(1, self.rows_visible)
        OPTIONS.page_size = max(1, self.page_size)
        OPTIONS.widgets = self.widgets

    # -- entry points --------------------------------------------------------------------

    @no_var_expand
    @needs_local_scope
    @line_cell_magic
    @_with_doc(commands.help_text())
    def plasma(self, line: str, cell: str | None = None, local_ns: Any = None) -> Any:
        try:
            command, rest = commands.split(line)
            if cell is not None and command != "sql":
                raise CommandError(
                    "%%plasma runs SQL: %%plasma sql [options]; other commands are line "
                    "magics (%plasma COMMAND)"
                )
            if command in AWAITED:
                return self._block_on(self._awaited(command, rest, local_ns))
            return self._command(command, rest, cell, local_ns)
        except Exception as exc:
            self._fail(exc)

    async def line_async(self, line: str, local_ns: Mapping[str, Any] | None = None) -> Any:
        """What the input transformer runs for ``%plasma connect|sync|reset`` lines."""
        try:
            command, rest = commands.split(line)
            if command in AWAITED:
                return await self._awaited(command, rest, local_ns)
            return self._command(command, rest, None, local_ns)
        except Exception as exc:
            self._fail(exc)

    def _fail(self, exc: Exception) -> NoReturn:
        if isinstance(exc, UsageError):
            raise exc
        if isinstance(exc, CommandError):
            raise UsageError(str(exc)) from None
        if isinstance(exc, PlasmaError) and self.short_errors:
            error = UsageError(str(exc))
            error.error_type = _label(exc)  # type: ignore[attr-defined]
            raise error from None
        raise exc

    def _block_on(self, work: Coroutine[Any, Any, Any]) -> Any:
        if IN_PYODIDE:
            # The page's loop cannot be blocked: start the work and hand back the task.
            print("plasma: started in the background; `await` the result, or put this "
                  "%plasma line on a line of its own to wait for it", file=sys.stderr)
            return asyncio.ensure_future(work)
        outcome: list[Any] = []

        def run() -> None:
            try:
                outcome.append((True, asyncio.run(work)))
            except BaseException as exc:
                outcome.append((False, exc))

        # A helper thread: the kernel's own loop may be running this very cell.
        thread = threading.Thread(target=run, name="plasma_nb-magic")
        thread.start()
        thread.join()
        ok, value = outcome[0]
        if not ok:
            raise value
        return value

    @property
    def user_ns(self) -> dict[str, Any]:
        assert self.shell is not None
        ns: dict[str, Any] = self.shell.user_ns
        return ns

    def _namespace(self, local_ns: Mapping[str, Any] | None) -> dict[str, Any]:
        namespace = dict(self.user_ns)
        if local_ns is not None and local_ns is not self.user_ns:
            namespace.update(local_ns)
        return namespace

    def _expand(self, rest: str, local_ns: Mapping[str, Any] | None) -> str:
        """``$var`` and ``{expr}`` in non-SQL commands, as IPython expands line magics."""
        if "$" not in rest and "{" not in rest:
            return rest
        from IPython.utils.text import DollarFormatter

        try:
            return DollarFormatter().vformat(rest, args=[], kwargs=self._namespace(local_ns))
        except Exception:
            return rest  # as IPython does: an expansion that fails leaves the text alone

    async def _awaited(self, command: str, rest: str, local_ns: Mapping[str, Any] | None) -> Any:
        args = commands.parse(command, self._expand(rest, local_ns))
        if command == "connect":
            return await self.connect(args)
        if command == "sync":
            return await self.sync(args)
        if command == "blob":
            return await self.blob(args)
        return await self.reset(args)

    def _command(self, command: str, rest: str, cell: str | None,
                 local_ns: Mapping[str, Any] | None) -> Any:
        if not command:
            raise CommandError(
                f"%plasma needs a command: {', '.join(commands.COMMANDS)} (%plasma? for help)")
        if command not in commands.COMMANDS:
            raise CommandError(
                f"unknown command {command!r}; valid commands are: "
                f"{', '.join(commands.COMMANDS)}")
        namespace = self._namespace(local_ns)
        if command == "sql":
            return self.sql(commands.parse_sql(rest, cell), namespace)
        if command == "mutate":
            return self.mutate(commands.parse(command, rest), namespace)
        args = commands.parse(command, self._expand(rest, local_ns))
        handler: Callable[[Any], Any] = getattr(self, command.replace("-", "_") + "_command")
        return handler(args)

    # -- connections ---------------------------------------------------------------------

    def connection(self, name: str | None = None) -> Connection:
        """The connection called ``name`` (default: the last one connected)."""
        if name is None:
            name = self.current
            if name is None:
                raise CommandError(
                    "no connection: run %plasma connect URL --schema FILE first")
        found = self.connections.get(name)
        if found is None:
            known = ", ".join(self.connections) or "none"
            raise CommandError(f"no connection named {name!r} (connections: {known})")
        return found

    def _load_schema(self, spec: str) -> tuple[Any, Any]:
        from ..cli import CommandError as CliError
        from ..cli import load_schema_module

        path = Path(spec)
        key = (str(path.resolve()), path.stat().st_mtime if path.is_file() else 0.0)
        cached = self._schemas.get(key)
        if cached is not None:
            return cached
        try:
            loaded = load_schema_module(spec)
        except CliError as exc:
            raise CommandError(f"%plasma connect: {exc}") from None
        self._schemas[key] = loaded
        return loaded

    async def connect(self, args: Any) -> None:
        from ..client import connect
        from ..client.transport import OriginRefused

        schema, mutators = self._load_schema(args.schema)
        if args.url is None:
            # In JupyterLite served by `plasma-nb serve --site`, the page's own origin.
            url = await page_sync_server()
        else:
            url = None if args.url in ("", "local", "none") else args.url
        name = args.name or self.default_name or _stem(args.schema)
        token = None
        if args.token_env:
            token = os.environ.get(args.token_env)
            if not token:
                raise CommandError(
                    f"%plasma connect: environment variable {args.token_env} is not set")
            if url is None:
                raise CommandError("%plasma connect: --token-env needs a server URL")
        old = self.connections.pop(name, None)
        if old is not None:
            await self._close(old)
        client = await connect(url, schema=schema, mutators=mutators, name=name, token=token,
                               storage=args.storage)
        conn = Connection(name, client, url, args.schema, args.token_env, args.storage,
                          deque(maxlen=max(1, self.log_size)))
        conn.unsubscribe = client.subscribe(list(schema.tables), self._logger(conn))
        _access.first_seen(client)
        self.connections[name] = conn
        self.current = name
        note = ""
        if url is not None and self.sync_on_connect:
            try:
                await watching(client, client.sync())
            except OriginRefused as exc:
                note = (f" {exc.advice} Working from the local replica until then; sync "
                        "goes on in the background.")
            except Exception as exc:
                note = (f" The server did not answer ({_label(exc)}: {exc}): working from the "
                        "local replica; sync goes on in the background.")
        counts = ", ".join(f"{n} {t}" for t, n in self._row_counts(client).items())
        where = f"to {url}" if url else "(local only)"
        pending = client.status().pending
        print(f"Connected {name!r} {where}: {counts}; {pending} pending.{note}")

    def _row_counts(self, client: Any) -> dict[str, int]:
        counts = {}
        for table in client.schema.tables:
            _, rows = _access.read(client, f'SELECT count(*) FROM "{table}"')
            counts[table] = int(rows[0][0])
        return counts

    def _logger(self, conn: Connection) -> Callable[[Any], None]:
        keys = {name: t._pk.name for name, t in conn.client.schema.tables.items()}

        def record(change: Any) -> None:
            at = _dt.datetime.now(_dt.UTC)
            for table, rows in change.added.items():
                for row in rows:
                    conn.log.append((at, table, "insert", row.get(keys[table]), row))
            for table, pairs in change.changed.items():
                for _before, after in pairs:
                    conn.log.append((at, table, "update", after.get(keys[table]), after))
            for table, rows in change.removed.items():
                for row in rows:
                    conn.log.append((at, table, "delete", row.get(keys[table]), row))

        return record

    async def _close(self, conn: Connection) -> None:
        conn.close_extras()
        await conn.client.close()
        if self.current == conn.name:
            self.current = None

    # -- commands --------------------------------------------------------------------------

    async def sync(self, args: Any) -> None:
        conn = self.connection(args.name)
        status = conn.client.status()
        if status.local_only:
            raise CommandError(f"{conn.name!r} is local only: there is no server to sync with")
        if status.offline:
            raise CommandError(f"{conn.name!r} is offline: run %plasma online first")
        await watching(conn.client, conn.client.sync())
        after = conn.client.status()
        print(f"Synced {conn.name!r} with {after.url}: {after.pending} pending.")

    def status_command(self, args: Any) -> Any:
        conn = self.connection(args.name)
        if self.widgets and has("anywidget"):
            from .sync_status import SyncStatus

            return SyncStatus(conn.client)
        from .sync_status import describe

        print(describe(conn.client.status()))
        return None

    def offline_command(self, args: Any) -> None:
        conn = self.connection(args.name)
        conn.client.offline()
        print(f"{conn.name!r} is offline: mutations apply locally and queue "
              f"({conn.client.status().pending} pending).")

    def online_command(self, args: Any) -> None:
        conn = self.connection(args.name)
        conn.client.online()
        print(f"{conn.name!r} is online: pushing {conn.client.status().pending} pending, "
              "then pulling (in the background; %plasma sync waits).")

    def tables_command(self, args: Any) -> Any:
        conn = self.connection(args.name)
        counts = self._row_counts(conn.client)
        rows = [
            (name, ", ".join(c.name for c in t), t._pk.name, counts[name])
            for name, t in conn.client.schema.tables.items()
        ]
        return tabular(["table", "columns", "key", "rows"], rows)

    def mutators_command(self, args: Any) -> Any:
        conn = self.connection(args.name)
        rows = []
        for name in conn.client.mutators:
            fn = conn.client.mutators[name]
            params = list(inspect.signature(fn).parameters.values())[1:]
            doc = (inspect.getdoc(fn) or "").partition("\n")[0]
            rows.append((name, ", ".join(str(p) for p in params), doc))
        return tabular(["mutator", "arguments", "doc"], rows)

    def mutate(self, args: Any, namespace: Mapping[str, Any]) -> Any:
        conn = self.connection(args.name)
        values: dict[str, Any] = {}
        for item in args.args:
            key, eq, text = item.partition("=")
            if not eq or not key.isidentifier():
                raise CommandError(
                    f"%plasma mutate: arguments are key=value, got {item!r}")
            values[key] = _argument(text, namespace)
        if args.mutator not in conn.client.mutators:
            raise CommandError(
                f"%plasma mutate: no mutator named {args.mutator!r}; mutators: "
                f"{', '.join(conn.client.mutators)}")
        return conn.client.mutate(args.mutator, **values)

    def sql(self, args: SqlArgs, namespace: Mapping[str, Any]) -> Any:
        conn = self.connection(args.name)
        client = conn.client
        if not args.sql:
            raise CommandError("%plasma sql: no SQL (put it in the cell, or after the options)")
        engine = args.engine or self.default_engine
        limit = self.autolimit if self.autolimit > 0 else None
        result: Any
        if engine == "duckdb":
            if conn.duck is None:
                from .duck import DuckEngine

                conn.duck = DuckEngine(client)
            sql, params = bind(args.sql, namespace, style="dollar")
            if args.live:
                result = conn.duck.live(sql, params)
            else:
                result = conn.duck.frame_of(sql, params, limit=limit)
        else:
            sql, params = bind(args.sql, namespace)
            if args.live:
                if not hasattr(client, "live"):
                    raise CommandError(
                        "%plasma sql --live needs live queries in the client "
                        "(plasma_nb.client.live), which this version does not have")
                result = client.live(sql, params=params)
            else:
                names, rows = _access.read(client, sql, params, limit=limit)
                result = tabular(names, rows)
        user = self.user_ns
        if args.out:
            user[args.out] = result
        if args.capture:
            user[args.capture] = result
            if not args.show:
                return None
        return result

    def outbox_command(self, args: Any) -> Any:
        conn = self.connection(args.name)
        rows = [
            (e.seq, e.name, json.dumps(e.args, ensure_ascii=False),
             _dt.datetime.fromtimestamp(e.queued_ms / 1000, _dt.UTC), e.error,
             e.client_id, e.mutation_id)
            for e in _access.outbox(conn.client)
        ]
        return tabular(["seq", "mutator", "args", "queued", "error", "client_id",
                        "mutation_id"], rows)

    def log_command(self, args: Any) -> Any:
        conn = self.connection(args.name)
        entries = list(conn.log)
        if args.limit > 0:
            entries = entries[-args.limit:]
        return tabular(["at", "table", "op", "key", "row"], entries)

    async def reset(self, args: Any) -> None:
        conn = self.connection(args.name)
        client = conn.client
        storage = _access.storage_of(client)
        pending = _access.outbox(client)
        if not args.yes:
            names = ", ".join(e.name for e in pending[:5]) + (", ..." if len(pending) > 5 else "")
            lost = (f"{len(pending)} pending mutation(s) the server has not confirmed ({names})"
                    if pending else "no pending mutations")
            print(
                f"%plasma reset drops the local database of {conn.name!r} "
                f"({storage.describe()}): its rows, its sync state and {lost}.\n"
                f"It keeps the server's data (reconnecting pulls a fresh copy), the schema file "
                f"{conn.schema} and the other connections.\n"
                f"Run `%plasma reset --yes{' --name ' + conn.name if args.name else ''}` to do it."
            )
            return
        kind = getattr(storage, "kind", "")
        if kind not in ("sqlite", "memory"):
            raise CommandError(
                f"%plasma reset: cannot drop a {kind or 'custom'} replica yet; clear the "
                "site's data in the browser instead")
        self.connections.pop(conn.name, None)
        await self._close(conn)
        if kind == "sqlite":
            base = Path(storage.path)
            for path in (base, Path(f"{base}-wal"), Path(f"{base}-shm"), Path(f"{base}-journal")):
                path.unlink(missing_ok=True)
        print(f"Dropped the local database of {conn.name!r}"
              f"{f' and {len(pending)} pending mutation(s)' if pending else ''}.")
        await self.connect(_ConnectArgs(conn.url, conn.schema, conn.name, conn.token_env,
                                         conn.storage))

    def client_command(self, args: Any) -> Any:
        return self.connection(args.name).client

    async def blob(self, args: Any) -> Any:
        blobs = self.connection(args.name).client.blobs
        if args.action == "put":
            if args.path is not None:
                raise CommandError("%plasma blob put takes one PATH")
            return await blobs.put(args.target)
        if args.path is None:
            return await blobs.get(args.target)
        path = await blobs.save(args.target, args.path)
        print(f"Wrote blob {args.target[:12]}… to {path}.")
        return None

    def help_command(self, args: Any) -> None:
        if args.command is None:
            print(commands.help_text())
        elif args.command not in commands.COMMANDS:
            raise CommandError(
                f"%plasma help: no command {args.command!r}; commands: "
                f"{', '.join(commands.COMMANDS)}")
        else:
            print(commands.command_help(args.command))


@dataclass
class _ConnectArgs:
    url: str | None
    schema: str
    name: str | None
    token_env: str | None
    storage: str | None


def _stem(spec: str) -> str:
    """``todos`` for ``todos.py``, ``lib/todos.py`` and the module ``app.todos``."""
    if spec.endswith(".py") or "/" in spec or os.sep in spec:
        return Path(spec).stem
    return spec.rpartition(".")[2]


def _argument(text: str, namespace: Mapping[str, Any]) -> Any:
    """A mutate argument: ``:var`` from the notebook, else JSON where it parses, else text."""
    if text.startswith(":") and text[1:].isidentifier():
        name = text[1:]
        if name not in namespace:
            raise CommandError(f"%plasma mutate: no variable named {name!r} (for {text})")
        return namespace[name]
    try:
        return json.loads(text)
    except ValueError:
        return text


def show_usage_error(original: Callable[[BaseException], None]) -> Callable[[BaseException], None]:
    """IPython's one-line error display, labelled with the error's own type."""

    def show(exc: BaseException) -> None:
        label = getattr(exc, "error_type", None)
        if label:
            print(f"{label}: {exc}", file=sys.stderr)
        else:
            original(exc)

    show.original = original  # type: ignore[attr-defined]
    return show


async def page_sync_server() -> str | None:
    """The page's origin when this kernel runs in a browser page served together with
    a sync server (``plasma-nb serve --site``); None elsewhere (local only)."""
    if sys.platform != "emscripten":
        return None
    try:
        import js
        from pyodide.http import pyfetch

        origin = str(js.location.origin)
        if not origin.startswith(("http://", "https://")):
            return None
        response = await pyfetch(f"{origin}/sync/schema")
        if not response.ok:
            return None
        described = await response.json()
    except Exception:
        # No such server beside the site (a static host): stay local only.
        return None
    if isinstance(described, dict) and described.get("pushVersion") == 1:
        return origin
    return None
