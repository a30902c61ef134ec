"""The companion server's entry: ``create_app`` with its settings from environment variables.

    PLASMA_SCHEMA=notebooks/todos.py PLASMA_DB=postgresql://... uvicorn server.main:app
    PLASMA_SCHEMA=notebooks/todos.py python -m server.main

Settings (see README.md and sqlite.env.example / postgres-r2.env.example):

    PLASMA_SCHEMA                   required: a .py file or module defining schema and mutators
    PLASMA_DB                       database URL (default sqlite:///plasma.db)
    PLASMA_BLOBS                    blob store URL: file:DIR (default file:./plasma-blobs) or
                                    s3://BUCKET?endpoint=URL&region=R (R2, S3, MinIO; the
                                    usual AWS_* variables carry the credentials)
    PLASMA_CORS_ORIGINS             browser origins allowed, separated by commas or spaces
    PLASMA_SITE_DIR                 a built lite site, served at /
    PLASMA_MAX_BODY_BYTES           limits published in GET /sync/schema
    PLASMA_MAX_MUTATIONS_PER_PUSH
    PLASMA_TOKEN_FILE               bearer tokens, one `TOKEN USER` per line (turns auth on)

and, for ``python -m server.main`` only (with ``uvicorn server.main:app`` its options decide):

    PLASMA_HOST (127.0.0.1), PLASMA_PORT (8000), PLASMA_INSECURE, PLASMA_LOG_LEVEL (info)

The app is built when ``app`` is first read, so importing this module needs no settings. A
bad setting stops the process with one line naming the variable and exit status 2.
"""

from __future__ import annotations

import asyncio
import importlib
import ipaddress
import os
import re
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette

from plasma_nb.cli import CommandError, load_schema_module, redact_url
from plasma_nb.core.errors import PlasmaError
from plasma_nb.server import Limits, TokenFile, create_app

__all__ = ["Settings", "SettingsError", "build_app", "main", "settings_from"]

DEFAULT_DB = "sqlite:///plasma.db"
DEFAULT_BLOBS = "file:./plasma-blobs"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


class SettingsError(ValueError):
    """A setting that cannot be used; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    schema: str
    db: str = DEFAULT_DB
    blobs: str = DEFAULT_BLOBS
    token_file: str | None = None
    cors_origins: tuple[str, ...] = ()
    site_dir: str | None = None
    limits: Limits = Limits()
    host: str = "127.0.0.1"
    port: int = 8000
    insecure: bool = False
    log_level: str = "info"


def _text(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _integer(env: Mapping[str, str], name: str, default: int) -> int:
    text = _text(env, name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise SettingsError(f"{name} must be a positive integer, got {text!r}") from None
    if value < 1:
        raise SettingsError(f"{name} must be a positive integer, got {text!r}")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    text = env.get(name, "").strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise SettingsError(f"{name} must be 1 or 0 (true or false), got {env[name]!r}")


def settings_from(env: Mapping[str, str]) -> Settings:
    """Read and check every PLASMA_* setting; raise ``SettingsError`` naming a bad one."""
    schema = _text(env, "PLASMA_SCHEMA")
    if schema is None:
        raise SettingsError(
            "PLASMA_SCHEMA is not set: name the .py file (or module) that defines `schema` "
            "and `mutators`, e.g. PLASMA_SCHEMA=notebooks/todos.py"
        )
    token_file = _text(env, "PLASMA_TOKEN_FILE")
    if token_file is not None and not os.path.isfile(token_file):
        raise SettingsError(f"PLASMA_TOKEN_FILE={token_file!r} is not a file")
    blobs = _text(env, "PLASMA_BLOBS") or DEFAULT_BLOBS
    if not blobs.startswith(("file:", "s3://")):
        raise SettingsError(
            f"PLASMA_BLOBS={blobs!r} is not a blob store URL: expected file:DIR or "
            "s3://BUCKET?endpoint=URL&region=R"
        )
    db = _text(env, "PLASMA_DB") or DEFAULT_DB
    if not db.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise SettingsError(
            f"PLASMA_DB={redact_url(db)!r} is not a database URL: expected sqlite:///PATH or "
            "postgresql://USER@HOST/DB"
        )
    origins = tuple(o for o in re.split(r"[,\s]+", env.get("PLASMA_CORS_ORIGINS", "")) if o)
    for origin in origins:
        if not re.fullmatch(r"https?://[^/\s]+", origin):
            raise SettingsError(
                f"PLASMA_CORS_ORIGINS: {origin!r} is not an origin (scheme://host[:port], "
                "without a path)"
            )
    site_dir = _text(env, "PLASMA_SITE_DIR")
    if site_dir is not None and not os.path.isdir(site_dir):
        raise SettingsError(f"PLASMA_SITE_DIR={site_dir!r} is not a directory")
    defaults = Limits()
    limits = Limits(
        max_body_bytes=_integer(env, "PLASMA_MAX_BODY_BYTES", defaults.max_body_bytes),
        max_mutations_per_push=_integer(
            env, "PLASMA_MAX_MUTATIONS_PER_PUSH", defaults.max_mutations_per_push
        ),
    )
    log_level = (_text(env, "PLASMA_LOG_LEVEL") or "info").lower()
    if log_level not in LOG_LEVELS:
        raise SettingsError(f"PLASMA_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, "
                            f"got {log_level!r}")
    port = _integer(env, "PLASMA_PORT", 8000)
    if port > 65535:
        raise SettingsError(f"PLASMA_PORT must be at most 65535, got {port}")
    return Settings(
        schema=schema, db=db, blobs=blobs, token_file=token_file, cors_origins=origins,
        site_dir=site_dir, limits=limits,
        host=_text(env, "PLASMA_HOST") or "127.0.0.1", port=port,
        insecure=_flag(env, "PLASMA_INSECURE"), log_level=log_level,
    )


def build_app(env: Mapping[str, str] | None = None) -> Starlette:
    """The server engine's ASGI app for the settings in ``env`` (default: ``os.environ``)."""
    settings = settings_from(os.environ if env is None else env)
    try:
        schema, mutators = load_schema_module(settings.schema)
    except CommandError as exc:
        raise SettingsError(f"PLASMA_SCHEMA: {exc}") from None
    try:
        return create_app(
            schema, mutators, database=settings.db, blobs=settings.blobs,
            auth=TokenFile(settings.token_file) if settings.token_file else None,
            cors_origins=settings.cors_origins, site_dir=settings.site_dir,
            limits=settings.limits,
        )
    except PlasmaError as exc:
        raise SettingsError(str(exc)) from None


def _fail(exc: Exception) -> SystemExit:
    print(f"plasma server: error: {exc}", file=sys.stderr, flush=True)
    return SystemExit(2)


def __getattr__(name: str) -> Any:
    # `uvicorn server.main:app` reads the attribute: build the app then, once.
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        app = build_app()
    except (SettingsError, PlasmaError) as exc:
        raise _fail(exc) from None
    globals()["app"] = app
    return app


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _check_database(app: Starlette) -> None:
    server = app.state.plasma
    try:
        await server.ensure_open()
    finally:
        await server.close()


def main(env: Mapping[str, str] | None = None) -> int:
    """``python -m server.main``: check the settings and the database, then serve."""
    import uvicorn

    env = os.environ if env is None else env
    try:
        settings = settings_from(env)
        public = not _is_loopback(settings.host)
        if public and not settings.insecure and not settings.token_file:
            raise SettingsError(
                f"refusing to listen on PLASMA_HOST={settings.host!r} without auth: anyone "
                "who can reach it could read and change every row; put a loopback address, "
                "or set PLASMA_INSECURE=1 (say, behind a proxy that authenticates)"
            )
        app = build_app(env)
        # A refused schema change is one line here, not a traceback from the startup.
        asyncio.run(_check_database(app))
    except (SettingsError, PlasmaError) as exc:
        raise _fail(exc) from None
    try:
        importlib.import_module("uvicorn.protocols.websockets.websockets_sansio_impl")
        ws = "websockets-sansio"
    except ImportError:
        ws = "auto"
    print(f"plasma server: serving {settings.schema} on http://{settings.host}:{settings.port} "
          f"(database {redact_url(settings.db)})", flush=True)
    # uvicorn stops gracefully on SIGINT and SIGTERM, then raises the signal again: make
    # that a clean exit rather than a traceback (SIGINT) or a death by signal (SIGTERM).
    signal.signal(signal.SIGTERM, lambda sig, frame: sys.exit(0))
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                    ws=ws, lifespan="on")
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
