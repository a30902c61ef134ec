"""Standalone benchmarks: modules of ``benchmarks/`` run as scripts, not through the harness.

Some figures have no raw anchor to alternate with (a browser's cold start, the bytes a widget
sends): those benchmarks are scripts, ``python -m benchmarks.NAME --json PATH``, that write a
JSON report of their own. ``python -m benchmarks --all`` runs each in a subprocess, after the
harness's benchmarks, so that the report covers every benchmark of every issue.

A script is any module of the package with a ``__main__`` block that is not a ``bench_*``
module, not private and not part of the machinery listed in ``MACHINERY``. Browser scripts
(``browser_*``) need Debian's chromium and Playwright's Python package: without them they
are *skipped* with that reason, never silently absent. A script whose ``--help`` offers
``--runs`` is given the run count.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pkgutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "MACHINERY",
    "Outcome",
    "browser_arguments",
    "discover_scripts",
    "requirement",
    "run_script",
]

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(__file__).resolve().parent
MACHINERY = frozenset(
    {"harness", "isolation", "machine", "loadgen", "plots", "report", "servers", "standalone"}
)
CHROMIUM = "/usr/bin/chromium"
#: A script that runs longer is stopped and reported as failed.
TIMEOUT_SECONDS = 20 * 60


@dataclass
class Outcome:
    """How a standalone benchmark went: ``ok`` (it wrote ``json_path``), ``failed`` (its
    exit status and the tail of its output in ``reason``) or ``skipped``."""

    name: str
    status: Literal["ok", "failed", "skipped"]
    reason: str = ""
    seconds: float = 0.0
    json_path: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason, "seconds": round(self.seconds, 1),
                "json": self.json_path}


def browser_arguments(name: str, doc: str | None, notebook: str, *, runs: int,
                      argv: list[str] | None) -> argparse.Namespace:
    """The command line every browser script takes: ``--runs``, ``--site`` (a built
    ``--offline`` site holding ``notebook``) and ``--json`` (its report)."""
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{name}",
                                     description=doc.split("\n\n")[0] if doc else None)
    parser.add_argument("--runs", type=int, default=runs)
    parser.add_argument("--site", type=Path, default=None,
                        help=f"a built --offline site that contains {notebook}")
    parser.add_argument("--json", type=Path,
                        default=ROOT / "benchmarks" / "results" / f"{name}.json")
    return parser.parse_args(argv)


def discover_scripts(directory: Path = PACKAGE) -> list[str]:
    """The names of the standalone benchmark modules in ``directory``, sorted: those that
    run as scripts (a helper module without a ``__main__`` block is not one)."""
    return sorted(
        info.name for info in pkgutil.iter_modules([str(directory)])
        if not info.ispkg and not info.name.startswith(("bench_", "_"))
        and info.name not in MACHINERY and _is_script(directory / f"{info.name}.py")
    )


def _is_script(path: Path) -> bool:
    try:
        source = path.read_text(encoding="utf-8")
    except OSError:
        return False
    return "__name__ == \"__main__\"" in source or "__name__ == '__main__'" in source


def requirement(name: str) -> str | None:
    """Why script ``name`` cannot run on this machine, or None if it can."""
    if name.startswith("browser_"):
        if not Path(CHROMIUM).exists():
            return f"needs Debian's chromium at {CHROMIUM} (apt-get install chromium)"
        if importlib.util.find_spec("playwright") is None:
            return "needs Playwright's Python package (pip install playwright; never " \
                   "`playwright install`)"
    return None


def run_script(name: str, json_dir: Path, *, runs: int | None = None,
               timeout: float = TIMEOUT_SECONDS) -> Outcome:
    """Run ``python -m benchmarks.NAME --json JSON_DIR/NAME.json`` from the repository root."""
    missing = requirement(name)
    if missing is not None:
        return Outcome(name, "skipped", missing)
    json_dir.mkdir(parents=True, exist_ok=True)
    json_path = json_dir / f"{name}.json"
    command = [sys.executable, "-m", f"benchmarks.{name}", "--json", str(json_path)]
    if runs is not None and "--runs" in _help(name):
        command += ["--runs", str(runs)]
    before = json_path.stat().st_mtime if json_path.exists() else None
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout, check=False, env=_env())
    except subprocess.TimeoutExpired:
        return Outcome(name, "failed", f"still running after {timeout:g} s: stopped",
                       time.perf_counter() - started)
    seconds = time.perf_counter() - started
    output = (done.stdout + done.stderr).strip()
    wrote = json_path.exists() and json_path.stat().st_mtime != before
    if wrote and not _is_json(json_path):
        return Outcome(name, "failed", f"{json_path.name} is not JSON", seconds)
    # widget_bytes exits 1 when a refresh sends too much: a report of a miss, not a failure.
    if wrote:
        return Outcome(name, "ok", _tail(output, 3) if done.returncode else "", seconds,
                       str(json_path))
    return Outcome(name, "failed", f"exit status {done.returncode}: {_tail(output, 6)}", seconds)


def _help(name: str) -> str:
    try:
        done = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", "--help"], cwd=ROOT,
                              capture_output=True, text=True, timeout=60, check=False,
                              env=_env())
    except subprocess.TimeoutExpired:
        return ""
    return done.stdout


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _is_json(path: Path) -> bool:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def _tail(text: str, lines: int) -> str:
    tail = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(tail) if tail else "no output"

