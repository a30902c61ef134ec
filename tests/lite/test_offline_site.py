"""The ``--offline`` site on disk: local Pyodide, a correct lock, matching extensions,
the notebooks, and no URL to any other host in its configuration.

The site is built once per session (tests/lite/sites.py); the browser tests then
check that it really makes no request outside its origin.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest

from plasma_nb.lite.build import OFFLINE_PRELOAD
from tests.lite.sites import BuiltSite

pytestmark = pytest.mark.slow

KERNEL = "@jupyterlite/pyodide-kernel-extension:kernel"
URL = re.compile(r"(?i)^(?:[a-z][a-z0-9+.-]*:)?//")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def kernel_settings(site: BuiltSite, rel: str = "jupyter-lite.json") -> dict[str, Any]:
    config = site.json(rel)["jupyter-config-data"]
    return dict(config["litePluginSettings"][KERNEL])


def lock(site: BuiltSite) -> dict[str, Any]:
    return dict(site.json("static/pyodide/pyodide-lock.json"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_build_was_reasonably_fast(offline: BuiltSite) -> None:
    # Generous: warm caches make it ~10 s; a cold build downloads ~25 MB.
    assert offline.seconds < 180, offline.output
    assert offline.manifest["offline"] is True


def test_the_kernel_loads_pyodide_from_the_site(offline: BuiltSite) -> None:
    settings = kernel_settings(offline)
    assert settings["pyodideUrl"] == "./static/pyodide/pyodide.mjs"
    assert settings["disablePyPIFallback"] is True
    assert settings["loadPyodideOptions"]["packages"] == list(OFFLINE_PRELOAD)
    for url in settings["pipliteUrls"]:
        assert url.startswith("./"), url
        assert (offline.path / url.split("?")[0]).is_file(), url
    pyodide = offline.path / "static" / "pyodide"
    for name in ("pyodide.mjs", "pyodide.asm.mjs", "pyodide.asm.wasm", "python_stdlib.zip",
                 "pyodide-lock.json"):
        assert (pyodide / name).is_file(), name
    assert json.loads((pyodide / "package.json").read_text())["version"] == (
        offline.manifest["pyodide_version"])


def test_the_lock_lists_exactly_the_wheels_present_with_their_sha256(offline: BuiltSite) -> None:
    the_lock = lock(offline)
    pyodide = offline.path / "static" / "pyodide"
    listed = {entry["file_name"] for entry in the_lock["packages"].values()}
    assert listed == {p.name for p in pyodide.glob("*.whl")}
    for key, entry in the_lock["packages"].items():
        assert key == canonical(entry["name"])
        assert entry["sha256"] == sha256(pyodide / entry["file_name"]), key
        assert entry["install_dir"] == "site" and entry["package_type"] == "package"
        for dep in entry["depends"]:
            assert dep in the_lock["packages"], f"{key} depends on {dep}, not in the lock"
    # Pyodide 314's own info block, unchanged.
    assert the_lock["info"]["python"].startswith("3.14")
    assert the_lock["info"]["platform"].startswith("emscripten")


def test_plasma_nb_and_what_it_needs_are_in_the_lock(offline: BuiltSite) -> None:
    packages = lock(offline)["packages"]
    plasma = packages["plasma-nb"]
    assert plasma["imports"] == ["plasma_nb"]
    assert plasma["version"] == importlib.metadata.version("plasma-nb")
    # Its CPython-only dependencies (httpx, websockets) are marked non-emscripten: out.
    assert "httpx" not in packages and "websockets" not in packages
    # In the browser the notebook layer needs the widgets: loaded with plasma_nb.
    assert set(plasma["depends"]) == {"anywidget", "ipywidgets"}
    closure, todo = set(), ["plasma-nb", *OFFLINE_PRELOAD]
    while todo:
        name = todo.pop()
        if name not in closure:
            closure.add(name)
            todo += packages[name]["depends"]
    for needed in ("ipython", "comm", "traitlets", "anywidget", "ipywidgets", "psygnal",
                   "jupyterlab-widgets", "widgetsnbextension", "pyodide-kernel", "piplite"):
        assert needed in closure, needed
    # and `%pip install plasma-nb` finds it in the site's own piplite index
    index = offline.json("pypi/all.json")
    [release] = index["plasma-nb"]["releases"][plasma["version"]]
    assert release["digests"]["sha256"] == sha256(offline.path / "pypi" / release["filename"])


def test_the_kernels_wheels_carry_python_314_bytecode(offline: BuiltSite) -> None:
    pyodide = offline.path / "static" / "pyodide"
    for key in ("plasma-nb", "ipython", "traitlets"):
        entry = lock(offline)["packages"][key]
        with zipfile.ZipFile(pyodide / entry["file_name"]) as zf:
            names = zf.namelist()
        pycs = [n for n in names if n.endswith(".cpython-314.pyc")]
        sources = [n for n in names if n.endswith(".py")]
        assert pycs and len(pycs) >= 0.9 * len(sources), key
        # front-end files stay out of the kernel's copies (the site serves them)
        assert not any(".data/data/" in n for n in names), key


def test_the_standard_library_carries_bytecode_beside_its_sources(offline: BuiltSite) -> None:
    with zipfile.ZipFile(offline.path / "static" / "pyodide" / "python_stdlib.zip") as zf:
        names = set(zf.namelist())
    sources = {n for n in names if n.endswith(".py")}
    assert "inspect.py" in sources and "asyncio/base_events.py" in sources
    # zipimport reads X.pyc beside X.py (not __pycache__/)
    missing = sorted(n for n in sources if n + "c" not in names)
    assert len(missing) <= 0.02 * len(sources), missing[:20]


def test_widget_extensions_match_the_python_packages(offline: BuiltSite) -> None:
    config = offline.json("jupyter-lite.json")["jupyter-config-data"]
    names = {ext["name"] for ext in config["federated_extensions"]}
    assert names == {"anywidget", "@jupyter-widgets/jupyterlab-manager",
                     "@jupyterlite/pyodide-kernel-extension"}
    packages = lock(offline)["packages"]
    for dist in ("anywidget", "ipywidgets", "jupyterlab-widgets"):
        assert packages[dist]["version"] == importlib.metadata.version(dist), dist
    for ext, dist in (("anywidget", "anywidget"),
                      ("@jupyter-widgets/jupyterlab-manager", "jupyterlab-widgets")):
        shipped = json.loads((offline.path / "extensions" / ext / "package.json").read_text())
        installed = [f for f in importlib.metadata.distribution(dist).files or ()
                     if str(f).endswith(f"labextensions/{ext}/package.json")]
        assert installed, f"{dist} has no {ext} extension installed"
        expected = json.loads(Path(str(installed[0].locate())).read_text())["version"]
        assert shipped["version"] == expected, ext
        assert offline.manifest["extensions"][ext] == expected
    # anywidget numbers its extension like its Python package
    assert offline.manifest["extensions"]["anywidget"] == importlib.metadata.version("anywidget")


def test_the_notebooks_are_the_contents(offline: BuiltSite) -> None:
    files = offline.path / "files"
    for name in ("demo.ipynb", "todos.py", "e2e_local.ipynb"):
        assert (files / name).is_file(), name
    listing = offline.json("api/contents/all.json")
    names = {item["name"] for item in listing["content"]}
    assert {"demo.ipynb", "todos.py"} <= names
    assert not any(n.startswith(".") or n == "__pycache__" for n in names), names


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_no_configuration_names_another_host(offline: BuiltSite) -> None:
    site = offline.path
    configs: list[tuple[str, Any]] = []
    for path in [site / "jupyter-lite.json", *site.glob("*/jupyter-lite.json")]:
        configs.append((str(path.relative_to(site)), json.loads(path.read_text())))
    ipynb = json.loads((site / "jupyter-lite.ipynb").read_text())
    configs.append(("jupyter-lite.ipynb metadata", ipynb["metadata"].get("jupyter-lite", {})))
    for rel in ("static/pyodide/pyodide-lock.json", "pypi/all.json",
                "extensions/@jupyterlite/pyodide-kernel-extension/static/pypi/all.json"):
        configs.append((rel, offline.json(rel)))
    assert len(configs) >= 6
    for name, config in configs:
        absolute = [s for s in _strings(config) if URL.match(s)]
        assert not absolute, f"{name} names other hosts: {absolute}"
