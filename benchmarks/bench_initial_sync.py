"""Initial sync: a fresh CPython client against a server that holds 100,000 rows.

The server is ``plasma_nb`` on the embedded SQLite backend under uvicorn, in a process of
its own (``benchmarks.servers``); the rows were written by operator SQL before it started.

- subject: ``plasma_nb.connect()`` with a new SQLite replica file (new client group), then
  ``sync()``: the schema request, one pull (``clear`` and 100,000 ``put``s), the replica's
  commit; until the replica holds every row;
- anchor: the same pull by hand (``benchmarks.loadgen``'s raw HTTP/1.1 client, a new client
  group), ``json.loads``, and an ``executemany`` into a new SQLite file set up like a
  replica (WAL, ``synchronous=FULL``), one transaction.

A report, not a bar. Memory is measured once, after the timed runs, in fresh processes
(``python -m benchmarks.bench_initial_sync measure subject|anchor URL FILE``): the resident
set before connecting, its peak during the sync and what stays afterwards (the client still
open), per row. The
client there runs its engine on a background thread, as a notebook does, while the main
thread polls ``client.status()`` to see what a user could be shown during the pull.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import Context, Details, Side, benchmark, report_only
from benchmarks.items import INSERT, items, row, schema
from benchmarks.loadgen import Connection
from benchmarks.servers import ROOT, ServerProcess, serve
from plasma_nb import Mutators
from plasma_nb.core.dialect import SQLiteDialect

ROWS = 100_000

mutators = Mutators(schema)


async def _seed(db: Path) -> None:
    """The server's tables (made by the storage itself), then 100k rows of operator SQL."""
    from plasma_nb.server.storage.sqlite import SQLiteStorage

    storage = SQLiteStorage(str(db), schema, mutators)
    await storage.open()
    await storage.close()
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN")
        conn.executemany(INSERT, (row(i) for i in range(ROWS)))
        conn.execute("COMMIT")
    finally:
        conn.close()


# -- the two sides ----------------------------------------------------------------------------


async def raw_initial_sync(port: int, path: Path, group: str) -> tuple[int, int]:
    """The anchor: pull everything by hand and store it; returns the rows stored and the
    response's size in bytes."""
    connection = Connection("127.0.0.1", port)
    try:
        body = json.dumps({"pullVersion": 1, "clientGroupID": group, "cookie": None,
                           "profileID": "bench", "schemaVersion": "1"}).encode()
        response = await connection.request("POST", "/sync/pull", body)
    finally:
        await connection.close()
    if response.status != 200:
        raise AssertionError(f"pull answered {response.status}: {response.body[:300]!r}")
    answer = json.loads(response.body)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(SQLiteDialect().create_table_sql(items))
        conn.execute("BEGIN IMMEDIATE")
        rows = []
        for op in answer["patch"]:
            if op["op"] == "put":
                v = op["value"]
                tags = v["tags"]
                rows.append((v["id"], v["title"], v["done"], v["priority"], v["estimate"],
                             v["owner"], None if tags is None else json.dumps(tags)))
        conn.executemany(INSERT, rows)
        conn.execute("CREATE TABLE cookie (value INTEGER)")
        conn.execute("INSERT INTO cookie VALUES (?)", (answer["cookie"],))
        conn.execute("COMMIT")
        (count,) = conn.execute("SELECT count(*) FROM items").fetchone()
    finally:
        conn.close()
    return int(count), len(response.body)


async def fresh_client(url: str, path: Path, *, thread: bool = False) -> Any:
    """A client with a new replica file (so a new client group), not yet synced."""
    from plasma_nb.client import SQLiteStorage, connect

    return await connect(url, schema=schema, mutators=mutators, name=path.stem,
                         storage=SQLiteStorage(path=path), thread=thread, pokes=False,
                         pull_interval=3600)


def _count(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM items").fetchone()[0])
    finally:
        conn.close()


@benchmark(bar=report_only())
async def initial_sync_100k() -> Context:
    """A fresh CPython client's initial sync of 100k rows from uvicorn (SQLite) vs the same
    pull by hand stored with raw sqlite3; memory per replica row in fresh processes."""
    tmp = tempfile.TemporaryDirectory(prefix="plasma-bench-initial-")
    directory = Path(tmp.name)
    db = directory / "server.db"
    await _seed(db)
    server = ServerProcess(__name__, "plasma", f"sqlite:///{db}")
    try:
        await server.ready()
    except BaseException:
        server.stop()
        tmp.cleanup()
        raise
    runs = [0]

    def fresh(side: str) -> Path:
        return directory / f"{side}-{runs[0]}.db"

    response_bytes = [0]

    async def anchor() -> None:
        _, response_bytes[0] = await raw_initial_sync(server.port, fresh("anchor"),
                                                       f"raw-{runs[0]}")

    async def subject() -> None:
        client = await fresh_client(server.url, fresh("subject"))
        await client.sync()
        await client.close()

    def after_run(side: Side) -> None:
        path = fresh(side)
        count = _count(path)
        if count != ROWS:
            raise AssertionError(f"{side}: {count} rows, expected {ROWS}")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        runs[0] += 1

    def details() -> Details:
        subject = _measure_in_process("subject", server.url, directory / "measured-subject.db")
        anchor = _measure_in_process("anchor", server.url, directory / "measured-anchor.db")
        figures: dict[str, float | int | str | bool | None] = {
            "rows": ROWS, "pull response bytes": response_bytes[0]}
        for side, m in (("subject", subject), ("anchor", anchor)):
            figures[f"{side}: seconds in a fresh process"] = round(m["seconds"], 2)
            figures[f"{side}: peak RSS growth, bytes per row"] = round(
                (m["peak_kib"] - m["before_kib"]) * 1024 / ROWS)
            figures[f"{side}: RSS kept after the sync (client open), bytes per row"] = round(
                (m["after_kib"] - m["before_kib"]) * 1024 / ROWS)
            figures[f"{side}: replica file, bytes per row"] = round(m["file_bytes"] / ROWS)
        figures["subject: server RSS MiB after the runs"] = round((server.rss_kib() or 0) / 1024)
        progress = subject.get("progress") or []
        figures["subject: progress updates seen (status().pulling, polled every 50 ms)"] = len(
            progress)
        shown = progress if len(progress) <= 4 else [*progress[:2], "...", *progress[-2:]]
        notes = [
            "What a progress bar shows during the sync (client.status().pulling, polled every "
            f"50 ms from the main thread): {'; '.join(shown) or 'nothing'}.",
        ]
        return Details(figures=figures, notes=notes)

    async def close() -> None:
        server.stop()
        tmp.cleanup()

    return Context(anchor=anchor, subject=subject, after_run=after_run, details=details,
                   close=close)


def _measure_in_process(side: str, url: str, path: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", __name__, "measure", side, url, str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if done.returncode != 0:
        raise RuntimeError(f"measuring {side} failed: {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# -- in a fresh process -------------------------------------------------------------------------


def _proc_status(field: str) -> int:
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _measure(side: str, url: str, path: Path) -> dict[str, Any]:
    import plasma_nb.client  # noqa: F401 (imported before the baseline, as a notebook would)

    gc.collect()
    before = _proc_status("VmRSS")
    progress: list[str] = []  # what status().pulling said, each change once, in order
    start = time.perf_counter()
    if side == "subject":
        # The engine on its own thread (the notebook's default); sync() is awaited on
        # another thread while this one polls the status, as a widget would.
        client = asyncio.run(fresh_client(url, path, thread=True))
        failure: list[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(client.sync())
            except BaseException as exc:
                failure.append(exc)

        worker = threading.Thread(target=run)
        worker.start()
        while worker.is_alive():
            s = client.status()
            said = s.pulling.describe() if s.pulling is not None else None
            if said is not None and (not progress or progress[-1] != said):
                progress.append(said)
            time.sleep(0.05)
        if failure:
            raise failure[0]
        seconds = time.perf_counter() - start
        gc.collect()
        after = _proc_status("VmRSS")  # the client still open, as in a notebook
        asyncio.run(client.close())
    else:
        port = int(url.rsplit(":", 1)[1])
        asyncio.run(raw_initial_sync(port, path, f"measure-{os.getpid()}"))
        seconds = time.perf_counter() - start
        gc.collect()
        after = _proc_status("VmRSS")
    peak = _proc_status("VmHWM")
    assert _count(path) == ROWS
    size = sum(p.stat().st_size for p in path.parent.glob(f"{path.name}*"))
    return {"side": side, "seconds": seconds, "before_kib": before, "after_kib": after,
            "peak_kib": peak, "file_bytes": size, "progress": progress}


if __name__ == "__main__":
    if sys.argv[1] == "measure":  # measure SIDE URL FILE: one JSON line on stdout
        print(json.dumps(_measure(sys.argv[2], sys.argv[3], Path(sys.argv[4]))))
    else:  # a server process of this benchmark: KIND PORT DATABASE
        from plasma_nb.server import Limits, create_app

        serve(create_app(schema, mutators, database=sys.argv[3], blobs=None,
                         limits=Limits(requests_per_second=None)), int(sys.argv[2]))
