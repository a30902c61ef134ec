"""The machine a benchmark ran on: what the report prints beside every figure.

The load average is part of it: on a shared machine (the developers' have 2 cores and
several processes) it says how noisy the figures are.
"""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["format_machine", "load_average", "machine_info"]


def machine_info() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "load": list(load) if (load := load_average()) is not None else None,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "sqlite": sqlite3.sqlite_version,
        "plasma_nb": _plasma_nb_version(),
        "git_commit": _git_commit(),
        "git_dirty": _git_dirty(),
    }


def load_average() -> tuple[float, float, float] | None:
    try:
        one, five, fifteen = os.getloadavg()
    except (AttributeError, OSError):
        return None
    return (round(one, 2), round(five, 2), round(fifteen, 2))


def _cpu_model() -> str | None:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return None


def _memory_gib() -> float | None:
    try:
        text = Path("/proc/meminfo").read_text(encoding="utf-8")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 2**20, 1)
    return None


def _plasma_nb_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("plasma-nb")
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    """``git ARGS`` in this repository: its output, or None when git cannot say."""
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _git_commit() -> str | None:
    return _git("rev-parse", "HEAD") or None


def _git_dirty() -> bool | None:
    """Whether tracked files differ from the commit (the figures are then of a work tree)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return None if status is None else bool(status)


def format_machine(machine: dict[str, Any]) -> str:
    cpu = f"{machine['cpu_count']} CPUs"
    if machine.get("cpu_model"):
        cpu += f" ({machine['cpu_model']})"
    memory = f", {machine['memory_gib']} GiB" if machine.get("memory_gib") else ""
    load = machine.get("load")
    loaded = f", load average {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}" if load else ""
    return (
        f"{machine['platform']}, {cpu}{memory}, "
        f"Python {machine['python']} ({machine['implementation']}), SQLite {machine['sqlite']}"
        f"{loaded}"
    )
