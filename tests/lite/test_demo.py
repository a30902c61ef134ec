"""``plasma-nb demo``: builds the offline site when needed (cached by a fingerprint),
serves it with a SQLite sync server at one address, and prints that address."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from plasma_nb.cli import main
from plasma_nb.lite.build import fingerprint
from plasma_nb.lite.resources import default_contents
from tests.browser.servers import free_port
from tests.lite.sites import require_node

pytestmark = pytest.mark.slow

ADDRESS = re.compile(r"plasma-nb demo: open (http://127\.0\.0\.1:\d+)/lab/index\.html\?path="
                     r"demo\.ipynb")


class Demo:
    def __init__(self, tmp: Path, *args: str) -> None:
        self.port = free_port()
        self.log = tmp / f"demo-{self.port}.log"
        env = {**os.environ, "PLASMA_NB_HOME": str(tmp / "home"), "PYTHONUNBUFFERED": "1"}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "plasma_nb", "demo", "--port", str(self.port), *args],
                cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT)

    def wait_address(self, timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = ADDRESS.search(self.output())
            if match:
                return match.group(1)
            if self.proc.poll() is not None:
                pytest.fail(f"plasma-nb demo exited with {self.proc.returncode}:\n{self.output()}")
            time.sleep(0.2)
        pytest.fail(f"plasma-nb demo printed no address:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # Ctrl-C: a clean stop
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    require_node()
    d = Demo(tmp_path)
    try:
        yield d
    finally:
        d.stop()


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.status, answer.read()


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            get(url)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_demo_serves_the_site_and_sync_at_one_address(demo: Demo, tmp_path: Path) -> None:
    base = demo.wait_address()
    wait_http(base + "/healthz")
    status, body = get(base + "/jupyter-lite.json")
    assert status == 200
    settings = json.loads(body)["jupyter-config-data"]["litePluginSettings"]
    assert settings["@jupyterlite/pyodide-kernel-extension:kernel"]["pyodideUrl"] == (
        "./static/pyodide/pyodide.mjs")
    assert get(base + "/files/demo.ipynb")[0] == 200
    assert get(base + "/files/todos.py")[0] == 200
    schema = json.loads(get(base + "/sync/schema")[1])
    assert "todos" in json.dumps(schema)
    assert demo.stop() == 0
    # the database is the demo's own, under PLASMA_NB_HOME
    assert (tmp_path / "home" / "demo.db").is_file()
    assert "Traceback" not in demo.output()

    # Started again: the cached site is used as it is (no second build), unless plasma_nb's
    # sources changed meanwhile (an editable install being edited: then it must rebuild).
    site = Path(re.search(r"\(site (\S+),", demo.output()).group(1))  # type: ignore[union-attr]
    built_for = json.loads((site / "plasma-site.json").read_text())["fingerprint"]
    unchanged = fingerprint([default_contents()]) == built_for
    again = Demo(tmp_path)
    try:
        again.wait_address(timeout=300)
        if unchanged:
            assert "building the demo site" not in again.output(), again.output()
    finally:
        assert again.stop() == 0


def test_demo_refuses_a_public_host_without_insecure(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("plasma-nb: error: refusing to listen on '0.0.0.0': the demo has no auth")
    assert err.count("\n") == 1


def test_demo_says_when_its_port_is_taken(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["demo", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"plasma-nb: error: cannot listen on 127.0.0.1:{port}")
    assert err.rstrip().endswith("pass another --port")
