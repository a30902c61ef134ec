"""Runs pytest inside Pyodide; executed by tests/pyodide/node/run.mjs, never imported by CPython.

The harness puts the config in the global ``_harness_config`` and takes the JSON
string this code evaluates to as the report (one entry per test).

pytest-asyncio drives every async test and fixture through ``asyncio.Runner``,
which cannot work in Pyodide: the WebLoop is always the running loop, so
``Runner.run`` refuses to start ("cannot be called from a running event loop").
Before pytest loads the plugin, ``asyncio.Runner`` is replaced by a runner that
schedules the coroutine on the WebLoop and blocks on it with
``pyodide.ffi.run_sync`` (JSPI: Node runs with --experimental-wasm-stack-switching).
This is test machinery only: plasma_nb itself never calls ``run_sync``.
"""

import asyncio
import asyncio.runners
import json
import os
import sys

sys.dont_write_bytecode = True
cfg = _harness_config  # type: ignore[name-defined]  # noqa: F821
for p in reversed(list(cfg.get("sysPath", []))):
    sys.path.insert(0, p)
if cfg.get("cwd"):
    os.chdir(cfg["cwd"])

from pyodide.ffi import can_run_sync, run_sync  # noqa: E402

if not can_run_sync():
    raise RuntimeError(
        "pyodide.ffi.run_sync is unavailable: run Node with --experimental-wasm-stack-switching "
        "(JSPI) and loadPyodide({enableRunUntilComplete: true})"
    )


class WebLoopRunner:
    """``asyncio.Runner`` for the WebLoop: one shared loop, blocking through JSPI."""

    def __init__(self, *, debug=None, loop_factory=None):
        if loop_factory is not None:
            raise RuntimeError("custom loop factories are not supported inside Pyodide")
        self._loop = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def get_loop(self):
        if self._loop is None:
            self._loop = asyncio.get_event_loop()
        return self._loop

    def run(self, coro, *, context=None):
        task = self.get_loop().create_task(coro, context=context)
        return run_sync(task)

    def close(self):
        # The WebLoop lives as long as the interpreter; nothing to shut down.
        self._loop = None


asyncio.Runner = WebLoopRunner
asyncio.runners.Runner = WebLoopRunner

import pytest  # noqa: E402


class Recorder:
    """Collects one entry per test (setup, call and teardown folded together)."""

    def __init__(self):
        self.tests = {}
        self.errors = []

    def pytest_runtest_logreport(self, report):
        t = self.tests.setdefault(
            report.nodeid,
            {"nodeid": report.nodeid, "outcome": "passed", "duration": 0.0, "longrepr": ""},
        )
        t["duration"] += report.duration
        if report.failed:
            t["outcome"] = "failed" if report.when == "call" else "error"
            t["longrepr"] += f"[{report.when}] {report.longrepr}\n"
        elif report.skipped and t["outcome"] == "passed":
            t["outcome"] = "xfailed" if hasattr(report, "wasxfail") else "skipped"
            t["longrepr"] += f"{report.longrepr}\n"

    def pytest_collectreport(self, report):
        if report.failed:
            self.errors.append({"nodeid": report.nodeid, "longrepr": str(report.longrepr)})


_recorder = Recorder()
_code = pytest.main(list(cfg["pytestArgs"]), plugins=[_recorder])
json.dumps(
    {
        "exitcode": int(_code),
        "python": sys.version,
        "tests": list(_recorder.tests.values()),
        "collect_errors": _recorder.errors,
    }
)
