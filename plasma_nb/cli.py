"""The ``plasma-nb`` command line (DESIGN section 4)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib
import importlib.util
import ipaddress
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .core.errors import PlasmaError

__all__ = ["load_schema_module", "main"]

DEFAULT_DB = "sqlite:///plasma.db"
DEFAULT_BLOBS = "file:./plasma-blobs"
DEFAULT_GRACE = 24 * 3600  # blobs gc spares blobs newer than this (seconds)


class CommandError(Exception):
    """A problem to report in one line, with exit status 2."""


def load_schema_module(spec: str) -> tuple[Any, Any]:
    """Import SCHEMA (a .py path or a module name) and return its schema and mutators."""
    from .core.mutators import Mutators
    from .core.schema import Schema

    module: ModuleType
    if spec.endswith(".py") or "/" in spec or Path(spec).is_file():
        path = Path(spec)
        if not path.is_file():
            raise CommandError(f"schema file {spec!r} does not exist")
        name = f"_plasma_schema_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise CommandError(f"cannot import {spec!r} as a Python file")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        # The schema file may import its neighbours.
        sys.path.insert(0, str(path.resolve().parent))
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(spec)
        except ModuleNotFoundError as exc:
            raise CommandError(f"cannot import schema module {spec!r}: {exc}") from None
    schema = getattr(module, "schema", None)
    mutators = getattr(module, "mutators", None)
    if not isinstance(schema, Schema):
        raise CommandError(f"{spec} must define `schema = Schema([...])`, found {schema!r}")
    if not isinstance(mutators, Mutators):
        raise CommandError(
            f"{spec} must define `mutators = Mutators(schema)`, found {mutators!r}"
        )
    return schema, mutators


def redact_url(url: str) -> str:
    """The URL with any password replaced, fit to print."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _serve(args: argparse.Namespace) -> int:
    if args.token_file is None and not _is_loopback(args.host) and not args.insecure:
        raise CommandError(
            f"refusing to listen on {args.host!r} without auth: anyone who can reach it "
            "could read and change every row; use a loopback --host, give --token-file, "
            "or pass --insecure"
        )
    try:
        import uvicorn

        from .server import create_app
    except ImportError as exc:
        raise CommandError(
            f"the server needs its extra: pip install 'plasma-nb[server]' ({exc})"
        ) from None
    auth = None
    if args.token_file is not None:
        from .server.auth import TokenFile

        auth = TokenFile(args.token_file)  # a malformed line: ConfigError, one line, exit 2
    schema, mutators = load_schema_module(args.schema)
    app = create_app(
        schema, mutators, database=args.db, blobs=args.blobs, auth=auth,
        cors_origins=args.cors_origin or [], site_dir=args.site,
    )
    # Open the database before listening, so that a refused schema change is a one-line
    # error (exit 2) rather than a traceback from the server's startup.
    asyncio.run(_check_database(app))
    server = _uvicorn_server(uvicorn, app, args)
    print(f"plasma-nb: serving {args.schema} on http://{args.host}:{args.port} "
          f"(database {redact_url(args.db)}"
          f"{f'; tokens from {args.token_file}' if args.token_file else ''})", flush=True)
    server.run()
    return 0


async def _check_database(app: Any) -> None:
    server = app.state.plasma
    try:
        await server.ensure_open()
    finally:
        await server.close()


def _uvicorn_server(uvicorn: Any, app: Any, args: argparse.Namespace) -> Any:
    """The uvicorn server for ``app`` on ``--host`` and ``--port``, ready to run."""
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level=args.log_level, lifespan="on",
        ws="websockets-sansio" if _has_sansio() else "auto",
    )
    # Everything alive now (modules, the schema, compiled SQL) lives as long as the
    # process: out of the collector's sight, full collections stay short, and so does
    # the latency of the requests that wait for one.
    gc.freeze()
    return _quiet_server_class(uvicorn)(config)


def _quiet_server_class(uvicorn: Any) -> Any:
    class Server(uvicorn.Server):  # type: ignore[misc]
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # Ctrl-C is a clean stop: uvicorn would re-raise the signal after shutdown
            # and print a traceback.
            def handle(sig: int, frame: FrameType | None) -> None:
                self.handle_exit(sig, frame)

            previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for s, handler in previous.items():
                    signal.signal(s, handler)

    return Server


def _has_sansio() -> bool:
    try:
        importlib.import_module("uvicorn.protocols.websockets.websockets_sansio_impl")
    except ImportError:
        return False
    return True


# --- lite build and demo -----------------------------------------------------------------

DEFAULT_SITE_DIR = "_site"
DEMO_NOTEBOOK = "demo.ipynb"
DEMO_SCHEMA = "todos.py"


def _lite_build(args: argparse.Namespace) -> int:
    from .lite import LiteBuildError
    from .lite.build import build_site

    try:
        result = build_site(args.out, contents=args.contents, offline=args.offline)
    except LiteBuildError as exc:
        raise CommandError(str(exc)) from None
    kind = "offline site" if result.offline else "site"
    print(f"plasma-nb: built the {kind} in {result.out} ({result.seconds:.1f} s); "
          f"serve it with: plasma-nb serve SCHEMA --site {result.out}", flush=True)
    return 0


def _demo_home() -> Path:
    import os

    home = Path(os.environ.get("PLASMA_NB_HOME") or "~/.plasma_nb").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


def _demo_database() -> str:
    return f"sqlite:///{_demo_home() / 'demo.db'}"


def _check_port_free(host: str, port: int) -> None:
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise CommandError(f"cannot resolve --host {host!r}: {exc}") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise CommandError(f"cannot listen on {host}:{port} ({exc.strerror}): "
                               "pass another --port") from None


def _demo(args: argparse.Namespace) -> int:
    if not _is_loopback(args.host) and not args.insecure:
        raise CommandError(
            f"refusing to listen on {args.host!r}: the demo has no auth, so anyone who can "
            "reach it could read and change every row; use a loopback --host, or pass "
            "--insecure"
        )
    try:
        import uvicorn

        from .server import create_app
    except ImportError as exc:
        raise CommandError(
            f"the demo needs the server and lite extras: pip install 'plasma-nb[server,lite]' "
            f"({exc})"
        ) from None
    from .lite import LiteBuildError
    from .lite.build import demo_site
    from .lite.resources import default_contents

    _check_port_free(args.host, args.port)
    try:
        site, _ = demo_site(rebuild=args.rebuild)
        schema_file = default_contents() / DEMO_SCHEMA
    except LiteBuildError as exc:
        raise CommandError(str(exc)) from None
    schema, mutators = load_schema_module(str(schema_file))
    database = args.db or _demo_database()
    app = create_app(schema, mutators, database=database, site_dir=site,
                     blobs=f"file:{_demo_home() / 'demo-blobs'}")
    asyncio.run(_check_database(app))
    server = _uvicorn_server(uvicorn, app, args)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"plasma-nb demo: open http://{shown}:{args.port}/lab/index.html?path={DEMO_NOTEBOOK}"
          f"  (site {site}, database {database}; Ctrl-C stops)", flush=True)
    server.run()
    return 0


def _blobs_gc(args: argparse.Namespace) -> int:
    try:
        from .server.blob_gc import collect_garbage, describe
    except ImportError as exc:
        raise CommandError(
            f"blobs gc needs the server extra: pip install 'plasma-nb[server]' ({exc})"
        ) from None
    if args.grace < 0:
        raise CommandError(f"--grace must be a number of seconds >= 0, got {args.grace:g}")
    result = asyncio.run(collect_garbage(args.db, args.blobs, grace=args.grace,
                                         dry_run=args.dry_run))
    for line in describe(result, grace=args.grace):
        print(line, flush=True)
    if args.exit_at_once:
        # The work is committed and printed. Tearing down the interpreter with the object
        # store's native runtime threads still around sometimes aborts (SIGABRT) after a
        # successful run, so the command process leaves without that teardown.
        sys.stderr.flush()
        os._exit(0)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plasma-nb", description="plasma_nb: a local-first data toolkit for notebooks"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the sync server for a schema file")
    serve.add_argument("schema", metavar="SCHEMA",
                       help="a .py file or module name defining `schema` and `mutators`")
    serve.add_argument("--db", default=DEFAULT_DB, help=f"database URL (default {DEFAULT_DB})")
    serve.add_argument("--blobs", default=DEFAULT_BLOBS,
                       help=f"blob store URL (default {DEFAULT_BLOBS})")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", default=8000, type=int)
    serve.add_argument("--site", default=None, metavar="DIR",
                       help="also serve a built lite site at /")
    serve.add_argument("--token-file", default=None, metavar="F",
                       help="bearer tokens, one `TOKEN USER` per line")
    serve.add_argument("--cors-origin", action="append", metavar="URL",
                       help="allow this browser origin (repeatable)")
    serve.add_argument("--insecure", action="store_true",
                       help="allow a non-loopback --host without auth")
    serve.add_argument("--log-level", default="info",
                       choices=["critical", "error", "warning", "info", "debug"])
    serve.set_defaults(run=_serve)

    lite = sub.add_parser("lite", help="the JupyterLite site")
    lite_sub = lite.add_subparsers(dest="lite_command", required=True, metavar="COMMAND")
    build = lite_sub.add_parser(
        "build", help="build the JupyterLite site (needs the lite extra)",
        description="Build a JupyterLite site with the Pyodide kernel, the plasma_nb wheel "
        "(%pip install plasma-nb works without PyPI) and the widget extensions. "
        "See docs/browser.md.")
    build.add_argument("--out", default=DEFAULT_SITE_DIR, metavar="DIR",
                       help=f"where to write the site (default ./{DEFAULT_SITE_DIR}; "
                       "replaced when the build succeeds)")
    build.add_argument("--contents", action="append", metavar="DIR",
                       help="notebooks and files to include (repeatable; default: plasma_nb's "
                       "example notebooks)")
    build.add_argument("--offline", action="store_true",
                       help="self-host Pyodide and every package the kernel loads (needs "
                       "node and npm at build time): the site makes no request outside "
                       "its origin")
    build.set_defaults(run=_lite_build)

    demo = sub.add_parser(
        "demo", help="build the offline site if needed and serve it with a sync server",
        description="Serve the example notebooks in the browser with an embedded SQLite sync "
        "server, at one address. The site is built on first use and cached until plasma_nb "
        "or the notebooks change. See docs/demo.md.")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", default=8000, type=int)
    demo.add_argument("--db", default=None, metavar="URL",
                      help="database URL (default sqlite:///$PLASMA_NB_HOME/demo.db, "
                      "PLASMA_NB_HOME defaulting to ~/.plasma_nb)")
    demo.add_argument("--rebuild", action="store_true", help="rebuild the site first")
    demo.add_argument("--insecure", action="store_true",
                      help="allow a non-loopback --host (the demo has no auth)")
    demo.add_argument("--log-level", default="warning",
                      choices=["critical", "error", "warning", "info", "debug"])
    demo.set_defaults(run=_demo)

    blobs = sub.add_parser("blobs", help="blob maintenance")
    blobs_sub = blobs.add_subparsers(dest="blobs_command", required=True, metavar="COMMAND")
    gc = blobs_sub.add_parser(
        "gc", help="delete blobs no row references",
        description="List, then delete, the blobs that no row of the database references, "
        "sparing blobs newer than the grace period (offline clients may still reference "
        "them). Safe while the server runs. See docs/blobs.md.")
    gc.add_argument("--dry-run", action="store_true",
                    help="only list what would be deleted")
    gc.add_argument("--db", default=DEFAULT_DB, help=f"database URL (default {DEFAULT_DB})")
    gc.add_argument("--blobs", default=DEFAULT_BLOBS,
                    help=f"blob store URL (default {DEFAULT_BLOBS})")
    gc.add_argument("--grace", default=float(DEFAULT_GRACE), type=float, metavar="SECONDS",
                    help=f"spare blobs stored less than this long ago (default {DEFAULT_GRACE}, "
                    "one day)")
    gc.set_defaults(run=_blobs_gc)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Only a real command line (no argv given) may end the process itself.
    args.exit_at_once = argv is None
    try:
        return int(args.run(args))
    except (CommandError, PlasmaError) as exc:
        print(f"plasma-nb: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
