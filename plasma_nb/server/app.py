"""The server engine's Starlette app: the sync routes of DESIGN section 5.

Every answer is JSON. Malformed input gets 400 naming the field, oversized
bodies 413, transient database trouble 503 with Retry-After; the protocol's own
errors (ClientStateNotFound, VersionNotSupported) travel with HTTP 200, as
Replicache expects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from ..core.errors import (
    BadRequest,
    ClientStateNotFound,
    ConfigError,
    PayloadTooLarge,
    ProtocolError,
    ServerError,
    Unauthorized,
)
from ..core.mutators import Context, Mutators
from ..core.protocol import (
    PULL_VERSION,
    PUSH_VERSION,
    PullRequest,
    PushRequest,
    dumps,
    loads_strict,
)
from ..core.schema import Schema
from .auth import make_authenticator
from .blob_store import BlobStore, open_blob_store
from .blobs import BlobRoutes
from .compaction import Compactor
from .database import open_storage
from .gate import Gate, SyncGate, caller
from .limits import ConnectionCounter, RateLimiter
from .origins import OriginPolicy, canonical_origins
from .pokes import PokeHub
from .storage.base import Storage

__all__ = ["Limits", "create_app"]

logger = logging.getLogger("plasma_nb.server")

DEFAULT_BLOBS = "file:./plasma-blobs"


@dataclass(frozen=True)
class Limits:
    """Published in ``GET /sync/schema`` so clients can size their pushes.

    ``requests_per_second`` and ``request_burst`` are each caller's token bucket
    (429 with Retry-After past it; a caller is its user, or its address when
    anonymous; see server/limits.py); ``max_websockets_per_user`` bounds each
    caller's poke sockets. None turns either off. Tombstones older than
    ``tombstone_horizon_seconds`` are dropped every ``compaction_interval_seconds``
    (server/compaction.py).
    """

    max_body_bytes: int = 16 * 1024 * 1024
    max_blob_bytes: int = 2 * 1024 * 1024 * 1024
    max_mutations_per_push: int = 1000
    max_json_depth: int = 64
    requests_per_second: int | None = 100
    request_burst: int = 1000
    max_websockets_per_user: int | None = 100
    tombstone_horizon_seconds: int = 7 * 24 * 3600
    compaction_interval_seconds: int = 3600

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value is None and name in _OPTIONAL_LIMITS:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"limit {name} must be a positive integer, got {value!r}")


_OPTIONAL_LIMITS = frozenset({"requests_per_second", "max_websockets_per_user"})


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)


def _error(exc: ServerError) -> JSONResponse:
    headers = {}
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = exc.www_authenticate
    body = {"error": exc.error, "message": exc.message}
    body.update(getattr(exc, "details", None) or {})  # MissingBlob names its hash
    return JSONResponse(body, exc.status, headers)


# JSON may escape a lone surrogate ("\ud800"): valid JSON, but not text that UTF-8 (and so
# SQLite) can hold. Only bodies with such an escape are searched.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _refuse_surrogates(value: object, field: str) -> None:
    """Raise ProtocolError naming the first field whose text holds a lone surrogate."""
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise ProtocolError(
                field or "body", "expected valid Unicode text, got a lone surrogate"
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_surrogates(key, field)
            _refuse_surrogates(item, f"{field}.{key}" if field else key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _refuse_surrogates(item, f"{field}[{i}]")


class _Server:
    """The state behind the routes: storage, pokes, limits."""

    def __init__(self, schema: Schema, mutators: Mutators, storage: Storage,
                 limits: Limits, blob_store: BlobStore | None = None, *,
                 gate: Gate | None = None, origins: OriginPolicy | None = None) -> None:
        self.schema = schema
        self.mutators = mutators
        self.storage = storage
        self.limits = limits
        self.gate = gate or Gate(None, None)
        self.origins = origins or OriginPolicy(())
        self.sockets = ConnectionCounter(limits.max_websockets_per_user)
        self.compactor = Compactor(storage, horizon=limits.tombstone_horizon_seconds,
                                   interval=limits.compaction_interval_seconds)
        self.blobs: BlobRoutes | None = None
        if blob_store is not None:
            storage.check_blobs = True
            self.blobs = BlobRoutes(blob_store, storage, max_bytes=limits.max_blob_bytes,
                                    ready=self.ensure_open,
                                    private=self.gate.authenticator is not None)
        self.pokes = PokeHub(storage)
        self._open_lock = asyncio.Lock()
        self._opened = False

    async def ensure_open(self) -> None:
        # httpx's ASGITransport does not run lifespan events, so open on first use too.
        if self._opened:
            return
        async with self._open_lock:
            if not self._opened:
                await self.storage.open()
                self._opened = True

    async def close(self) -> None:
        await self.compactor.stop()
        await self.pokes.stop()
        # Under the lock: an opening in progress finishes, then closes, rather than
        # leaving its connections open behind a closed app.
        async with self._open_lock:
            if self._opened:
                self._opened = False
                await self.storage.close()

    def context(self, request: Request | WebSocket) -> Context:
        """The caller, as the gate (gate.py) authenticated it."""
        return caller(request)

    async def read_json(self, request: Request) -> object:
        limit = self.limits.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise PayloadTooLarge(f"the body is {length} bytes; the limit is {limit}")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the body is over the limit of {limit} bytes")
            chunks.append(chunk)
        raw = b"".join(chunks)
        body = loads_strict(raw, max_depth=self.limits.max_json_depth)
        if _SURROGATE_ESCAPE.search(raw):
            _refuse_surrogates(body, "")
        return body

    # -- routes ----------------------------------------------------------------

    async def push(self, request: Request) -> Response:
        body = await self.read_json(request)
        push = PushRequest.from_json(body)
        if push.push_version != PUSH_VERSION:
            return JSONResponse({"error": "VersionNotSupported", "versionType": "push"})
        if not self.schema.accepts(push.schema_version):
            return JSONResponse({"error": "VersionNotSupported", "versionType": "schema"})
        await self.ensure_open()
        try:
            outcome = await self.storage.push(
                push, self.context(request), limit=self.limits.max_mutations_per_push
            )
        except ClientStateNotFound:
            return JSONResponse({"error": "ClientStateNotFound"})
        if outcome.processed:
            self.pokes.notify(outcome.version)
        stopped = outcome.stopped_by
        if isinstance(stopped, ClientStateNotFound):
            return JSONResponse({"error": "ClientStateNotFound"})
        if isinstance(stopped, ServerError):
            return _error(stopped)
        return JSONResponse(outcome.response.to_json())

    async def pull(self, request: Request) -> Response:
        if request.method == "GET":
            pull = PullRequest.from_query(request.query_params)
        else:
            pull = PullRequest.from_json(await self.read_json(request))
        if pull.pull_version != PULL_VERSION:
            return JSONResponse({"error": "VersionNotSupported", "versionType": "pull"})
        if not self.schema.accepts(pull.schema_version):
            return JSONResponse({"error": "VersionNotSupported", "versionType": "schema"})
        await self.ensure_open()
        try:
            response = await self.storage.pull(pull, self.context(request))
        except ClientStateNotFound:
            return JSONResponse({"error": "ClientStateNotFound"})
        return JSONResponse(response.to_json())

    async def describe(self, request: Request) -> Response:
        await self.ensure_open()
        return JSONResponse({
            **self.schema.describe(),
            "mutators": sorted(self.mutators),
            "limits": {
                "maxBodyBytes": self.limits.max_body_bytes,
                "maxBlobBytes": self.limits.max_blob_bytes,
                "maxMutationsPerPush": self.limits.max_mutations_per_push,
                "maxJsonDepth": self.limits.max_json_depth,
                "requestsPerSecond": self.limits.requests_per_second,
                "requestBurst": self.limits.request_burst,
                "maxWebSocketsPerUser": self.limits.max_websockets_per_user,
                "tombstoneHorizonSeconds": self.limits.tombstone_horizon_seconds,
            },
            "pushVersion": PUSH_VERSION,
            "pullVersion": PULL_VERSION,
            "user": self.context(request).user,
        })

    async def healthz(self, request: Request) -> Response:
        await self.ensure_open()
        return JSONResponse({"ok": True, "version": await self.storage.version()})

    async def blob(self, request: Request) -> Response:
        if self.blobs is None:
            return JSONResponse({"error": "NotImplemented",
                                 "message": "this server has no blob store (blobs=None)"}, 501)
        return await self.blobs.handle(request)

    async def websocket(self, websocket: WebSocket) -> None:
        # Before anything else: CORS does not cover WebSockets (origins.py).
        refusal = self.origins.refusal(websocket.headers)
        if refusal is not None:
            await self.origins.refuse(websocket, refusal)
            return
        await self.ensure_open()
        admitted = await self.gate.admit_socket(websocket, self.storage, self.sockets)
        if admitted is None:
            return
        try:
            await self.pokes.serve(websocket)
        finally:
            self.sockets.release(admitted.key)


def _guard(handler: Callable[[Request], Awaitable[Response]]) -> Callable[
    [Request], Awaitable[Response]
]:
    """Turn every failure into a JSON answer: bad input never becomes a 500."""

    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except ProtocolError as exc:
            return _error(BadRequest(str(exc)))
        except ServerError as exc:
            return _error(exc)
        except ClientDisconnect:
            # The client left before its whole body arrived (it closed, or its request was
            # cancelled): nothing was done, and this answer reaches nobody.
            return Response(status_code=400)
        except Exception:
            logger.exception("unexpected error on %s %s", request.method, request.url.path)
            return JSONResponse(
                {"error": "InternalError", "message": "internal server error"}, 500
            )

    return guarded


_HTTP_ERROR_NAMES = {404: "NotFound", 405: "MethodNotAllowed"}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse(
        {"error": _HTTP_ERROR_NAMES.get(exc.status_code, "HTTPError"),
         "message": f"{request.method} {request.url.path}: {exc.detail}"},
        exc.status_code,
        exc.headers,
    )


def create_app(
    schema: Schema,
    mutators: Mutators,
    database: str = "sqlite:///plasma.db",
    blobs: str | None = DEFAULT_BLOBS,
    auth: Any = None,
    cors_origins: Sequence[str] = (),
    site_dir: str | Path | None = None,
    *,
    limits: Limits | None = None,
) -> Starlette:
    """The server engine as an ASGI app.

    ``database`` is ``sqlite:///path`` (``sqlite:///:memory:`` for a private
    in-memory database) or ``postgresql://user@host/db[?schema=NAME]`` (the
    Postgres namespace, default ``public``); ``blobs`` is ``file:DIR`` or
    ``s3://BUCKET?endpoint=URL&region=R`` (None: no blob store, and blob columns
    are not checked; docs/blobs.md); ``site_dir`` also serves a built lite site
    at ``/``. ``cors_origins`` lists the exact origins (``https://host[:port]``) of
    pages elsewhere that may call the sync routes and open the poke socket
    (server/origins.py); a page the server serves itself needs none.
    """
    if not isinstance(schema, Schema):
        raise ConfigError(f"create_app() takes a Schema first, got {schema!r}")
    if not isinstance(mutators, Mutators):
        raise ConfigError(f"create_app() takes Mutators second, got {mutators!r}")
    if mutators.schema is not schema:
        raise ConfigError("the mutators were registered for a different schema")
    authenticator = make_authenticator(auth)
    blob_store = open_blob_store(blobs) if blobs is not None else None
    if isinstance(cors_origins, str):
        raise ConfigError(f"cors_origins must be a list of origins, got {cors_origins!r}")
    cors_origins = canonical_origins(cors_origins)
    limits = limits or Limits()
    limiter = (RateLimiter(limits.requests_per_second, limits.request_burst)
               if limits.requests_per_second is not None else None)
    gate = Gate(authenticator, limiter)
    server = _Server(schema, mutators, open_storage(database, schema, mutators),
                     limits, blob_store, gate=gate, origins=OriginPolicy(cors_origins))

    routes: list[Route | WebSocketRoute | Mount] = [
        Route("/sync/push", _guard(server.push), methods=["POST"]),
        Route("/sync/pull", _guard(server.pull), methods=["GET", "POST"]),
        Route("/sync/schema", _guard(server.describe), methods=["GET"]),
        # {hash:path}: a malformed name (an encoded slash, "..") still reaches the handler,
        # which refuses it with 400 rather than the router's 404.
        Route("/sync/blob/{hash:path}", _guard(server.blob), methods=["GET", "HEAD", "PUT"]),
        Route("/healthz", _guard(server.healthz), methods=["GET"]),
        WebSocketRoute("/sync/ws", server.websocket),
    ]
    if site_dir is not None:
        path = Path(site_dir)
        if not path.is_dir():
            raise ConfigError(f"site_dir {str(path)!r} is not a directory")
        routes.append(Mount("/", StaticFiles(directory=path, html=True)))

    middleware = []
    if cors_origins:
        middleware.append(Middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST", "PUT", "HEAD"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["Retry-After", "WWW-Authenticate"],
            max_age=600,
        ))
    # Inside CORS, so that a 401 or 429 carries the CORS headers a page needs to read it.
    middleware.append(Middleware(SyncGate, gate=gate))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await server.ensure_open()
        server.pokes.start()
        server.compactor.start()
        try:
            yield
        finally:
            await server.close()

    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error},
    )
    app.state.plasma = server
    return app
