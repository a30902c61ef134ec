"""Where the site build finds its inputs and keeps its caches."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from .errors import LiteBuildError

#: plasma_nb/ (the installed package, or the source tree of an editable install)
PACKAGE_DIR = Path(__file__).resolve().parents[1]

#: the site configuration files in lite_site/ (packaged as plasma_nb/lite/_site)
SITE_CONFIG_FILES = ("jupyter_lite_config.json", "jupyter-lite.json", "pyodide-packages.txt")


def cache_dir() -> Path:
    """Downloads and derived files: ``$PLASMA_NB_CACHE``, else ``~/.cache/plasma_nb``."""
    configured = os.environ.get("PLASMA_NB_CACHE")
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "plasma_nb"


def source_tree() -> Path | None:
    """The repository root when plasma_nb runs from its source (an editable install)."""
    root = PACKAGE_DIR.parent
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file():
        return None
    if not re.search(r'(?m)^name\s*=\s*"plasma-nb"', pyproject.read_text("utf-8")):
        return None
    return root


def site_config_dir() -> Path:
    """The build configuration: lite_site/ in a checkout, plasma_nb/lite/_site in a wheel."""
    packaged = PACKAGE_DIR / "lite" / "_site"
    if (packaged / "jupyter_lite_config.json").is_file():
        return packaged
    root = source_tree()
    if root is not None and (root / "lite_site" / "jupyter_lite_config.json").is_file():
        return root / "lite_site"
    raise LiteBuildError(
        "the lite site's configuration is missing (neither plasma_nb/lite/_site nor "
        "lite_site/ has jupyter_lite_config.json): reinstall plasma-nb"
    )


def default_contents() -> Path:
    """The example notebooks: plasma_nb/_notebooks in a wheel, notebooks/ in a checkout."""
    packaged = PACKAGE_DIR / "_notebooks"
    if packaged.is_dir():
        return packaged
    root = source_tree()
    if root is not None and (root / "notebooks").is_dir():
        return root / "notebooks"
    raise LiteBuildError("the example notebooks are missing: pass --contents DIR")


def require_tool(name: str, why: str) -> str:
    """The path of a program on PATH, or a one-line error saying what needs it."""
    path = shutil.which(name)
    if path is None:
        raise LiteBuildError(f"{name} is not installed (or not on PATH): {why}")
    return path


def run(cmd: list[str], *, what: str, cwd: Path | None = None, timeout: float = 600,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a build step; on failure, a one-line error with the step's last words."""
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env,
        )
    except subprocess.TimeoutExpired:
        raise LiteBuildError(f"{what} took more than {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise LiteBuildError(f"{what} failed: {last_error_line(proc.stdout + proc.stderr)}")
    return proc


_NETWORK_HINTS = (
    "ENOTFOUND", "EAI_AGAIN", "ETIMEDOUT", "ECONNREFUSED", "ECONNRESET", "ENETUNREACH",
    "Temporary failure in name resolution", "Name or service not known",
    "Failed to establish a new connection", "Network is unreachable", "Max retries exceeded",
    "Could not fetch URL", "connection error", "getaddrinfo", "NameResolutionError",
    "Failed to resolve", "connection broken by",
)


def looks_like_network_error(text: str) -> bool:
    return any(hint.lower() in text.lower() for hint in _NETWORK_HINTS)


#: lines that never explain a failure (npm's pointers to its log, its error fields)
_NOISE = re.compile(r"(?i)A complete log of this run|^npm (error|ERR!) (code|syscall|errno) |"
                    r"^npm (error|ERR!)\s*$")


def last_error_line(text: str) -> str:
    """The most telling line of a tool's output (its last ERROR line, else its last line)."""
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not _NOISE.search(line)]
    if not lines:
        return "(no output)"
    errors = [line for line in lines if re.match(r"(?i)(npm )?err(or)?!?[: ]", line)]
    line = (errors or lines)[-1]
    return line if len(line) <= 300 else line[:297] + "..."
