"""Which browser origins may use the server: ``cors_origins``, for fetch and for pokes.

CORS protects fetch only. A browser opens a WebSocket to any server from any page
and merely tells the server the page's origin, so the poke socket checks the
``Origin`` header itself, against the same list plus the server's own origin (a
site it serves with ``--site``). A handshake without ``Origin`` does not come from
a web page (the CPython client, curl): no page could have forged it, and it passes.

Origins are compared in canonical form: lower case, without the scheme's default
port, as browsers send them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from starlette.websockets import WebSocket, WebSocketState

from ..core.errors import ConfigError, Forbidden
from .gate import error_response

__all__ = ["OriginPolicy", "canonical_origins"]

_ORIGIN = re.compile(r"(https?)://([^/?#\s@]+)", re.IGNORECASE)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _split(scheme: str, netloc: str) -> tuple[str, int] | None:
    """(host, port) of ``netloc``, the scheme's default port when it names none."""
    try:
        parts = urlsplit(f"{scheme}://{netloc}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname.lower(), port if port is not None else _DEFAULT_PORTS[scheme]


def _canonical(origin: str) -> str | None:
    match = _ORIGIN.fullmatch(origin.strip())
    if match is None:
        return None
    scheme = match.group(1).lower()
    split = _split(scheme, match.group(2))
    if split is None:
        return None
    host, port = split
    if ":" in host:
        host = f"[{host}]"  # IPv6
    return f"{scheme}://{host}" if port == _DEFAULT_PORTS[scheme] else f"{scheme}://{host}:{port}"


def canonical_origins(origins: Iterable[str]) -> tuple[str, ...]:
    """Each origin in canonical form; ``ConfigError`` naming the first that is not one."""
    out = []
    for origin in origins:
        canonical = _canonical(origin) if isinstance(origin, str) else None
        if canonical is None:
            hint = ""
            bare = _ORIGIN.match(origin.strip()) if isinstance(origin, str) else None
            if bare is not None and origin.strip()[bare.end():].startswith("/"):
                fixed = _canonical(bare.group(0))
                hint = f": did you mean {fixed!r}?" if fixed else ""
            raise ConfigError(
                f"cors_origins (--cors-origin): {origin!r} is not an origin (expected "
                f"scheme://host[:port] with scheme http or https, and no path){hint}"
            )
        out.append(canonical)
    return tuple(dict.fromkeys(out))


class OriginPolicy:
    """The origins allowed to open the poke socket."""

    def __init__(self, origins: Iterable[str]) -> None:
        self.allowed = frozenset(canonical_origins(origins))

    def refusal(self, headers: Mapping[str, str]) -> str | None:
        """Why a handshake with these headers is refused, or None when it may proceed."""
        origin = headers.get("origin")
        if origin is None:
            return None
        canonical = _canonical(origin)
        if canonical is None:  # "null" (a sandboxed or file: page), another scheme
            return (f"origin {origin!r} may not open the poke socket: only http(s) origins "
                    "can be allowed (--cors-origin)")
        if canonical in self.allowed or self._own(canonical, headers):
            return None
        return (f"origin {origin!r} may not open the poke socket: start the server with "
                f"--cors-origin {canonical} (cors_origins) to allow it")

    @staticmethod
    def _own(origin: str, headers: Mapping[str, str]) -> bool:
        # The page came from this server (--site) when its origin names the host the
        # request was sent to. A proxy may rewrite Host; it says so in X-Forwarded-Host,
        # which a page cannot set on a WebSocket handshake.
        scheme, _, netloc = origin.partition("://")
        page = _split(scheme, netloc)
        for name in ("host", "x-forwarded-host"):
            value = headers.get(name)
            if value and _split(scheme, value.split(",")[0].strip()) == page:
                return True
        return False

    async def refuse(self, websocket: WebSocket, reason: str) -> None:
        """Refuse the handshake: a 403 with the reason where the server can send one,
        else a close with 1008 (which also fails the handshake)."""
        if (websocket.client_state is WebSocketState.CONNECTING
                and "websocket.http.response" in websocket.scope.get("extensions", {})):
            await websocket.send_denial_response(error_response(Forbidden(reason)))
            return
        # A close reason is at most 123 bytes of UTF-8.
        await websocket.close(code=1008,
                              reason=reason.encode()[:123].decode("utf-8", "ignore"))
