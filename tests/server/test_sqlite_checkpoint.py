"""The SQLite backend checkpoints its WAL from a worker thread, never inside a push's COMMIT,
and the WAL stays about as short as SQLite's own automatic checkpoint would keep it."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from notebooks import todos as todos_module
from plasma_nb.server import create_app
from plasma_nb.server.storage.sqlite_checkpoint import CATCH_UP_FRAMES, CHECKPOINT_ROWS
from tests.server.helpers import add, http, push

PUSHES = 2000


def wal_frames(path: Path) -> int:
    """Frames in the WAL since it was last reset, as a passive checkpoint reports them."""
    with sqlite3.connect(path) as conn:
        _busy, log, _done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(log)


async def test_the_wal_is_checkpointed_off_the_push_path_and_stays_short(tmp_path: Path):
    path = tmp_path / "p.db"
    app = create_app(todos_module.schema, todos_module.mutators, database=f"sqlite:///{path}",
                     blobs=None)
    storage = app.state.plasma.storage
    async with http(app) as c:
        for i in range(PUSHES):
            await push(c, add("c1", i + 1, f"t{i}"))
            # A real server's loop turns at every request (socket I/O); the in-process
            # transport's may not, and the checkpoints run from the loop.
            await asyncio.sleep(0)
        # Each push appends about six frames: 2,000 pushes back to back, without
        # checkpoints, would leave 12,000. The catch-up checkpoints bound the WAL.
        assert wal_frames(path) < CATCH_UP_FRAMES + 2000
        # The commits themselves never checkpoint: that is the worker's job.
        assert storage._writer.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
        checkpointer = storage._checkpointer
        assert checkpointer._task is not None  # at least one ran, in a thread
        await checkpointer._task
        assert storage._writer.total_changes > 3 * CHECKPOINT_ROWS
    await app.state.plasma.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM todos").fetchone() == (PUSHES,)
