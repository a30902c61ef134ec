"""The ``plasma-nb`` command line (DESIGN section 4)."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import ipaddress
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

from .core.errors import PlasmaError

__all__ = ["load_schema_module", "main"]

DEFAULT_DB = "sqlite:///plasma.db"
DEFAULT_BLOBS = "file:./plasma-blobs"


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


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _serve(args: argparse.Namespace) -> int:
    if args.token_file is not None:
        raise CommandError("--token-file is not supported yet (auth arrives with its issue)")
    if args.blobs != DEFAULT_BLOBS:
        raise CommandError("--blobs is not supported yet (blob storage arrives with its issue)")
    if not _is_loopback(args.host) and not args.insecure:
        raise CommandError(
            f"refusing to listen on {args.host!r} without auth: anyone who can reach it "
            "could read and change every row; use a loopback --host, or pass --insecure"
        )
    try:
        import uvicorn

        from .server import create_app
    except ImportError as exc:
        raise CommandError(
            f"the server needs its extra: pip install 'plasma-nb[server]' ({exc})"
        ) from None
    schema, mutators = load_schema_module(args.schema)
    app = create_app(
        schema, mutators, database=args.db, cors_origins=args.cors_origin or [],
        site_dir=args.site,
    )
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level=args.log_level, lifespan="on",
        ws="websockets-sansio" if _has_sansio() else "auto",
    )
    server = _quiet_server_class(uvicorn)(config)
    print(f"plasma-nb: serving {args.schema} on http://{args.host}:{args.port} "
          f"(database {args.db})", flush=True)
    server.run()
    return 0


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


def _not_yet(what: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        raise CommandError(f"`plasma-nb {what}` is not supported yet")

    return run


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
    build = lite_sub.add_parser("build", help="build the JupyterLite site")
    build.add_argument("--out", default=None)
    build.add_argument("--contents", default=None)
    build.add_argument("--offline", action="store_true")
    build.set_defaults(run=_not_yet("lite build"))

    demo = sub.add_parser("demo", help="build the site and serve it with a sync server")
    demo.set_defaults(run=_not_yet("demo"))

    blobs = sub.add_parser("blobs", help="blob maintenance")
    blobs_sub = blobs.add_subparsers(dest="blobs_command", required=True, metavar="COMMAND")
    gc = blobs_sub.add_parser("gc", help="delete blobs no row references")
    gc.add_argument("--dry-run", action="store_true")
    gc.set_defaults(run=_not_yet("blobs gc"))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except (CommandError, PlasmaError) as exc:
        print(f"plasma-nb: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
