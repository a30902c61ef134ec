"""Blob transfers of 100 MB through a real ``plasma-nb serve`` on 127.0.0.1, against a plain
file copy of the same bytes in the same run; and the server's peak memory while it takes
the uploads (it streams them: the bar is bounded memory, not a multiple of the blob).

- ``blob_upload``: ``client.blobs.upload()`` of a queued 100 MB blob (a HEAD, then one
  streamed PUT: the client reads its cache file, the server hashes and writes it to its
  local store and renames it into place) against ``shutil.copyfile`` of the file.
- ``blob_download``: the sync loop's download of the blob into an empty cache (a streamed
  GET, hashed and checked, renamed into the cache) against the same copy.

After the upload benchmark it prints the server's resident memory: its baseline, and its peak
while it received the uploads (sampled every 5 ms from ``/proc``), and writes them to
``benchmarks/results/blob_server_memory.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import plasma_nb as plasma
from benchmarks.harness import Context, benchmark, max_slowdown
from notebooks import todos

SIZE = 100 * 1024 * 1024
ROOT = Path(__file__).resolve().parents[1]
MEMORY_REPORT = ROOT / "benchmarks" / "results" / "blob_server_memory.json"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class _Server:
    """``plasma-nb serve notebooks/todos.py`` with a local blob store, in a temporary dir."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="plasma-bench-blobs-"))
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, PYTHONPATH=str(ROOT), PLASMA_NB_HOME=str(self.dir / "home"))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "plasma_nb", "serve", str(ROOT / "notebooks" / "todos.py"),
             "--db", "sqlite:///server.db", "--blobs", "file:blobs", "--port", str(self.port),
             "--log-level", "warning"],
            cwd=self.dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.url + "/healthz", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("plasma-nb serve did not start") from None
                time.sleep(0.1)
        self.baseline_kib = _rss_kib(self.proc.pid)
        self.peak_kib = self.baseline_kib
        self._sampling = False
        self._thread: threading.Thread | None = None

    def sample(self, on: bool) -> None:
        """Sample the server's RSS every 5 ms while ``on``."""
        if on and self._thread is None:
            self._sampling = True

            def run() -> None:
                while self._sampling:
                    self.peak_kib = max(self.peak_kib, _rss_kib(self.proc.pid))
                    time.sleep(0.005)

            self._thread = threading.Thread(target=run, daemon=True)
            self._thread.start()
        elif not on and self._thread is not None:
            self._sampling = False
            self._thread.join()
            self._thread = None

    def stop(self) -> None:
        self.sample(False)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


async def _setup(kind: str) -> Context:
    server = _Server()
    data = os.urandom(SIZE)
    hash = hashlib.sha256(data).hexdigest()
    source = server.dir / "source.bin"
    source.write_bytes(data)
    del data
    copy = server.dir / "copy.bin"
    os.environ["PLASMA_NB_HOME"] = str(server.dir / "home")
    client = await plasma.connect(server.url, schema=todos.schema, mutators=todos.mutators,
                                  name=f"bench-{kind}", pokes=False, thread=False)
    sync = client._engine.blobs
    assert sync is not None
    assert await client.blobs.put(source) == hash
    await client.blobs.upload(progress=False)
    server_copy = server.dir / "blobs" / hash

    def anchor() -> None:
        shutil.copyfile(source, copy)

    async def upload() -> None:
        await client.blobs.upload(progress=False)

    async def download() -> None:
        await sync.download(hash, progress=False)

    def before_run(side: str) -> None:
        copy.unlink(missing_ok=True)
        if kind == "upload" and side == "subject":
            server_copy.unlink(missing_ok=True)
            sync.enqueue(hash, SIZE)
            server.sample(True)
        if kind == "download" and side == "subject":
            (server.dir / "home" / f"bench-{kind}.blobs" / hash).unlink(missing_ok=True)

    def after_run(side: str) -> None:
        if side == "subject":
            server.sample(False)
            if kind == "upload":
                assert not sync.queued() and server_copy.stat().st_size == SIZE

    async def close() -> None:
        await client.close()
        if kind == "upload":
            report = {
                "blob_bytes": SIZE,
                "server_rss_baseline_mib": round(server.baseline_kib / 1024, 1),
                "server_rss_peak_during_uploads_mib": round(server.peak_kib / 1024, 1),
                "server_rss_growth_mib": round((server.peak_kib - server.baseline_kib) / 1024, 1),
            }
            print(f"  server memory: {json.dumps(report)}", flush=True)
            MEMORY_REPORT.parent.mkdir(parents=True, exist_ok=True)
            MEMORY_REPORT.write_text(json.dumps(report, indent=2) + "\n")
        server.stop()

    return Context(anchor=anchor, subject=upload if kind == "upload" else download,
                   before_run=before_run, after_run=after_run, close=close)


# Loose bars: the anchor is a kernel-side copy of page-cached bytes, the subject two
# processes sharing the machine's cores over loopback HTTP, hashing every byte. They catch
# pathologies (a body buffered whole, a chunk size gone tiny), not percent changes.
@benchmark(bar=max_slowdown(15.0))
async def blob_upload() -> Context:
    """Upload a 100 MB blob to a local plasma-nb serve, against a plain file copy."""
    return await _setup("upload")


@benchmark(bar=max_slowdown(40.0))
async def blob_download() -> Context:
    """Download a 100 MB blob into the cache (hash checked), against a plain file copy."""
    return await _setup("download")
