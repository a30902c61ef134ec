"""plasma_nb: a local-first data toolkit for notebooks.

Declare tables and mutators once; the client engine applies mutations locally at
once and a sync loop carries them to the server engine, which runs the same
mutators canonically. See the docs/ pages for each concept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .core.errors import (
    AccessDenied,
    ClientStateNotFound,
    MutationError,
    MutatorError,
    NotSupportedYet,
    PlasmaError,
    ProtocolError,
    QueryError,
    SchemaError,
    StorageError,
    SyncError,
    VersionNotSupported,
)
from .core.expr import and_, eq, ge, gt, le, lt, ne, not_, or_
from .core.ids import new_id
from .core.mutators import Context, Mutators
from .core.query import select
from .core.rules import ctx
from .core.schema import Schema, Table, col, table

if TYPE_CHECKING:
    from .client import Client, connect

__version__ = "0.1.0.dev0"

__all__ = [
    "Client",
    "AccessDenied",
    "ClientStateNotFound",
    "Context",
    "MutationError",
    "MutatorError",
    "Mutators",
    "NotSupportedYet",
    "PlasmaError",
    "ProtocolError",
    "QueryError",
    "Schema",
    "SchemaError",
    "StorageError",
    "SyncError",
    "Table",
    "VersionNotSupported",
    "__version__",
    "and_",
    "col",
    "connect",
    "ctx",
    "eq",
    "ge",
    "gt",
    "le",
    "lt",
    "ne",
    "new_id",
    "not_",
    "or_",
    "select",
    "table",
]


def __getattr__(name: str) -> Any:
    # The client engine (and its transports) load only when first used.
    if name in ("connect", "Client"):
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'plasma_nb' has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext plasma_nb``."""
    from .notebook import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext plasma_nb`` (and ``%reload_ext``)."""
    from .notebook import unload_ipython_extension as unload

    unload(ipython)
