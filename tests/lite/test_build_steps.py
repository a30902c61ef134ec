"""The build's steps on small inputs (no site is built here): wheels, pins, the lock,
where things are found, and the one-line errors of ``plasma-nb lite build``."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from plasma_nb.lite import LiteBuildError, pyodide_dist, resources
from plasma_nb.lite.build import (
    BUILD_VERSION,
    OFFLINE_PRELOAD,
    find_extensions,
    fingerprint,
    kernel_wheels,
)
from plasma_nb.lite.wheels import (
    applicable_requirements,
    canonical_name,
    check_closure,
    pack_wheel,
    pyodide_environment,
    read_pins,
    read_wheel,
    repack_installed,
)
from tests.lite.sites import REPO

ENV = pyodide_environment("3.14.2")


def make_wheel(directory: Path, name: str, version: str, requires: Sequence[str] = (),
               modules: dict[str, str] | None = None) -> Path:
    tree = directory / f"tree-{name}"
    dist_info = tree / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir(parents=True)
    meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    meta += [f"Requires-Dist: {r}" for r in requires]
    (dist_info / "METADATA").write_text("\n".join(meta) + "\n")
    (dist_info / "WHEEL").write_text("Wheel-Version: 1.0\nRoot-Is-Purelib: true\n"
                                     "Tag: py3-none-any\n")
    for rel, text in (modules or {f"{name.replace('-', '_')}/__init__.py": ""}).items():
        path = tree / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    whl = directory / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    pack_wheel(tree, whl)
    return whl


# --- wheels ----------------------------------------------------------------------------------


def test_names_are_normalized_as_pep_503_says() -> None:
    assert canonical_name("Typing_Extensions") == "typing-extensions"
    assert canonical_name("plasma.nb") == canonical_name("plasma_nb") == "plasma-nb"


def test_markers_are_evaluated_for_pyodide(tmp_path: Path) -> None:
    whl = make_wheel(tmp_path, "thing", "1.0", [
        'httpx>=0.27; sys_platform != "emscripten"',
        'comm>=0.1',
        'pexpect>4.3; sys_platform != "win32" and sys_platform != "emscripten"',
        'typing-extensions; python_version < "3.12"',
        'pandas; extra == "notebook"',
    ])
    info = read_wheel(whl)
    assert (info.name, info.version, info.top_level) == ("thing", "1.0", ("thing",))
    assert [r.name for r in applicable_requirements(info, ENV)] == ["comm"]


def test_top_level_names_come_from_the_listing(tmp_path: Path) -> None:
    whl = make_wheel(tmp_path, "multi", "2", modules={
        "multi/__init__.py": "", "multi/sub/x.py": "", "single.py": "", "nsonly/y.py": ""})
    assert read_wheel(whl).top_level == ("multi", "nsonly", "single")


def test_packed_wheels_are_deterministic_and_carry_a_true_record(tmp_path: Path) -> None:
    first = make_wheel(tmp_path / "a", "same", "1.0")
    second = make_wheel(tmp_path / "b", "same", "1.0")
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as zf:
        names = zf.namelist()
        record = zf.read("same-1.0.dist-info/RECORD").decode().splitlines()
        data = zf.read("same/__init__.py")
    assert names[-1] == "same-1.0.dist-info/RECORD"
    digest = hashlib.sha256(data).digest()
    import base64

    expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert f"same/__init__.py,sha256={expected},{len(data)}" in record


def test_an_installed_distribution_is_packed_into_a_wheel(tmp_path: Path) -> None:
    whl = repack_installed("comm", tmp_path)
    info = read_wheel(whl)
    assert info.key == "comm" and whl.name == f"comm-{info.version}-py3-none-any.whl"
    with zipfile.ZipFile(whl) as zf:
        names = zf.namelist()
    assert "comm/__init__.py" in names
    assert not [n for n in names if n.endswith((".pyc", "INSTALLER", "direct_url.json"))]
    with pytest.raises(LiteBuildError, match="not installed"):
        repack_installed("surely-not-installed-dist", tmp_path)


def test_pins_are_name_equals_version(tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_text("# comment\n\nipython==9.12.0  # trailing\ncomm == 0.2.3\n")
    assert read_pins(good) == {"ipython": "9.12.0", "comm": "0.2.3"}
    bad = tmp_path / "bad.txt"
    bad.write_text("ipython>=9\n")
    with pytest.raises(LiteBuildError, match=r"bad.txt:1: expected NAME==VERSION"):
        read_pins(bad)


def test_the_shipped_pins_are_exact() -> None:
    pins = read_pins(resources.site_config_dir() / "pyodide-packages.txt")
    assert {"ipython", "jedi", "micropip", "comm", "traitlets", "psygnal"} <= set(pins)


def test_a_set_that_does_not_fit_together_is_one_line(tmp_path: Path) -> None:
    top = read_wheel(make_wheel(tmp_path, "top", "1", ["dep>=2", "gone"]))
    dep = read_wheel(make_wheel(tmp_path, "dep", "1"))
    with pytest.raises(LiteBuildError) as caught:
        check_closure([top, dep], ENV, hint="edit the pins")
    message = str(caught.value)
    assert "\n" not in message
    assert "top 1 needs dep>=2, found 1" in message and "top 1 needs gone (missing)" in message
    assert message.endswith("(edit the pins)")
    check_closure([top], ENV, provided=["dep", "gone"], hint="-")  # provided elsewhere: fine


# --- the lock ---------------------------------------------------------------------------------


def fake_npm_package(directory: Path, python: str = "3.14.2") -> Path:
    directory.mkdir(parents=True)
    for name in pyodide_dist.CORE_FILES:
        (directory / name).write_text("{}" if name.endswith(".json") else name)
    (directory / "package.json").write_text(json.dumps({"version": "314.0.6"}))
    lock = {"info": {"python": python, "platform": "emscripten_5_0_3", "arch": "wasm32",
                     "abi_version": "2026_0"},
            "packages": {"numpy": {"file_name": "numpy-absent.whl"}}, "tool": {}}
    (directory / "pyodide-lock.json").write_text(json.dumps(lock))
    return directory


def test_the_lock_is_regenerated_from_the_wheels(tmp_path: Path) -> None:
    npm = fake_npm_package(tmp_path / "npm")
    wheels = tmp_path / "wheels"
    app = make_wheel(wheels, "my-app", "1.0", ['dep', 'httpx; sys_platform != "emscripten"'],
                     modules={"my_app/__init__.py": ""})
    dep = make_wheel(wheels, "Dep", "2.0")
    extra = make_wheel(wheels, "extra", "3.0")
    dest = tmp_path / "dist"
    lock = pyodide_dist.write_dist(dest, npm, [app, dep, extra],
                                   extra_depends={"my_app": ["Extra"]})
    assert set(lock["packages"]) == {"my-app", "dep", "extra"}  # upstream entries dropped
    assert lock["info"]["python"] == "3.14.2" and lock["tool"] == {}
    entry = lock["packages"]["my-app"]
    assert entry["depends"] == ["dep", "extra"]
    assert entry["imports"] == ["my_app"]
    assert entry["sha256"] == hashlib.sha256((dest / app.name).read_bytes()).hexdigest()
    assert json.loads((dest / "pyodide-lock.json").read_text()) == lock
    with pytest.raises(LiteBuildError, match="my-app needs dep"):
        pyodide_dist.write_dist(tmp_path / "dist2", npm, [app])


def test_the_stdlib_zip_gets_bytecode_beside_each_module(tmp_path: Path) -> None:
    original = tmp_path / "python_stdlib.zip"
    with zipfile.ZipFile(original, "w") as zf:
        zf.writestr("asyncio/", "")
        zf.writestr("asyncio/__init__.py", "x = 1\n")
        zf.writestr("inspect.py", "y = 2\n")
    tree = tmp_path / "tree"
    (tree / "asyncio").mkdir(parents=True)
    (tree / "asyncio" / "__init__.pyc").write_bytes(b"pyc1")
    (tree / "inspect.pyc").write_bytes(b"pyc2")
    dest = tmp_path / "out" / "python_stdlib.zip"
    pyodide_dist._repack_stdlib(original, tree, dest)
    with zipfile.ZipFile(dest) as zf:
        assert zf.namelist() == ["asyncio/", "asyncio/__init__.py", "inspect.py",
                                 "asyncio/__init__.pyc", "inspect.pyc"]
        assert zf.read("inspect.pyc") == b"pyc2" and zf.read("inspect.py") == b"y = 2\n"


# --- what the build finds ---------------------------------------------------------------------


def test_the_build_finds_its_configuration_notebooks_and_extensions() -> None:
    assert resources.source_tree() == REPO  # this checkout is an editable install
    assert resources.site_config_dir() == REPO / "lite_site"
    assert resources.default_contents() == REPO / "notebooks"
    extensions = find_extensions()
    assert set(extensions) == {"@jupyterlite/pyodide-kernel-extension", "anywidget",
                               "@jupyter-widgets/jupyterlab-manager"}
    own = kernel_wheels(extensions["@jupyterlite/pyodide-kernel-extension"])
    assert set(own) == {"piplite", "pyodide-kernel", "ipykernel", "widgetsnbextension"}
    assert read_wheel(own["widgetsnbextension"]).version.startswith("4.")
    assert "plasma-nb" in OFFLINE_PRELOAD


def test_the_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    monkeypatch.setenv("PLASMA_NB_CACHE", str(tmp_path / "c"))
    assert resources.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("PLASMA_NB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resources.cache_dir() == tmp_path / "xdg" / "plasma_nb"


def test_the_demo_fingerprint_follows_the_notebooks(tmp_path: Path) -> None:
    contents = tmp_path / "nb"
    shutil.copytree(REPO / "notebooks", contents,
                    ignore=shutil.ignore_patterns("__pycache__"))
    before = fingerprint([contents])
    (contents / "__pycache__").mkdir()
    (contents / "__pycache__" / "todos.cpython-311.pyc").write_bytes(b"x")
    (contents / "demo.db").write_bytes(b"x")
    assert fingerprint([contents]) == before  # what the demo server leaves behind: ignored
    (contents / "todos.py").write_text((contents / "todos.py").read_text() + "\n# changed\n")
    assert fingerprint([contents]) != before
    assert BUILD_VERSION


# --- one-line errors of the command -----------------------------------------------------------


def lite_build(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
               prefix: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "plasma_nb", "lite", "build", "--out",
         str(tmp_path / "site"), *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PLASMA_NB_CACHE": str(tmp_path / "cache"), **(env or {})},
    )


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    errors = [line for line in proc.stderr.splitlines() if line.startswith("plasma-nb: error:")]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return errors[0]


def test_offline_without_node_is_a_one_line_error(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"  # a PATH with python but neither node nor npm
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    proc = lite_build(tmp_path, "--offline", env={"PATH": str(bin_dir)})
    assert error_line(proc) == (
        "plasma-nb: error: node is not installed (or not on PATH): `--offline` compiles the "
        "kernel's bytecode with Pyodide under Node (install Node.js >= 20)")
    assert not (tmp_path / "site").exists()


def test_missing_contents_is_a_one_line_error(tmp_path: Path) -> None:
    proc = lite_build(tmp_path, "--contents", str(tmp_path / "nope"))
    assert error_line(proc) == (
        f"plasma-nb: error: contents directory {str(tmp_path / 'nope')!r} does not exist")


def test_an_unrelated_output_directory_is_never_replaced(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "precious.txt").write_text("mine")
    proc = lite_build(tmp_path)
    assert "is not a site built by plasma-nb" in error_line(proc)
    assert (tmp_path / "site" / "precious.txt").read_text() == "mine"


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0,
                    reason="needs unshare and root for a network namespace without network")
@pytest.mark.parametrize("args", [["--offline"], []], ids=["offline-npm", "online-pip"])
def test_no_network_is_a_one_line_error(tmp_path: Path, args: list[str]) -> None:
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare -n is not allowed here: {probe.stderr.decode().strip()}")
    # An empty cache: the build must download, and there is no network at all.
    proc = lite_build(tmp_path, *args, prefix=["unshare", "-n"],
                      env={"PIP_RETRIES": "0", "PIP_DEFAULT_TIMEOUT": "5",
                           "npm_config_fetch_retries": "0", "npm_config_cache":
                           str(tmp_path / "npm-cache")})
    line = error_line(proc)
    assert "network" in line, line
