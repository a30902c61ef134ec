"""Who is calling: the ``auth=`` hook of ``create_app`` and the built-in bearer tokens.

The hook receives the bearer token of a ``/sync/*`` request (the
``Authorization: Bearer`` header, or for the poke WebSocket its ``token``
query parameter or first message) and the Starlette connection, and returns
who the caller is. It may be a plain function or a coroutine function::

    async def auth(token: str, conn: HTTPConnection) -> Context | str | None:
        claims = await verify_jwt(token)       # yours
        return Context(user=claims["sub"], claims=claims) if claims else None

It returns a ``Context`` (the user id and any claims, which read rules and
mutators see as ``ctx``), a plain string (the user id, without claims), or
None to refuse the token (401). Raising ``Unavailable`` answers 503 with
Retry-After (an identity provider that is down); any other exception is the
hook's bug: it is logged and answered 500. A request without a token never
reaches the hook: it gets 401.

Built in: a mapping of token to user id (``auth={"s3cret": "alice"}``) and
``TokenFile(path)``, the ``plasma-nb serve --token-file`` format.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeAlias

from starlette.requests import HTTPConnection

from ..core.errors import ConfigError, Unauthorized
from ..core.mutators import Context

__all__ = ["AuthHook", "Authenticator", "TokenFile", "Tokens", "bearer_token", "make_authenticator"]

logger = logging.getLogger("plasma_nb.server")

AuthResult: TypeAlias = "Context | str | None"
AuthHook: TypeAlias = Callable[[str, HTTPConnection], "AuthResult | Awaitable[AuthResult]"]


def _digest(token: str) -> bytes:
    # Look tokens up by their hash: the time a lookup takes then says nothing useful
    # about how close a guess was.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class Tokens:
    """A fixed set of bearer tokens: ``Tokens({"s3cret": "alice"})``."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self._users: dict[bytes, str] = {}
        for token, user in tokens.items():
            if not isinstance(token, str) or not token or not isinstance(user, str) or not user:
                raise ConfigError(
                    f"tokens map non-empty token strings to user ids, got {token!r}: {user!r}"
                )
            self._users[_digest(token)] = user

    def __len__(self) -> int:
        return len(self._users)

    def __call__(self, token: str, conn: HTTPConnection) -> Context | None:
        user = self._users.get(_digest(token))
        return None if user is None else Context(user=user)


def parse_token_lines(text: str, source: str) -> dict[str, str]:
    """``TOKEN USER`` lines (blank lines and ``#`` comment lines allowed) as a dict;
    a malformed line raises ConfigError naming ``source`` and the line number."""
    tokens: dict[str, str] = {}
    lines: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 2:
            raise ConfigError(
                f"{source}, line {number}: expected `TOKEN USER` (two fields separated by "
                f"spaces), got {len(fields)} field{'s' if len(fields) != 1 else ''}"
            )
        token, user = fields
        if token in lines:
            raise ConfigError(
                f"{source}, line {number}: this token is already on line {lines[token]}"
            )
        lines[token] = number
        tokens[token] = user
    return tokens


class TokenFile:
    """Bearer tokens from a file of ``TOKEN USER`` lines (``#`` comments and blank lines
    allowed). The file is read at once (a malformed line is a ConfigError naming its
    number) and read again when it changes, so tokens can be added or revoked without
    a restart; a change that does not parse is logged and the previous tokens stay."""

    #: How often, at most, the file's modification time is looked at.
    check_interval = 1.0

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._tokens = self._load()
        self._checked = time.monotonic()

    def _stat(self) -> tuple[int, int]:
        try:
            st = self.path.stat()
        except OSError as exc:
            raise ConfigError(f"cannot read the token file {str(self.path)!r}: {exc}") from None
        return st.st_mtime_ns, st.st_size

    def _load(self) -> Tokens:
        self._stamp = self._stat()
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the token file {str(self.path)!r}: {exc}") from None
        tokens = Tokens(parse_token_lines(text, str(self.path)))
        if not len(tokens):
            logger.warning("the token file %s has no tokens: every request is refused",
                           self.path)
        return tokens

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.check_interval:
            return
        self._checked = now
        try:
            if self._stat() != self._stamp:
                self._tokens = self._load()
                logger.info("reloaded the token file %s", self.path)
        except ConfigError as exc:
            logger.error("keeping the previous tokens: %s", exc)

    def __call__(self, token: str, conn: HTTPConnection) -> Context | None:
        self._refresh()
        return self._tokens(token, conn)


class Authenticator:
    """Runs the app's hook and turns its answer into a Context (or Unauthorized)."""

    def __init__(self, hook: AuthHook) -> None:
        self.hook = hook

    async def authenticate(self, token: str | None, conn: HTTPConnection) -> Context:
        if not token:
            raise Unauthorized("this server needs a bearer token (Authorization: Bearer ...)")
        result: Any = self.hook(token, conn)
        if inspect.isawaitable(result):
            result = await result
        if isinstance(result, str) and result:
            return Context(user=result)
        if isinstance(result, Context):
            if not isinstance(result.user, str) or not result.user:
                raise TypeError(
                    f"the auth hook returned {result!r}: an accepted caller needs a user id"
                )
            return result
        if result is None:
            raise Unauthorized("the bearer token was not accepted", invalid_token=True)
        raise TypeError(
            f"the auth hook must return a Context, a user id or None, got {result!r}"
        )


def make_authenticator(auth: object) -> Authenticator | None:
    """The ``auth=`` option of ``create_app``: None, a hook, a mapping or a TokenFile."""
    if auth is None:
        return None
    if isinstance(auth, Mapping):
        return Authenticator(Tokens(auth))
    if callable(auth):
        return Authenticator(auth)
    raise ConfigError(
        f"auth= takes a function (token, request) -> Context | None, a dict of token to "
        f"user id, or TokenFile(path); got {auth!r}"
    )


def bearer_token(conn: HTTPConnection) -> str | None:
    """The token of ``Authorization: Bearer TOKEN``, or None."""
    header = conn.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None
