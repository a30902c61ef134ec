"""Compaction: drop tombstones older than a horizon, so the change log stays bounded.

The change log keeps one entry per row, and a deleted row's entry (its
tombstone) would stay forever. Compaction drops the tombstones (and, for tables
with a read rule, the prior images) at or below the version the database had
``tombstone_horizon_seconds`` ago, and raises ``min_version`` to the newest
version it dropped. A client whose cookie is older then gets ``clear`` and a full
snapshot: it cannot miss a deletion. Clients with newer cookies are unaffected.

Versions are counters, not times: each compaction run records a checkpoint (the
time and the current version), and the horizon is the newest checkpoint at least
that old. The server runs compaction every ``compaction_interval_seconds``
(``Limits``); operators can run it at once with ``compact(app)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from .storage.base import Compacted, Storage

if TYPE_CHECKING:
    from starlette.applications import Starlette

__all__ = ["Compacted", "Compactor", "compact"]

logger = logging.getLogger("plasma_nb.server")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Compactor:
    """Runs ``storage.compact`` every ``interval`` seconds in the background."""

    def __init__(self, storage: Storage, *, horizon: float, interval: float) -> None:
        self.storage = storage
        self.horizon = horizon
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run_once(self) -> Compacted:
        done = await self.storage.compact(int(self.horizon * 1000), _now_ms())
        if done.tombstones:
            logger.info("compaction dropped %d tombstones; cookies older than %d now get "
                        "a full snapshot", done.tombstones, done.min_version)
        return done

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.run_once()
            except Exception:
                logger.exception("compaction failed; trying again in %.0f s", self.interval)


async def compact(app: Starlette | Any, *, horizon: float | None = None) -> Compacted:
    """Compact ``app``'s database now: drop tombstones older than ``horizon`` seconds
    (default: the app's ``Limits.tombstone_horizon_seconds``; 0 drops every one).

    For operators::

        app = create_app(schema, mutators, database="postgresql://...")
        done = await compact(app, horizon=0)
        await app.state.plasma.close()
    """
    server = app.state.plasma
    await server.ensure_open()
    if horizon is None:
        horizon = float(server.limits.tombstone_horizon_seconds)
    if horizon < 0:
        raise ValueError(f"horizon must be 0 or more seconds, got {horizon!r}")
    done: Compacted = await server.storage.compact(int(horizon * 1000), _now_ms())
    return done
