"""Every exception plasma_nb raises, in one place.

The hierarchy::

    PlasmaError
    ├── SchemaError            a table, column or schema declaration is invalid
    ├── ConfigError            an option (database URL, limit, path) is invalid
    ├── NotSupportedYet        an option of the design that is not built yet
    ├── MissingDependency      an optional package (pandas, ...) is not installed
    ├── QueryError             a query or expression cannot be built or compiled
    ├── MutationError          a mutator rejected its mutation (the message is the user's)
    ├── MutatorError           a mutator is misdeclared or misbehaves (duplicate name,
    │   │                      unknown name, bad arguments, awaits something but ``tx``)
    │   └── UnknownMutator
    ├── ProtocolError          a sync message is malformed; ``.field`` names the culprit
    ├── StorageError           the local replica or outbox cannot be read or written
    │   └── StorageClosed
    ├── SyncError              the server answered something the client cannot use
    │   ├── ClientStateNotFound
    │   ├── VersionNotSupported
    │   └── AccessDenied       the server refused this client's token (401) or group (403)
    └── ServerError            an HTTP-mapped error inside the server; ``.status``
        ├── BadRequest          400
        ├── Unauthorized        401 (no valid bearer token; sent with WWW-Authenticate)
        ├── Forbidden           403
        ├── Conflict            409
        ├── PayloadTooLarge     413
        ├── TooManyRequests     429 (rate limited: retry after ``.retry_after`` seconds)
        └── Unavailable         503 (transient: retry after ``.retry_after`` seconds)

``MutationError`` is the one users raise themselves; everything else is raised by
plasma_nb. Messages name the offending value and what was expected.
"""

from __future__ import annotations

__all__ = [
    "AccessDenied",
    "BadRequest",
    "ClientStateNotFound",
    "ConfigError",
    "Conflict",
    "Forbidden",
    "MissingDependency",
    "MutationError",
    "MutatorError",
    "NotSupportedYet",
    "PayloadTooLarge",
    "PlasmaError",
    "ProtocolError",
    "QueryError",
    "SchemaError",
    "ServerError",
    "StorageClosed",
    "StorageError",
    "SyncError",
    "TooManyRequests",
    "Unauthorized",
    "Unavailable",
    "UnknownMutator",
    "VersionNotSupported",
]


class PlasmaError(Exception):
    """Base class of every plasma_nb error."""


class SchemaError(PlasmaError, ValueError):
    """A table, column or schema declaration is invalid."""


class ConfigError(PlasmaError, ValueError):
    """An option (database URL, limit, path, ...) is invalid."""


class NotSupportedYet(PlasmaError, NotImplementedError):
    """An option that is part of the design but not built yet.

    Raised instead of accepting and ignoring the option.
    """

    def __init__(self, option: str, detail: str = "") -> None:
        self.option = option
        message = f"{option} is not supported yet"
        if detail:
            message += f": {detail}"
        super().__init__(message)


class MissingDependency(PlasmaError, ImportError):
    """An optional package that a feature needs is not installed; the message says how
    to install it. Subclasses ImportError, which callers of optional features catch."""

    def __init__(self, package: str, feature: str, hint: str = "") -> None:
        self.package = package
        self.feature = feature
        message = f"{feature} needs {package}, which is not installed: pip install {package}"
        if hint:
            message += f" ({hint})"
        super().__init__(message, name=package)


class QueryError(PlasmaError, ValueError):
    """A query or expression cannot be built or compiled."""


class MutationError(PlasmaError):
    """Raised by a mutator to reject its mutation; the message reaches the user."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)

    def __repr__(self) -> str:
        return f"MutationError({self.message!r})"


class MutatorError(PlasmaError):
    """A mutator is misdeclared, called with bad arguments, or misbehaves."""


class UnknownMutator(MutatorError, AttributeError):
    def __init__(self, name: str, known: list[str] | None = None) -> None:
        message = f"no mutator named {name!r}"
        if known is not None:
            message += f"; registered: {', '.join(sorted(known)) or '(none)'}"
        super().__init__(message)
        # After super().__init__: AttributeError.__init__ resets .name to None.
        self.name = name


class ProtocolError(PlasmaError, ValueError):
    """A sync message does not have the shape the protocol requires."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


class StorageError(PlasmaError):
    """The local replica or outbox cannot be read or written."""


class StorageClosed(StorageError, RuntimeError):
    """The storage (or the client that owns it) was closed."""


class SyncError(PlasmaError):
    """The server answered something the client cannot use."""


class ClientStateNotFound(SyncError):
    """The server does not know this client group or client (it was wiped or compacted)."""


class VersionNotSupported(SyncError):
    def __init__(self, version_type: str, message: str = "") -> None:
        self.version_type = version_type
        super().__init__(message or f"the server does not support this {version_type} version")


class AccessDenied(SyncError):
    """The server refused this client: no valid token (401), or the client group or
    client id belongs to another user (403). Retrying with the same token cannot help."""

    def __init__(self, message: str, status: int) -> None:
        self.status = status
        super().__init__(message)


class ServerError(PlasmaError):
    """An error inside the server that maps to an HTTP status."""

    status = 500
    error = "InternalError"

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class BadRequest(ServerError):
    status = 400
    error = "BadRequest"


class Unauthorized(ServerError):
    """No valid bearer token. ``www_authenticate`` is the challenge sent back
    (RFC 6750): ``error="invalid_token"`` when a token was given but refused."""

    status = 401
    error = "Unauthorized"

    def __init__(self, message: str, *, invalid_token: bool = False) -> None:
        super().__init__(message)
        self.www_authenticate = (
            'Bearer realm="plasma_nb", error="invalid_token"' if invalid_token
            else 'Bearer realm="plasma_nb"'
        )


class Forbidden(ServerError):
    status = 403
    error = "Forbidden"


class Conflict(ServerError):
    status = 409
    error = "Conflict"


class PayloadTooLarge(ServerError):
    status = 413
    error = "PayloadTooLarge"


class TooManyRequests(ServerError):
    status = 429
    error = "TooManyRequests"

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class Unavailable(ServerError):
    status = 503
    error = "Unavailable"

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        self.retry_after = retry_after
        super().__init__(message)
