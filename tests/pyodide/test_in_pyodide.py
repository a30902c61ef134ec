"""The client engine inside Pyodide: Node 20, fake-indexeddb, a real ``plasma-nb serve``.

How it runs (one Pyodide boot for the whole module):

1. ``npm ci`` in ``tests/pyodide/node`` if its node_modules are missing or stale
   (npm packages ``pyodide`` and ``fake-indexeddb``, pinned in package-lock.json);
2. plasma_nb's pure wheel is built into a temporary directory with ``pip wheel``;
3. a real ``plasma-nb serve notebooks/todos.py`` starts on 127.0.0.1 with a
   temporary SQLite database, for the sync tests;
4. ``node run.mjs CONFIG`` boots Pyodide with fake-indexeddb as ``indexedDB``,
   installs the wheel into site-packages, copies pytest (and the few pure packages
   it needs) from this virtualenv, mounts ``tests/`` and runs pytest inside Pyodide
   on ``tests/pyodide/inside``; the JSON report lists every test's outcome;
5. here, one test per module in ``inside/`` asserts that its tests passed and shows
   the in-Pyodide output when not, and one test checks the server's state in CPython.

SQLite needs no loading: in Pyodide 314 ``_sqlite3`` is built into the interpreter
(``pyodide.loadPackage("sqlite3")`` answers "No known package").

``PLASMA_PYODIDE_ARGS`` adds arguments to the pytest run inside Pyodide (``-k sync``,
``-x``, ...); ``PLASMA_PYODIDE_NODE_FLAGS`` replaces the Node flags chosen for the
Node version (JSPI and WebSocket). Without Node the module is skipped, unless ``CI``
is set: then it fails. Details: docs/storage.md, "Testing under Pyodide".
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import distribution
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.pyodide

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
NODE_DIR = HERE / "node"
INSIDE = HERE / "inside"
SCHEMA_FILE = REPO / "notebooks" / "todos.py"

# Pure-Python distributions copied from this virtualenv into Pyodide to run pytest
# there (the npm package `pyodide` ships no wheels, and the runs must not download).
SUPPORT_DISTS = ("pytest", "pluggy", "iniconfig", "packaging", "pygments", "pytest-asyncio")

NPM_TIMEOUT = 300  # a cold `npm ci` downloads ~15 MB
HARNESS_TIMEOUT = 300  # one Pyodide boot (two for test_tabs) plus every in-Pyodide test; ~25 s idle
SERVER_START_TIMEOUT = 30

INSIDE_MODULES = sorted(p.name for p in INSIDE.glob("test_*.py"))


# --- Node and its packages ------------------------------------------------------------


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        message = "node is not installed (the Pyodide tests need Node >= 20)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI is set, so this is a failure, not a skip")
        pytest.skip(message)
    return node


def _node_flags(node: str) -> list[str]:
    """V8/Node flags for JSPI (pytest-asyncio needs run_sync) and a global WebSocket."""
    out = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    major = int(re.match(r"v(\d+)", out.stdout.strip()).group(1))  # type: ignore[union-attr]
    if major < 20:
        pytest.fail(f"Node {out.stdout.strip()} is too old: the Pyodide tests need Node >= 20")
    if major < 22:
        # Node 20: JSPI is the old "stack switching" proposal; WebSocket is experimental.
        return ["--experimental-wasm-stack-switching", "--experimental-websocket"]
    if major < 24:
        return ["--experimental-wasm-jspi"]  # not verified here: these machines have Node 20
    return []


def _installed_matches_lock() -> bool:
    lock = json.loads((NODE_DIR / "package-lock.json").read_text())
    for path, entry in lock.get("packages", {}).items():
        if not path.startswith("node_modules/"):
            continue
        manifest = NODE_DIR / path / "package.json"
        if not manifest.is_file():
            return False
        if json.loads(manifest.read_text()).get("version") != entry.get("version"):
            return False
    return True


def _ensure_node_modules() -> None:
    if (NODE_DIR / "node_modules").is_dir() and _installed_matches_lock():
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is missing: it installs the harness's packages (tests/pyodide/node)")
    proc = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=NODE_DIR, capture_output=True, text=True, timeout=NPM_TIMEOUT,
    )
    if proc.returncode != 0:
        pytest.fail(f"npm ci failed in {NODE_DIR}:\n{proc.stdout}\n{proc.stderr}")


# --- what goes into Pyodide ------------------------------------------------------------


def _build_wheel(out: Path) -> Path:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(REPO)],
        capture_output=True, text=True, timeout=180,
    )
    wheels = sorted(out.glob("plasma_nb-*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        pytest.fail(f"building the plasma_nb wheel failed:\n{proc.stdout}\n{proc.stderr}")
    return wheels[0]


def _support_files(dest_root: str) -> dict[str, str]:
    """{path inside Pyodide: host path} for the pure test-only distributions."""
    files: dict[str, str] = {}
    for name in SUPPORT_DISTS:
        dist = distribution(name)
        for f in dist.files or ():
            rel = str(f)
            if rel.startswith("..") or "__pycache__" in rel or rel.endswith(".pyc"):
                continue
            files[f"{dest_root}/{rel}"] = str(dist.locate_file(f))
    return files


def _ini_value(value: Any) -> str:
    if isinstance(value, list):
        return "".join(f"\n    {v}" for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _pytest_ini() -> str:
    """The project's pytest settings for the run inside Pyodide.

    Same markers, warnings-as-errors and asyncio mode as in CPython; without
    testpaths/pythonpath (the repository root must not shadow the installed wheel).
    """
    options = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"][
        "ini_options"
    ]
    lines = ["[pytest]"]
    for key, value in options.items():
        if key in ("testpaths", "pythonpath"):
            continue
        lines.append(f"{key} = {_ini_value(value)}")
    return "\n".join(lines) + "\n"


# --- the sync server -------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http_json(url: str, body: Any = None, timeout: float = 10) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    if data is not None:
        req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as answer:
        return json.loads(answer.read() or b"null")


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("pyodide-server")
    port = _free_port()
    log = tmp / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "plasma_nb", "serve", str(SCHEMA_FILE),
             "--host", "127.0.0.1", "--port", str(port), "--db", f"sqlite:///{tmp / 'x.db'}"],
            cwd=tmp, stdout=out, stderr=subprocess.STDOUT,
        )
    srv = Server(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"plasma-nb serve exited with {proc.returncode}:\n{srv.output()}")
            try:
                _http_json(srv.url + "/healthz", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"plasma-nb serve did not answer in time:\n{srv.output()}")
                time.sleep(0.1)
        yield srv
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- the harness run -------------------------------------------------------------------


@dataclass
class Run:
    returncode: int
    output: str
    report: dict[str, Any]
    seconds: float
    run_id: str

    def tail(self, lines: int = 150) -> str:
        return "\n".join(self.output.splitlines()[-lines:])

    def tests_in(self, module: str) -> list[dict[str, Any]]:
        return [t for t in self.report.get("tests", []) if t["nodeid"].split("::")[0] == module]


@pytest.fixture(scope="module")
def node_command() -> list[str]:
    """Node with its flags, and the harness's packages installed (before the server starts)."""
    node = _node()
    flags = _node_flags(node)
    if "PLASMA_PYODIDE_NODE_FLAGS" in os.environ:  # to try other Node versions or setups
        flags = shlex.split(os.environ["PLASMA_PYODIDE_NODE_FLAGS"])
    _ensure_node_modules()
    return [node, *flags]


@pytest.fixture(scope="module")
def pyodide_run(
    node_command: list[str], server: Server, tmp_path_factory: pytest.TempPathFactory
) -> Run:
    tmp = tmp_path_factory.mktemp("pyodide-run")
    wheel = _build_wheel(tmp / "wheels")
    (tmp / "pytest.ini").write_text(_pytest_ini())
    run_id = uuid.uuid4().hex[:12]
    inside = str(INSIDE)
    config = {
        "wheels": [str(wheel)],
        "files": {
            **_support_files("/harness/site"),
            "/harness/pytest.ini": str(tmp / "pytest.ini"),
        },
        "sysPath": ["/harness/site", str(REPO), inside],  # inside: pyodide_helpers
        # tests/ at its host path, so tracebacks name real files. Only tests/ is
        # mounted: plasma_nb comes from the wheel, not from the source tree.
        "mounts": {str(REPO / "tests"): str(REPO / "tests")},
        "runner": str(INSIDE / "runner.py"),
        "cwd": inside,
        "report": str(tmp / "report.json"),
        "env": {
            "PLASMA_PYODIDE_SERVER_URL": server.url,
            "PLASMA_PYODIDE_RUN_ID": run_id,
            "PLASMA_PYODIDE_WHEEL": wheel.name,
        },
        "pytestArgs": [
            "-c", "/harness/pytest.ini", "--rootdir", inside, "--confcutdir", inside,
            "-p", "no:cacheprovider", "-v", "--color=no", "--tb=short", "-rfEs",
            *shlex.split(os.environ.get("PLASMA_PYODIDE_ARGS", "")),
            inside,
        ],
    }
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [*node_command, str(NODE_DIR / "run.mjs"), str(tmp / "config.json")],
            cwd=NODE_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            timeout=HARNESS_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace")
        pytest.fail(f"the Pyodide harness took more than {HARNESS_TIMEOUT} s:\n{out[-20000:]}")
    seconds = time.monotonic() - started
    output = proc.stdout.decode(errors="replace")
    report_path = tmp / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    run = Run(proc.returncode, output, report, seconds, run_id)
    if proc.returncode not in (0, 1) or not report:
        pytest.fail(f"the Pyodide harness failed (exit {proc.returncode}):\n{run.tail(300)}")
    return run


def _describe(tests: list[dict[str, Any]]) -> str:
    return "\n\n".join(f"{t['nodeid']}: {t['outcome'].upper()}\n{t['longrepr']}" for t in tests)


def test_harness_collected_everything(pyodide_run: Run) -> None:
    errors = pyodide_run.report.get("collect_errors", [])
    assert not errors, (
        "collection failed inside Pyodide:\n"
        + "\n".join(f"{e['nodeid']}:\n{e['longrepr']}" for e in errors)
        + f"\n--- output ---\n{pyodide_run.tail()}"
    )
    assert pyodide_run.report["python"].startswith("3.14"), pyodide_run.report["python"]
    # Shown with `pytest -rP`: the whole run inside Pyodide.
    print(pyodide_run.output)
    print(f"Pyodide harness: {pyodide_run.seconds:.1f} s, {len(pyodide_run.report['tests'])} tests")


@pytest.mark.parametrize("module", INSIDE_MODULES)
def test_inside_pyodide(pyodide_run: Run, module: str) -> None:
    tests = pyodide_run.tests_in(module)
    if not tests:
        selected = os.environ.get("PLASMA_PYODIDE_ARGS")
        if selected:
            pytest.skip(f"deselected by PLASMA_PYODIDE_ARGS={selected!r}")
        pytest.fail(f"no test of {module} ran inside Pyodide:\n{pyodide_run.tail()}")
    bad = [t for t in tests if t["outcome"] in ("failed", "error")]
    if bad:
        pytest.fail(
            f"{len(bad)} of {len(tests)} tests failed inside Pyodide:\n\n{_describe(bad)}"
            f"\n--- in-Pyodide output (tail) ---\n{pyodide_run.tail()}",
            pytrace=False,
        )
    if all(t["outcome"] == "skipped" for t in tests):
        pytest.skip(f"every test of {module} skipped inside Pyodide:\n{_describe(tests)}")


def test_server_state_after_pyodide_sync(pyodide_run: Run, server: Server) -> None:
    """The rows the two Pyodide clients wrote are in the server's tables (read from CPython)."""
    sync = [t for t in pyodide_run.tests_in("test_sync.py")
            if t["nodeid"].endswith("::test_two_clients_sync_a_mutation")]
    if not sync or sync[0]["outcome"] != "passed":
        pytest.skip("the in-Pyodide two-client sync test did not pass or was deselected "
                    "(see test_inside_pyodide)")
    answer = _http_json(
        server.url + "/sync/pull",
        {"pullVersion": 1, "clientGroupID": f"cpython-check-{uuid.uuid4().hex}", "cookie": None,
         "profileID": "cpython-check", "schemaVersion": "1"},
    )
    rows = {op["key"]: op["value"] for op in answer["patch"] if op["op"] == "put"}
    run = pyodide_run.run_id
    # Written by tests/pyodide/inside/test_sync.py: A adds, B marks done, B adds, A renames.
    assert rows[f"todos/{run}-a"] == {
        "id": f"{run}-a", "title": f"from A {run}", "done": True, "owner": None, "photo": None,
    }
    assert rows[f"todos/{run}-b"]["title"] == f"renamed by A {run}"
    assert rows[f"todos/{run}-b"]["done"] is False
