"""The SQLite backend checkpoints its WAL from a worker thread, never inside a push's COMMIT,
and the WAL stays bounded."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from notebooks import todos as todos_module
from plasma_nb.server import create_app
from plasma_nb.server.storage import sqlite_checkpoint
from plasma_nb.server.storage.sqlite_checkpoint import CHECKPOINT_ROWS
from tests.server.helpers import add, http, push

PUSHES = 2000
#: A bound that 2,000 pushes, one at a time and unchecked, would pass three times over.
CATCH_UP = 3000


def wal_frames(path: Path) -> int:
    """Frames in the WAL since it was last reset, as a passive checkpoint reports them."""
    with sqlite3.connect(path) as conn:
        _busy, log, _done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(log)


async def test_the_wal_is_checkpointed_off_the_push_path_and_stays_short(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sqlite_checkpoint, "CATCH_UP_FRAMES", CATCH_UP)
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
        # checkpoints, would leave 12,000.
        assert wal_frames(path) < CATCH_UP + 2000
        # The commits themselves never checkpoint: that is the worker's job.
        assert storage._writer.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
        checkpointer = storage._checkpointer
        assert checkpointer._task is not None  # at least one ran, in a thread
        await checkpointer._task
        assert storage._writer.total_changes > 3 * CHECKPOINT_ROWS
    await app.state.plasma.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM todos").fetchone() == (PUSHES,)


async def test_past_the_catch_up_bound_a_checkpoint_holds_writes_back_and_the_wal_restarts(
        tmp_path: Path):
    path = tmp_path / "c.db"

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    writer = connect()
    writer.execute("PRAGMA journal_mode = WAL")
    writer.execute("CREATE TABLE t (x TEXT)")
    lock = asyncio.Lock()
    checkpointer = sqlite_checkpoint.Checkpointer(writer, connect, lock, rows=1, catch_up=1)
    for i in range(200):
        writer.execute("INSERT INTO t VALUES (?)", (f"row {i}" * 20,))
    before = wal_frames(path)
    await lock.acquire()  # a push under way
    checkpointer.after_commit()
    await asyncio.sleep(0.3)
    # The passive checkpoint ran; past the bound, the second one waits for the lock.
    assert checkpointer._task is not None and not checkpointer._task.done()
    lock.release()
    await asyncio.wait_for(checkpointer._task, 10)
    # Everything was copied while nothing wrote: the next write starts the WAL over.
    writer.execute("INSERT INTO t VALUES ('after')")
    assert wal_frames(path) < before // 10
    await checkpointer.close()
    writer.close()
