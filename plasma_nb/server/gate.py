"""The gate in front of the ``/sync/*`` HTTP routes: who is calling, and how often.

An ASGI middleware, so that every ``/sync/*`` route (the blob routes included)
is covered without each handler remembering to ask. It authenticates the
request (401 with ``WWW-Authenticate: Bearer`` without a valid token, when the
app has auth), takes a token from the caller's rate-limit bucket (429 with
Retry-After when it is empty) and leaves the caller's ``Context`` in the scope,
where ``caller(request)`` finds it. CORS preflights and everything outside
``/sync/`` (``/healthz``, the site's pages) pass untouched. The poke WebSocket
authenticates itself (its token may come in its first message).
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass

from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketState

from ..core.errors import Forbidden, ProtocolError, ServerError, TooManyRequests, Unauthorized
from ..core.mutators import Context
from ..core.protocol import dumps, loads_strict
from .auth import Authenticator, bearer_token
from .limits import ConnectionCounter, RateLimiter, caller_key
from .storage.base import Storage

__all__ = ["ANONYMOUS", "Admitted", "Gate", "SyncGate", "caller", "error_response", "set_caller"]

logger = logging.getLogger("plasma_nb.server")

_SCOPE_KEY = "plasma_nb.context"
ANONYMOUS = Context(user=None)
#: How long a poke socket without a token in its handshake may take to send it.
AUTH_MESSAGE_TIMEOUT = 10.0


def caller(conn: HTTPConnection) -> Context:
    """The Context the gate (or the WebSocket handshake) established for ``conn``."""
    found = conn.scope.get(_SCOPE_KEY)
    return found if isinstance(found, Context) else ANONYMOUS


def set_caller(conn: HTTPConnection, ctx: Context) -> None:
    conn.scope[_SCOPE_KEY] = ctx


def error_response(exc: ServerError) -> Response:
    """The JSON answer of a ServerError, with its Retry-After or WWW-Authenticate."""
    headers = {}
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = exc.www_authenticate
    return Response(dumps({"error": exc.error, "message": exc.message}), exc.status, headers,
                    media_type="application/json")


class SyncGate:
    """ASGI middleware: runs ``gate.admit`` before every ``/sync/*`` HTTP request."""

    def __init__(self, app: ASGIApp, *, gate: Gate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or not scope["path"].startswith("/sync/")
                or scope["method"] == "OPTIONS"):
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        try:
            ctx = await self.gate.admit(conn)
        except ServerError as exc:
            await error_response(exc)(scope, receive, send)
            return
        except Exception:
            logger.exception("the auth hook failed on %s %s", scope["method"], scope["path"])
            await error_response(ServerError("internal error while authenticating"))(
                scope, receive, send)
            return
        set_caller(conn, ctx)
        await self.app(scope, receive, send)


class Gate:
    """Who may call, and how often: the app's authenticator and rate limiter."""

    def __init__(self, authenticator: Authenticator | None,
                 limiter: RateLimiter | None) -> None:
        self.authenticator = authenticator
        self.limiter = limiter

    async def admit(self, conn: HTTPConnection, token: str | None = None) -> Context:
        """Authenticate ``conn`` (with ``token``, else its Authorization header) and take
        a request from its rate limit; raise the ServerError to answer otherwise."""
        ctx = ANONYMOUS
        if self.authenticator is not None:
            ctx = await self.authenticator.authenticate(token or bearer_token(conn), conn)
        if self.limiter is not None:
            key = caller_key(conn, ctx, authenticated=self.authenticator is not None)
            if key is not None:
                wait = self.limiter.take(key)
                if wait is not None:
                    raise TooManyRequests(
                        f"too many requests; try again in {wait:.1f} s", retry_after=wait
                    )
        return ctx

    async def admit_socket(
        self, websocket: WebSocket, storage: Storage, counter: ConnectionCounter
    ) -> Admitted | None:
        """Authenticate a poke socket, check its client group's owner and the caller's
        socket count. None: the socket was refused (and closed) with a reason."""
        group_id = websocket.query_params.get("clientGroupID", "")
        if not group_id:
            await websocket.close(code=1008, reason="clientGroupID is required")
            return None
        token = websocket.query_params.get("token") or bearer_token(websocket)
        if self.authenticator is not None and not token:
            # No token in the handshake: it comes in the first message.
            await websocket.accept()
            token = await _first_message_token(websocket)
            if token is None:
                if websocket.client_state is not WebSocketState.DISCONNECTED:
                    await websocket.close(
                        code=1008, reason='expected {"type": "auth", "token": ...} first'
                    )
                return None
        try:
            ctx = await self.admit(websocket, token)
            exists, owner = await storage.group_owner(group_id)
            if exists and owner != ctx.user:
                raise Forbidden(f"client group {group_id!r} belongs to another user")
        except ServerError as exc:
            await _refuse(websocket, exc)
            return None
        except Exception:
            logger.exception("admitting a poke socket failed")
            await _refuse(websocket, ServerError("internal error while authenticating"))
            return None
        key = caller_key(websocket, ctx, authenticated=self.authenticator is not None)
        if not counter.acquire(key):
            if websocket.client_state is WebSocketState.CONNECTING:
                await websocket.accept()
            await websocket.close(
                code=1008, reason=f"too many poke sockets for this caller (limit {counter.limit})"
            )
            return None
        set_caller(websocket, ctx)
        return Admitted(ctx, key)


@dataclass(frozen=True)
class Admitted:
    ctx: Context
    key: str | None  # what the socket counts against


async def _first_message_token(websocket: WebSocket) -> str | None:
    try:
        async with asyncio.timeout(AUTH_MESSAGE_TIMEOUT):
            message = await websocket.receive()
    except TimeoutError:
        return None
    text = message.get("text")
    if message["type"] != "websocket.receive" or not isinstance(text, str):
        return None
    try:
        body = loads_strict(text.encode("utf-8", "surrogatepass"), max_depth=4)
    except (ProtocolError, UnicodeEncodeError):
        return None
    if not isinstance(body, dict) or body.get("type") != "auth":
        return None
    token = body.get("token")
    return token if isinstance(token, str) and token else None


async def _refuse(websocket: WebSocket, exc: ServerError) -> None:
    """Refuse a socket: before the handshake completes, with the HTTP error itself where
    the server can send one (else the handshake fails, a 403); after it, close 1008."""
    # 1013: try again later; 1011: the server failed.
    code = 1013 if exc.status in (429, 503) else 1011 if exc.status >= 500 else 1008
    if websocket.client_state is WebSocketState.CONNECTING:
        if "websocket.http.response" in websocket.scope.get("extensions", {}):
            await websocket.send_denial_response(error_response(exc))
            return
    # A close reason is at most 123 bytes of UTF-8.
    reason = f"{exc.error}: {exc.message}".encode()[:123].decode("utf-8", "ignore")
    await websocket.close(code=code, reason=reason)
