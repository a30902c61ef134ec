"""The client engine: the local replica, the durable outbox and the sync loop.

``await plasma_nb.connect(url, schema=..., mutators=...)`` returns a ``Client``.
Pure Python and async-first; the same engine runs in CPython (SQLite file,
httpx, a background loop thread) and in Pyodide (IndexedDB, fetch, the page's
loop). See docs/client.md.
"""

from __future__ import annotations

from .change import Change
from .client import Client, connect
from .handle import MutationHandle
from .live import LiveChange, LiveQuery
from .status import Status
from .storage import MemoryStorage, SQLiteStorage, Storage

__all__ = [
    "Change",
    "Client",
    "LiveChange",
    "LiveQuery",
    "MemoryStorage",
    "MutationHandle",
    "SQLiteStorage",
    "Status",
    "Storage",
    "connect",
]
