"""Running notebooks in a real ipykernel (this venv's Python) with nbclient."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

KERNEL_NAME = "plasma-test"


def install_kernelspec(root: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec for this interpreter under ``root``, found through JUPYTER_PATH."""
    spec = root / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "plasma_nb tests",
        "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(root))
    return KERNEL_NAME


def text_of(cell: Any) -> str:
    """What a cell printed and showed, as text (stdout, stderr, text/plain, errors)."""
    parts = []
    for output in cell.get("outputs", []):
        kind = output["output_type"]
        if kind == "stream":
            parts.append(output["text"])
        elif kind in ("execute_result", "display_data"):
            parts.append(output["data"].get("text/plain", ""))
        elif kind == "error":
            parts.append(f"{output['ename']}: {output['evalue']}")
    return "".join(parts)


def data_of(cell: Any, mime: str) -> list[Any]:
    return [o["data"][mime] for o in cell.get("outputs", [])
            if o["output_type"] in ("execute_result", "display_data") and mime in o["data"]]
