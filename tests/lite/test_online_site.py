"""The online site (no ``--offline``), built from a plain wheel install of plasma_nb.

The online site loads Pyodide and its packages (pandas among them) from the public
CDN, which these machines cannot reach: it cannot run here, so this test checks the
configuration the build generates. It also covers the other install path: plasma_nb
installed from its wheel (not editable), where the build packs the wheel from the
installed distribution and finds its configuration and notebooks as package data.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.lite.sites import REPO

pytestmark = pytest.mark.slow

KERNEL = "@jupyterlite/pyodide-kernel-extension:kernel"


@pytest.fixture(scope="module")
def online(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("online")
    wheels, target = tmp / "wheels", tmp / "target"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheels),
         str(REPO)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    [wheel] = wheels.glob("plasma_nb-*.whl")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target",
         str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr
    out = tmp / "site"
    # PYTHONPATH puts the wheel install before the editable one; cwd is not the repository.
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.run([sys.executable, "-m", "plasma_nb", "lite", "build", "--out", str(out)],
                          cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {"out": out, "target": target, "wheel": wheel, "output": proc.stdout + proc.stderr,
            "manifest": json.loads((out / "plasma-site.json").read_text())}


def test_the_wheel_install_path_was_used(online: dict[str, Any]) -> None:
    manifest = online["manifest"]
    assert manifest["plasma_wheel_from"] == "installed distribution", online["output"]
    # contents default to the notebooks shipped inside the wheel
    assert manifest["contents"] == [str(online["target"] / "plasma_nb" / "_notebooks")]
    assert (online["out"] / "files" / "demo.ipynb").is_file()
    assert (online["out"] / "files" / "todos.py").is_file()


def test_the_packed_wheel_has_the_installed_files(online: dict[str, Any]) -> None:
    packed = online["out"] / "pypi" / online["manifest"]["plasma_wheel"]
    with zipfile.ZipFile(packed) as zf, zipfile.ZipFile(online["wheel"]) as original:
        names = set(zf.namelist())
        expected = {n for n in original.namelist() if not n.endswith(".dist-info/RECORD")}
        record = zf.read(next(n for n in names if n.endswith(".dist-info/RECORD"))).decode()
    assert expected <= names, sorted(expected - names)
    assert not [n for n in names if n.endswith(".pyc") or n.startswith("..")]
    assert "plasma_nb/__init__.py,sha256=" in record


def test_the_online_site_loads_pyodide_from_the_cdn(online: dict[str, Any]) -> None:
    out = online["out"]
    assert not (out / "static" / "pyodide").exists()
    config = json.loads((out / "jupyter-lite.json").read_text())["jupyter-config-data"]
    settings = config["litePluginSettings"][KERNEL]
    # No pyodideUrl: the kernel's default, the public CDN of its Pyodide version.
    assert "pyodideUrl" not in settings
    assert not settings.get("disablePyPIFallback")
    assert "loadPyodideOptions" not in settings
    assert settings["pipliteUrls"][0].startswith("./pypi/all.json?sha256=")
    assert online["manifest"]["offline"] is False
    assert online["manifest"]["preload"] == []


def test_the_piplite_index_serves_plasma_nb_and_matching_widgets(online: dict[str, Any]) -> None:
    out = online["out"]
    index = json.loads((out / "pypi" / "all.json").read_text())
    versions = {name: list(entry["releases"]) for name, entry in index.items()}
    assert versions["plasma-nb"] == [importlib.metadata.version("plasma-nb")]
    for dist in ("anywidget", "ipywidgets", "jupyterlab-widgets"):
        assert versions[dist] == [importlib.metadata.version(dist)], dist
    # comm is in neither Pyodide's lock nor the kernel's index: without it here the
    # kernel would ask PyPI for it at every start.
    assert "comm" in versions and "psygnal" in versions
    for entry in index.values():
        for releases in entry["releases"].values():
            for release in releases:
                assert release["url"].startswith("./"), release["url"]
                assert (out / "pypi" / release["filename"]).is_file()
    names = {e["name"] for e in config_extensions(out)}
    assert {"anywidget", "@jupyter-widgets/jupyterlab-manager"} <= names


def config_extensions(out: Path) -> list[dict[str, Any]]:
    config = json.loads((out / "jupyter-lite.json").read_text())["jupyter-config-data"]
    return list(config["federated_extensions"])
