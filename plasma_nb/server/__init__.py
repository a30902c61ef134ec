"""The server engine: a Starlette app that runs mutators canonically and serves
the sync protocol. Needs the ``server`` extra: ``pip install 'plasma-nb[server]'``."""

from __future__ import annotations

try:
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "plasma_nb.server needs the server extra: pip install 'plasma-nb[server]'"
    ) from exc

from .app import Limits, create_app
from .auth import TokenFile, Tokens
from .compaction import compact

__all__ = ["Limits", "TokenFile", "Tokens", "compact", "create_app"]
