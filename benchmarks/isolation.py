"""Each benchmark in a process of its own, for ``python -m benchmarks --all``.

In one process for the whole run, a benchmark's leftovers (threads, environment variables,
a heap grown by 100k-row replicas) would weigh on the ones after it, and one hang would stop
everything. :class:`Isolated` runs ``python -m benchmarks NAME --record FILE`` for each
benchmark within a time limit, passes its figures through, and reads back its JSON result; a
skip or an error comes back through FILE. The anchor and the subject of one benchmark still
run alternately in one process, as the harness requires.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TextIO

from benchmarks.harness import Benchmark, Result, Skipped, format_details

__all__ = ["TIMEOUT_SECONDS", "Isolated"]

ROOT = Path(__file__).resolve().parents[1]
#: A benchmark still running after this long is stopped and reported as an error.
TIMEOUT_SECONDS = 20 * 60
#: Child lines the parent says itself (or, for a traceback, reports in its error).
_NOT_PASSED_ON = ("   ", "  File", "  skipped:", "  wrote")


class Isolated:
    """A ``runner`` for :func:`benchmarks.harness.run_all`: one process per benchmark."""

    def __init__(self, json_dir: Path, *, timeout: float = TIMEOUT_SECONDS,
                 out: TextIO = sys.stdout) -> None:
        self.json_dir = json_dir
        self.timeout = timeout
        self.out = out

    def __call__(self, bench: Benchmark, runs: int) -> Result:
        with tempfile.TemporaryDirectory(prefix="plasma-bench-record-") as tmp:
            record = Path(tmp) / "record.json"
            started = time.time()
            returncode, output, timed_out = self._run(bench.name, runs, record)
            tail = " | ".join(line.strip() for line in output[-8:] if line.strip())
            if timed_out:
                raise TimeoutError(f"still running after {self.timeout:g} s: stopped")
            outcome = json.loads(record.read_text(encoding="utf-8")) if record.exists() else {}
        result: Result | None = None
        path = self.json_dir / f"{bench.name}.json"
        if path.exists() and path.stat().st_mtime >= started:
            result = Result.from_json(json.loads(path.read_text(encoding="utf-8")))
        # What the benchmark printed of its own (run_all prints the header, the figures and
        # the table itself).
        said = set(format_details(result.details)) if result is not None else set()
        for line in output:
            if line.startswith("  ") and not line.startswith(_NOT_PASSED_ON) \
                    and line.rstrip("\n") not in said:
                self.out.write(line)
        self.out.flush()
        if bench.name in outcome.get("skipped", {}):
            raise Skipped(outcome["skipped"][bench.name])
        if bench.name in outcome.get("errors", {}):
            self.out.writelines(output[-15:])  # the end of its traceback
            raise RuntimeError(f"{outcome['errors'][bench.name]} (in its own process)")
        if result is None:
            raise RuntimeError(f"its process wrote no result (exit status {returncode}): {tail}")
        return result

    def _run(self, name: str, runs: int, record: Path) -> tuple[int, list[str], bool]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        command = [sys.executable, "-m", "benchmarks", name, "--runs", str(runs),
                   "--json-dir", str(self.json_dir), "--record", str(record)]
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        timed_out = threading.Event()

        def stop() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(self.timeout, stop)
        timer.start()
        lines: list[str] = []
        try:
            assert proc.stdout is not None
            lines = list(proc.stdout)
            proc.wait()
        finally:
            timer.cancel()
            if proc.stdout is not None:
                proc.stdout.close()
        return proc.returncode, lines, timed_out.is_set()
