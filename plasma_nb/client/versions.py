"""What a client tells its user when the server refuses its versions (VersionNotSupported).

Retrying cannot help: the engine stops syncing, and the message says why and what
to do. Local work is kept: the outbox stays, and a client opened on the same
database with a schema the server accepts pushes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..core.errors import VersionNotSupported

__all__ = ["explain"]


def explain(exc: VersionNotSupported, *, schema_version: str,
            server: Mapping[str, Any] | None) -> VersionNotSupported:
    """``exc`` with a message that says what this client needs."""
    kept = ("Sync has stopped; pending mutations stay in the local outbox and are pushed by "
            "the first client that opens this database with a schema the server accepts.")
    if exc.version_type == "schema":
        served = ""
        if server is not None and isinstance(server.get("version"), str):
            accepted = [server["version"], *[v for v in server.get("compatible") or ()
                                             if isinstance(v, str)]]
            served = (f" (it serves version {server['version']!r} and accepts "
                      f"{', '.join(repr(v) for v in accepted)})")
        message = (f"this client needs the new schema: the server no longer accepts schema "
                   f"version {schema_version!r}{served}. Load the app's new schema module "
                   f"(update the notebook's code) and connect again. {kept}")
    else:
        message = (f"this client needs a newer plasma_nb: the server does not speak its "
                   f"{exc.version_type} protocol version. Upgrade plasma_nb and connect "
                   f"again. {kept}")
    explained = VersionNotSupported(exc.version_type, message)
    explained.__cause__ = exc
    return explained
