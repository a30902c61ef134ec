"""Drive a built JupyterLite site in headless Chromium (Debian's, via Playwright's Python API).

Used by tests/browser and by ``python -m benchmarks.browser_cold_start``. Never runs
``playwright install``: the browser is /usr/bin/chromium (``apt-get install chromium``).

- :func:`ensure_chromium`: the browser, installed with apt-get when missing and root;
- :class:`Browser`: one persistent profile (a fresh ``--user-data-dir``) that records
  every request; names of hosts other than the allowed ones do not resolve;
- :class:`Notebook`: a notebook opened in JupyterLite's Notebook UI, whose code cells
  are run one by one (click, Escape, Shift+Enter) and whose outputs are read back.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlparse

CHROMIUM = "/usr/bin/chromium"
#: as in research/jupyterlite-offline.md; --headless is passed explicitly as well
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
CELL = ".jp-Notebook .jp-Cell"
CODE_CELL = ".jp-Notebook .jp-CodeCell"
PROMPT = ".jp-InputArea-prompt"


class BrowserUnavailable(Exception):
    """Chromium or Playwright is missing and cannot be installed here."""


def ensure_chromium() -> str:
    """The path of Debian's chromium, installing it with apt-get if missing (root only)."""
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    if os.geteuid() != 0:
        raise BrowserUnavailable(
            f"{CHROMIUM} is missing and only root can install it: apt-get install -y chromium"
        )
    apt = shutil.which("apt-get")
    if apt is None:
        raise BrowserUnavailable(f"{CHROMIUM} is missing and there is no apt-get to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "-q", "chromium"]
    proc = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:  # an empty or stale package list: update it once, then retry
        subprocess.run([apt, "update", "-q"], capture_output=True, text=True, env=env,
                       timeout=600)
        proc = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0 or not os.path.exists(CHROMIUM):
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        raise BrowserUnavailable(f"apt-get install -y chromium failed: {' | '.join(tail)}")
    return CHROMIUM


def ensure_playwright() -> None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        raise BrowserUnavailable(
            "the Python package playwright is missing: pip install playwright "
            "(never `playwright install`: the tests use Debian's chromium)"
        ) from None


@dataclass
class Requests:
    """Every URL the browser asked for, and those it was not allowed to reach."""

    allowed_hosts: frozenset[str]
    seen: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)

    def external(self) -> list[str]:
        return sorted({u for u in self.seen if not _is_local(u, self.allowed_hosts)})


def _is_local(url: str, allowed: frozenset[str]) -> bool:
    if url.startswith(("data:", "blob:", "about:")):
        return True
    return urlparse(url).hostname in allowed


class Browser:
    """A Chromium with a persistent profile; reopen the same profile with :meth:`restart`."""

    def __init__(self, profile: Path | None = None, *,
                 allowed_hosts: Iterable[str] = ("127.0.0.1",),
                 share: Browser | None = None) -> None:
        """``share``: another open Browser whose Playwright this one uses (one Playwright
        per thread: its sync API runs an event loop there)."""
        ensure_playwright()
        self.executable = ensure_chromium()
        self._own_profile = profile is None
        self.profile = profile or Path(tempfile.mkdtemp(prefix="plasma-chromium-"))
        self.requests = Requests(frozenset(allowed_hosts))
        self.console: list[str] = []
        self._share = share
        self._pw: Any = None
        self.context: Any = None

    def __enter__(self) -> Browser:
        if self._share is not None:
            self._pw = self._share._pw
        else:
            from playwright.sync_api import sync_playwright

            self._pw = sync_playwright().start()
        self._launch()
        return self

    def _launch(self) -> None:
        self.context = self._pw.chromium.launch_persistent_context(
            str(self.profile), executable_path=self.executable, headless=True,
            # Playwright passes the profile as --user-data-dir itself (and refuses it in args).
            args=[*CHROMIUM_FLAGS, self._resolver_rules()],
            viewport={"width": 1400, "height": 1000},
        )
        # Observed, not intercepted: a route handler would hold every request until this
        # thread's Playwright loop runs (it does not run during time.sleep), stalling
        # the page's background work and slowing every load. Other hosts cannot be
        # reached anyway: the resolver rules make their names fail inside Chromium.
        self.context.on("request", lambda r: self.requests.seen.append(r.url))
        self.context.on("requestfailed", self._failed)

    def _failed(self, request: Any) -> None:
        if not _is_local(request.url, self.requests.allowed_hosts):
            self.requests.blocked.append(request.url)

    def wait(self, seconds: float) -> None:
        """Let time pass while Playwright keeps handling events (never time.sleep here)."""
        self.context.pages[0].wait_for_timeout(seconds * 1000)

    def _resolver_rules(self) -> str:
        allowed = sorted(h for h in self.requests.allowed_hosts if h != "127.0.0.1")
        excluded = ", ".join(f"EXCLUDE {h}" for h in ["127.0.0.1", *allowed])
        return f"--host-resolver-rules=MAP * ~NOTFOUND, {excluded}"

    def restart(self) -> None:
        """Close the browser and start it again on the same profile (data kept on disk)."""
        self.context.close()
        self._launch()

    def new_page(self) -> Any:
        page = self.context.new_page()
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text[:500]}"))
        page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        return page

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if self.context is not None:
                self.context.close()
        finally:
            if self._pw is not None and self._share is None:
                self._pw.stop()
            if self._own_profile:
                shutil.rmtree(self.profile, ignore_errors=True)


class CellTimeout(AssertionError):
    pass


class Notebook:
    """A notebook opened at ``{base}/notebooks/index.html?path=PATH`` in one page."""

    def __init__(self, browser: Browser, base_url: str, path: str, page: Any = None) -> None:
        self.browser = browser
        self.url = f"{base_url.rstrip('/')}/notebooks/index.html?path={path}"
        self.page = page or browser.new_page()
        self.executions = 0  # the kernel's execution count, to know when a cell is done
        self.opened_at = 0.0

    def open(self, timeout: float = 90) -> float:
        """Navigate and wait until every cell is on screen; seconds taken."""
        self.opened_at = time.perf_counter()
        self.page.goto(self.url)
        self._wait_cells(timeout)
        self.executions = 0
        return time.perf_counter() - self.opened_at

    def reload(self, timeout: float = 90) -> float:
        self.opened_at = time.perf_counter()
        self.page.reload()
        self._wait_cells(timeout)
        self.executions = 0  # a new kernel counts from 1
        return time.perf_counter() - self.opened_at

    def _wait_cells(self, timeout: float) -> None:
        self.page.wait_for_selector(f"{CELL} {PROMPT}", timeout=timeout * 1000)
        # The notebook renders its cells progressively: wait until the count settles.
        deadline = time.monotonic() + timeout
        last, stable_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            count = self.page.locator(CELL).count()
            if count != last:
                last, stable_since = count, time.monotonic()
            elif time.monotonic() - stable_since > 1.0:
                return
            self.page.wait_for_timeout(100)

    def code_cell(self, index: int) -> Any:
        return self.page.locator(CODE_CELL).nth(index)

    def run(self, index: int, timeout: float = 180) -> str:
        """Run code cell ``index`` and return its output text once the kernel is done."""
        cell = self.code_cell(index)
        prompt = cell.locator(PROMPT).first
        prompt.click()
        self.page.keyboard.press("Escape")  # command mode: Shift+Enter runs the cell
        prompt.click()
        self.page.keyboard.press("Shift+Enter")
        want = f"[{self.executions + 1}]:"
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = prompt.inner_text().strip()
            if text == want:
                break
            self.page.wait_for_timeout(50)
        else:
            raise CellTimeout(f"code cell {index} did not finish in {timeout:.0f} s "
                              f"(prompt {text!r}, expected {want!r}); output so far:\n"
                              f"{self.output(index)}\nconsole:\n"
                              + "\n".join(self.browser.console[-30:]))
        self.executions += 1
        self.page.wait_for_timeout(200)  # outputs arrive just after the execute reply
        return self.output(index)

    def start(self) -> None:
        """Navigate without waiting (to let several pages boot their kernels at once)."""
        self.opened_at = time.perf_counter()
        self.page.goto(self.url, wait_until="commit")

    def wait_open(self, timeout: float = 90) -> None:
        self._wait_cells(timeout)
        self.executions = 0

    def output(self, index: int) -> str:
        area = self.code_cell(index).locator(".jp-OutputArea")
        return str(area.first.inner_text()).strip() if area.count() else ""

    def wait_for_output(self, index: int, pattern: str, timeout: float = 60) -> str:
        """Wait (without running anything) until the output of cell ``index`` matches."""
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.output(index)
            if re.search(pattern, text):
                return text
            self.page.wait_for_timeout(200)
        raise CellTimeout(f"output of code cell {index} never matched {pattern!r}:\n{text}")


def write_notebook(path: Path, cells: Iterable[str], *, markdown: str | None = None) -> None:
    """A notebook for the Pyodide kernel with these code cells (and an optional title)."""
    import json

    def cell(kind: str, source: str) -> dict[str, Any]:
        base: dict[str, Any] = {"cell_type": kind, "metadata": {}, "source": source}
        if kind == "code":
            base.update(execution_count=None, outputs=[])
        return base

    all_cells = ([cell("markdown", markdown)] if markdown else []) + [
        cell("code", c) for c in cells]
    nb = {
        "cells": all_cells,
        "metadata": {
            "kernelspec": {"display_name": "Python (Pyodide)", "language": "python",
                           "name": "python"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 4,
    }
    path.write_text(json.dumps(nb, indent=1) + "\n")
