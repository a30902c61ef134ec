"""``plasma-nb lite build``: the JupyterLite site, and the demo's cached copy of it.

The build assembles a JupyterLite project in a temporary directory from
``lite_site/`` (the configuration), then runs ``jupyter lite build`` on it:

- the front-end extensions of exactly three packages, copied from their installed
  distributions: the Pyodide kernel, anywidget and ipywidgets' jupyterlab_widgets
  (nothing else from the environment leaks into the site);
- ``pypi/``: the piplite index, so that ``%pip install plasma-nb`` works without
  PyPI: plasma_nb's wheel (built from the source tree, or packed from the installed
  distribution), plus, for the online site, the widget wheels at the versions of
  the shipped extensions;
- ``static/pyodide/`` with ``--offline``: Pyodide itself and every wheel the kernel
  loads, with a regenerated lock (see :mod:`.pyodide_dist`); the kernel preloads
  its own packages and plasma_nb, and the PyPI fallback is off;
- the contents (the example notebooks by default).

The result is replaced atomically: a failed build leaves the previous site alone.
``plasma-site.json`` in the output records what was built.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import pyodide_dist
from .errors import LiteBuildError
from .resources import (
    PACKAGE_DIR,
    SITE_CONFIG_FILES,
    cache_dir,
    default_contents,
    run,
    site_config_dir,
    source_tree,
)
from .wheels import (
    Log,
    check_closure,
    download_wheels,
    plasma_wheel,
    pyodide_environment,
    read_pins,
    read_wheel,
)

KERNEL_PLUGIN = "@jupyterlite/pyodide-kernel-extension:kernel"
MANIFEST = "plasma-site.json"
#: bump when the build's output changes for the same inputs (invalidates demo sites)
BUILD_VERSION = "1"

#: Python distribution -> the front-end extensions (npm names) the site ships from it
EXTENSION_DISTS = {
    "jupyterlite-pyodide-kernel": ("@jupyterlite/pyodide-kernel-extension",),
    "anywidget": ("anywidget",),
    "jupyterlab-widgets": ("@jupyter-widgets/jupyterlab-manager",),
}
#: the Python packages whose kernel-side versions must match the shipped extensions
WIDGET_DISTS = ("anywidget", "ipywidgets", "jupyterlab-widgets")
#: what plasma_nb needs in the browser beyond its METADATA (its notebook layer)
PLASMA_BROWSER_DEPENDS = ("anywidget", "ipywidgets")
#: the online site's piplite index: widget wheels matching the extensions (pins for the rest)
ONLINE_EXTRA = ("psygnal", "comm", "typing-extensions")
#: the kernel's own wheels, taken from the kernel extension (stubs included)
KERNEL_WHEELS = ("piplite", "pyodide-kernel", "ipykernel", "widgetsnbextension")
#: loaded in one parallel batch while Pyodide starts, in the --offline site. The kernel
#: skips its own install steps for the names it finds here (micropip, piplite, ipykernel,
#: comm, pyodide-kernel, jedi, ipython); plasma-nb brings its widgets along.
OFFLINE_PRELOAD = ("micropip", "piplite", "ipykernel", "pyodide-kernel", "comm", "ipython",
                   "jedi", "plasma-nb")
LITE_MODULES = ("jupyterlite_core", "jupyterlite_pyodide_kernel", "jupyter_server", "packaging")


def _log_to_stderr(message: str) -> None:
    print(f"plasma-nb lite: {message}", file=sys.stderr, flush=True)


@dataclass
class BuildResult:
    """What ``build_site`` made (also written to ``plasma-site.json`` in the output)."""

    out: str
    offline: bool
    plasma_nb_version: str
    plasma_wheel: str
    plasma_wheel_from: str  # "source tree DIR" or "installed distribution"
    contents: list[str]
    extensions: dict[str, str]  # npm name -> version
    kernel_wheels: dict[str, str]  # canonical name -> version (what the kernel can load)
    pyodide_version: str
    preload: list[str]
    seconds: float = 0.0
    fingerprint: str | None = None
    build_version: str = BUILD_VERSION
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def require_lite_extra() -> None:
    missing = [m for m in LITE_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise LiteBuildError(
            f"building the site needs the lite extra: pip install 'plasma-nb[lite]' "
            f"(missing: {', '.join(missing)})"
        )


def kernel_pyodide_version() -> tuple[str, str]:
    """(Pyodide version, Python major.minor) that jupyterlite-pyodide-kernel is built for."""
    import importlib

    constants = importlib.import_module("jupyterlite_pyodide_kernel.constants")
    return str(constants.PYODIDE_VERSION), str(constants.PYODIDE_PYTHON_VERSION)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        raise LiteBuildError(f"{dist} is not installed: pip install 'plasma-nb[lite]'") from None


def find_extensions() -> dict[str, Path]:
    """{npm name: installed extension directory} for the extensions the site ships."""
    found: dict[str, Path] = {}
    for dist_name, wanted in EXTENSION_DISTS.items():
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            raise LiteBuildError(f"{dist_name} is not installed (the site ships its front-end "
                                 f"extension): pip install 'plasma-nb[lite]'") from None
        for f in dist.files or ():
            rel = str(f).replace("\\", "/")
            marker = "share/jupyter/labextensions/"
            if marker not in rel or not rel.endswith("/package.json"):
                continue
            name = rel.split(marker, 1)[1][: -len("/package.json")]
            if name in wanted:
                found[name] = Path(str(dist.locate_file(f))).resolve().parent
        for name in wanted:
            if name not in found:
                raise LiteBuildError(f"the front-end extension {name} of {dist_name} is not "
                                     f"installed: reinstall {dist_name}")
    return found


def extension_version(ext_dir: Path) -> str:
    return str(json.loads((ext_dir / "package.json").read_text("utf-8"))["version"])


def kernel_wheels(kernel_ext: Path) -> dict[str, Path]:
    """The kernel extension's own wheels (piplite, pyodide-kernel, stubs), newest per name."""
    chosen: dict[str, Path] = {}
    from packaging.version import Version

    for whl in sorted((kernel_ext / "static" / "pypi").glob("*.whl")):
        info = read_wheel(whl)
        if info.key not in KERNEL_WHEELS:
            continue
        best = chosen.get(info.key)
        if best is None or Version(info.version) > Version(read_wheel(best).version):
            chosen[info.key] = whl
    missing = [k for k in KERNEL_WHEELS if k not in chosen]
    if missing:
        raise LiteBuildError(f"the Pyodide kernel extension lacks its wheels: {missing}")
    return chosen


def _contents_dirs(contents: Sequence[Path | str] | None) -> list[Path]:
    dirs = [Path(c).expanduser().resolve() for c in contents] if contents else [
        default_contents()]
    for d in dirs:
        if not d.is_dir():
            raise LiteBuildError(f"contents directory {str(d)!r} does not exist")
    return dirs


def build_site(
    out: Path | str,
    *,
    contents: Sequence[Path | str] | None = None,
    offline: bool = False,
    log: Log = _log_to_stderr,
    cache: Path | None = None,
    fingerprint: str | None = None,
) -> BuildResult:
    """Build the JupyterLite site into ``out`` (replaced atomically when the build succeeds)."""
    started = time.monotonic()
    require_lite_extra()
    out = Path(out).expanduser().resolve()
    _check_out(out)
    contents_dirs = _contents_dirs(contents)
    cache = cache or cache_dir()
    config_dir = site_config_dir()
    extensions = find_extensions()
    pyodide_version, python_mm = kernel_pyodide_version()
    pins = read_pins(config_dir / "pyodide-packages.txt")
    widget_pins = {d: _version(d) for d in WIDGET_DISTS}
    hint = f"edit {config_dir / 'pyodide-packages.txt'}"

    if offline:  # before any slow step: a missing tool is a one-line error at once
        pyodide_dist.check_tools(pyodide_version, cache)

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="plasma-lite-") as tmp:
        lite_dir = Path(tmp) / "lite"
        lite_dir.mkdir()
        for name in SITE_CONFIG_FILES:
            if name.endswith(".json"):
                shutil.copy2(config_dir / name, lite_dir / name)
        # Exactly these extensions (the environment's others are ignored: see
        # ignore_sys_prefix in lite_site/jupyter_lite_config.json).
        labextensions = Path(tmp) / "labextensions"
        for name, ext_dir in extensions.items():
            shutil.copytree(ext_dir, labextensions / name,
                            ignore=shutil.ignore_patterns("*.map"))
        _merge_build_config(lite_dir / "jupyter_lite_config.json",
                            {"FederatedExtensionAddon": {
                                "extra_labextensions_path": [str(labextensions)]}})
        plasma_whl = plasma_wheel(Path(tmp) / "plasma-wheel", log)
        plasma_info = read_wheel(plasma_whl)
        kernel_own = kernel_wheels(extensions["@jupyterlite/pyodide-kernel-extension"])
        pypi = lite_dir / "pypi"
        pypi.mkdir()
        notes: list[str] = []

        if offline:
            npm_package = pyodide_dist.npm_pyodide(pyodide_version, cache, log)
            upstream = pyodide_dist.lock_info(npm_package)
            python_full = str(upstream["info"]["python"])
            downloaded = download_wheels({**pins, **widget_pins}, cache / "wheels",
                                         python_full, log)
            wheels = [*downloaded.values(), *kernel_own.values(), plasma_whl]
            infos = [read_wheel(w) for w in wheels]
            env = pyodide_environment(python_full)
            check_closure(infos, env, hint=hint)
            compiled = pyodide_dist.precompile(wheels, npm_package, cache, log)
            lock = pyodide_dist.write_dist(
                lite_dir / "static" / "pyodide", npm_package, compiled.wheels.values(),
                extra_depends={"plasma-nb": PLASMA_BROWSER_DEPENDS}, stdlib=compiled.stdlib,
            )
            shutil.copy2(compiled.wheels[plasma_whl], pypi / plasma_whl.name)
            kernel_versions = {k: v["version"] for k, v in lock["packages"].items()}
            preload = list(OFFLINE_PRELOAD)
            settings: dict[str, Any] = {
                "disablePyPIFallback": True,
                "loadPyodideOptions": {"packages": preload},
            }
        else:
            online_pins = {**widget_pins, **{n: pins[n] for n in ONLINE_EXTRA if n in pins}}
            downloaded = download_wheels(online_pins, cache / "wheels", python_mm, log)
            infos = [read_wheel(w) for w in downloaded.values()] + [plasma_info]
            env = pyodide_environment(python_mm + ".0")
            # The kernel's own packages come from Pyodide's CDN distribution.
            check_closure(infos, env, provided=[*pins, *kernel_own], hint=hint)
            for whl in [*downloaded.values(), plasma_whl]:
                shutil.copy2(whl, pypi / whl.name)
            kernel_versions = {i.key: i.version for i in infos}
            preload = []
            settings = {}
            notes.append("Pyodide and its packages load from the public CDN (online site)")

        _merge_kernel_settings(lite_dir / "jupyter-lite.json", settings)
        log("running jupyter lite build")
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
        try:
            cmd = [sys.executable, "-m", "jupyterlite_core", "build",
                   "--lite-dir", str(lite_dir), "--output-dir", str(staging)]
            for d in contents_dirs:
                cmd += ["--contents", str(d)]
            run(cmd, what="jupyter lite build", cwd=lite_dir, timeout=900)
            result = BuildResult(
                out=str(out),
                offline=offline,
                plasma_nb_version=plasma_info.version,
                plasma_wheel=plasma_whl.name,
                plasma_wheel_from=(f"source tree {source_tree()}" if source_tree()
                                   else "installed distribution"),
                contents=[str(d) for d in contents_dirs],
                extensions={n: extension_version(p) for n, p in sorted(extensions.items())},
                kernel_wheels=dict(sorted(kernel_versions.items())),
                pyodide_version=pyodide_version,
                preload=preload,
                seconds=round(time.monotonic() - started, 1),
                fingerprint=fingerprint,
                notes=notes,
            )
            (staging / MANIFEST).write_text(result.to_json())
            _replace_dir(staging, out)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    log(f"built {'offline ' if offline else ''}site in {out} ({result.seconds:.1f} s)")
    return result


def _check_out(out: Path) -> None:
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise LiteBuildError(f"{out} exists and is not a site built by plasma-nb: "
                             "choose another --out or remove it")
    if out == Path(out.anchor) or out == Path.home():
        raise LiteBuildError(f"refusing to build into {out}")


def _merge_build_config(path: Path, extra: dict[str, dict[str, Any]]) -> None:
    config = json.loads(path.read_text("utf-8"))
    for section, values in extra.items():
        config.setdefault(section, {}).update(values)
    path.write_text(json.dumps(config, indent=2) + "\n")


def _merge_kernel_settings(path: Path, settings: dict[str, Any]) -> None:
    config = json.loads(path.read_text("utf-8"))
    plugins = config.setdefault("jupyter-config-data", {}).setdefault("litePluginSettings", {})
    plugins.setdefault(KERNEL_PLUGIN, {}).update(settings)
    path.write_text(json.dumps(config, indent=2) + "\n")


def _replace_dir(new: Path, dest: Path) -> None:
    """Put ``new`` at ``dest``; an existing ``dest`` is moved aside first, then removed."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}-old-{os.getpid()}")
        os.replace(dest, old)
    os.replace(new, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --- the demo's site ------------------------------------------------------------------------


def _hash_tree(digest: Any, root: Path) -> None:
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if (not path.is_file() or "__pycache__" in path.parts or path.suffix == ".pyc"
                or path.name.startswith(".") or path.suffix in (".db", ".db-wal", ".db-shm")):
            continue
        digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")


def fingerprint(contents: Iterable[Path], offline: bool = True) -> str:
    """What a demo site depends on: plasma_nb (its version, and its source in a checkout),
    the notebooks, the site configuration and the toolchain's versions."""
    digest = hashlib.sha256()
    versions = {d: _version(d) for d in ("plasma-nb", "jupyterlite-core",
                                         "jupyterlite-pyodide-kernel", *WIDGET_DISTS)}
    digest.update(json.dumps({"versions": versions, "offline": offline,
                              "build": BUILD_VERSION,
                              "rewrite": pyodide_dist.REWRITE_VERSION}, sort_keys=True).encode())
    if source_tree() is not None:
        _hash_tree(digest, PACKAGE_DIR)  # an editable install changes without a new version
    for d in contents:
        digest.update(b"contents\0")
        _hash_tree(digest, d)
    config_dir = site_config_dir()
    for name in SITE_CONFIG_FILES:
        digest.update((config_dir / name).read_bytes())
    return digest.hexdigest()[:16]


def demo_site(*, rebuild: bool = False, log: Log = _log_to_stderr,
              cache: Path | None = None) -> tuple[Path, bool]:
    """The demo's offline site (built when missing or stale); returns (site, built now)."""
    require_lite_extra()
    cache = cache or cache_dir()
    contents = [default_contents()]
    fp = fingerprint(contents)
    sites = cache / "sites"
    site = sites / f"demo-{fp}"
    manifest = site / MANIFEST
    if not rebuild and manifest.is_file():
        try:
            if json.loads(manifest.read_text("utf-8")).get("fingerprint") == fp:
                return site, False
        except ValueError:
            pass
    log("building the demo site (cached until plasma_nb or the notebooks change)")
    build_site(site, contents=contents, offline=True, log=log, cache=cache, fingerprint=fp)
    for stale in sites.glob("demo-*"):
        if stale != site and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    return site, True
