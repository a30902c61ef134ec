"""WAL checkpoints off the event loop, for the SQLite backend.

SQLite's automatic checkpoint runs inside the ``COMMIT`` that pushes the WAL past
1,000 pages: that commit then copies the WAL into the database file and syncs it,
on the event loop thread, and every request in flight waits. Under a steady stream
of pushes that is one push in about 150 taking tens of milliseconds: the p99.

So the writer turns the automatic checkpoint off and a :class:`Checkpointer` runs
``PRAGMA wal_checkpoint(PASSIVE)`` on its own connection in a worker thread once
enough rows were written since the last one. A passive checkpoint never waits for
and never blocks the writer or the readers; whatever it could not copy (frames a
reader still needs) the next one does. The WAL file is reused from its start once
a checkpoint got through it all. Under a steady stream of pushes a checkpoint may
never get through it all (each push lands while it copies), so past
``CATCH_UP_FRAMES`` one checkpoint holds the pushes back until it has: the WAL
stays bounded, and its fsync still happens off the event loop thread.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import sys
from collections.abc import Callable

__all__ = ["CATCH_UP_FRAMES", "CHECKPOINT_ROWS", "Checkpointer"]

logger = logging.getLogger("plasma_nb.server")

#: Rows written (``total_changes``, change log and triggers included) after which a
#: checkpoint runs. A one-mutation push writes about four rows on as many pages, so
#: this is about SQLite's own 1,000-page threshold.
CHECKPOINT_ROWS = 1000
#: WAL frames past which a checkpoint holds pushes back until it has copied them all.
#: Only a steady stream of pushes, each landing while the last checkpoint ran, gets here,
#: and each time it does the pushes wait out one checkpoint (its fsync): 10,000 frames
#: (40 MB of WAL at 4 KiB pages) makes that rare enough to stay out of the p99 under a
#: thousand pushes a second and more, where 3,000 did not.
CATCH_UP_FRAMES = 10000


class Checkpointer:
    """Checkpoints the WAL of ``writer``'s database from a thread, on its own connection."""

    def __init__(self, writer: sqlite3.Connection, connect: Callable[[], sqlite3.Connection],
                 write_lock: asyncio.Lock, *, rows: int | None = None,
                 catch_up: int | None = None) -> None:
        writer.execute("PRAGMA wal_autocheckpoint = 0")
        self._writer = writer
        self._conn = connect()
        self._write_lock = write_lock
        # The module's figures as they are now, not when this was defined (tests change them).
        self._rows = CHECKPOINT_ROWS if rows is None else rows
        self._catch_up = CATCH_UP_FRAMES if catch_up is None else catch_up
        self._mark = writer.total_changes
        self._task: asyncio.Task[None] | None = None

    def after_commit(self) -> None:
        """Call after a write transaction: starts a checkpoint when one is due and none
        is running. Cheap: one attribute read in the common case."""
        if self._writer.total_changes - self._mark < self._rows:
            return
        if self._task is not None and not self._task.done():
            return
        self._mark = self._writer.total_changes
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        left = await asyncio.to_thread(self._checkpoint)
        if left >= self._catch_up:
            # Pushes kept appending while it copied: let them wait (pulls go on) while a
            # checkpoint copies everything, so that the next write can start the WAL over.
            async with self._write_lock:
                await asyncio.to_thread(self._checkpoint)

    def _checkpoint(self) -> int:
        """One passive checkpoint; the frames it found in the WAL (0 if it failed)."""
        try:
            _busy, log, _copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:  # the next one tries again; nothing is lost
            logger.warning("WAL checkpoint failed: %s", exc)
            return 0
        return int(log)

    async def close(self) -> None:
        """Wait for a running checkpoint, then close the connection; no checkpoint
        starts after this. Call it without holding the write lock (a catch-up
        checkpoint may be waiting for it)."""
        self._rows = sys.maxsize
        if self._task is not None:
            await self._task
        self._conn.close()
