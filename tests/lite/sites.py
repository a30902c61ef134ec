"""The ``--offline`` site the tests share, built once per session.

tests/lite inspects it; tests/browser serves it and opens it in Chromium. It is built
with the real command, ``plasma-nb lite build --offline``, into the session's temporary
directory, with the example notebooks plus the browser tests' notebooks as contents.
Downloads are cached (``PLASMA_NB_CACHE``, default ``~/.cache/plasma_nb``): a warm
build takes about 10 s, a cold one well under the 3 minutes allowed here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.browser.notebooks import write_all

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
BUILD_TIMEOUT = 600  # the budget is ~3 minutes cold; this only stops a hung build


@dataclass
class BuiltSite:
    path: Path
    contents: list[Path]
    seconds: float
    output: str

    @property
    def manifest(self) -> dict[str, Any]:
        return dict(json.loads((self.path / "plasma-site.json").read_text()))

    def json(self, rel: str) -> Any:
        return json.loads((self.path / rel).read_text())


_built: dict[str, BuiltSite] = {}


def require_node() -> None:
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        message = f"{' and '.join(missing)} missing: `lite build --offline` needs Node.js"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI is set, so this is a failure, not a skip")
        pytest.skip(message)


def offline_site(tmp_path_factory: pytest.TempPathFactory) -> BuiltSite:
    """The session's offline site (built on first use)."""
    if "offline" in _built:
        return _built["offline"]
    require_node()
    root = tmp_path_factory.mktemp("offline-site")
    e2e = root / "e2e-notebooks"
    write_all(e2e)
    out = root / "site"
    cmd = [sys.executable, "-m", "plasma_nb", "lite", "build", "--offline", "--out", str(out),
           "--contents", str(NOTEBOOKS), "--contents", str(e2e)]
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        raw = exc.stderr
        stderr = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        pytest.fail(f"lite build --offline took more than {BUILD_TIMEOUT} s:\n{stderr}")
    seconds = time.monotonic() - started
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        pytest.fail(f"plasma-nb lite build --offline failed (exit {proc.returncode}):\n{output}")
    site = BuiltSite(out, [NOTEBOOKS, e2e], seconds, output)
    _built["offline"] = site
    return site
