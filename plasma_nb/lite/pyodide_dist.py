"""The self-hosted Pyodide of an ``--offline`` site.

Pyodide's core comes from the npm package ``pyodide`` (the version
jupyterlite-pyodide-kernel pins); it ships no wheels. The wheels the kernel loads
are pure wheels from PyPI. PyPI's wheels are not byte-identical to Pyodide's
rebuilt ones, so ``pyodide-lock.json`` is regenerated: it lists exactly the wheels
present, with their sha256, and dependencies read from each wheel's METADATA with
Pyodide's markers (research/jupyterlite-offline.md, Q1). The ``pyodide-lock``
package is not used: its 0.1.2 cannot read Pyodide 314's lock.

The wheels and the standard library's zip are rewritten once (and cached) with
Python 3.14 bytecode compiled by Pyodide itself under Node: the npm package's stdlib
is sources only, so without it each kernel start compiles every module it imports
(measured: several seconds). Front-end files inside wheels
(``*.data/data/share/...``) are dropped from the kernel's copies: the site serves
them as extensions.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import LiteBuildError
from .resources import last_error_line, looks_like_network_error, require_tool
from .wheels import (
    ZIP_DATE,
    Log,
    WheelInfo,
    applicable_requirements,
    canonical_name,
    extract_wheel,
    pack_wheel,
    pyodide_environment,
    read_wheel,
    sha256_file,
)

#: the files of the npm package that a site needs (no wheels: the npm package has none)
CORE_FILES = ("pyodide.mjs", "pyodide.js", "pyodide.asm.mjs", "pyodide.asm.wasm",
              "python_stdlib.zip", "package.json")

#: bump when the rewriting of wheels changes, to invalidate the cached rewritten wheels
REWRITE_VERSION = "1"

COMPILER = Path(__file__).with_name("compile_pyc.mjs")


NODE_WHY = ("`--offline` compiles the kernel's bytecode with Pyodide under Node "
            "(install Node.js >= 20)")


def _npm_why(version: str) -> str:
    return f"`--offline` fetches Pyodide {version} with it (install Node.js >= 20 with npm)"


def _npm_package_dir(version: str, cache: Path) -> Path:
    return cache / "npm" / f"pyodide-{version}" / "package"


def check_tools(version: str, cache: Path) -> None:
    """Node (always) and npm (unless Pyodide is cached) for an ``--offline`` build."""
    require_tool("node", NODE_WHY)
    if not _is_complete(_npm_package_dir(version, cache)):
        require_tool("npm", _npm_why(version))


def _is_complete(package: Path) -> bool:
    return all((package / f).is_file() for f in (*CORE_FILES, "pyodide-lock.json"))


def npm_pyodide(version: str, cache: Path, log: Log) -> Path:
    """The unpacked npm package ``pyodide@version`` (fetched once with npm, then cached)."""
    package = _npm_package_dir(version, cache)
    root = package.parent
    if _is_complete(package):
        return package
    npm = require_tool("npm", _npm_why(version))
    root.parent.mkdir(parents=True, exist_ok=True)
    log(f"fetching pyodide@{version} with npm")
    with tempfile.TemporaryDirectory(prefix="plasma-npm-", dir=root.parent) as tmp:
        proc = subprocess.run(
            [npm, "pack", f"pyodide@{version}", "--pack-destination", tmp, "--loglevel=error",
             "--no-audit", "--no-fund"],
            capture_output=True, text=True, timeout=600, cwd=tmp,
        )
        tarballs = sorted(Path(tmp).glob("pyodide-*.tgz"))
        if proc.returncode != 0 or len(tarballs) != 1:
            output = proc.stdout + proc.stderr
            if looks_like_network_error(output):
                raise LiteBuildError(f"cannot download pyodide@{version} from the npm "
                                     f"registry (is the network available?): "
                                     f"{last_error_line(output)}")
            raise LiteBuildError(f"npm pack pyodide@{version} failed: {last_error_line(output)}")
        unpacked = Path(tmp) / "unpacked"
        with tarfile.open(tarballs[0]) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(unpacked, filter="data")
            else:  # pragma: no cover - Python < 3.11.4
                tar.extractall(unpacked)  # npm's own tarball
        if not (unpacked / "package" / "pyodide.mjs").is_file():
            raise LiteBuildError(f"pyodide@{version} from npm has no pyodide.mjs")
        shutil.rmtree(root, ignore_errors=True)
        os.replace(unpacked, root)
    return package


def lock_info(npm_package: Path) -> dict[str, Any]:
    """The upstream lock (its ``info``: Python version, ABI, platform)."""
    return dict(json.loads((npm_package / "pyodide-lock.json").read_text("utf-8")))


def kernel_copy_drop(name: str) -> bool:
    """Files of a wheel the kernel never uses: data installed under sys.prefix."""
    first, _, rest = name.partition("/")
    return first.endswith(".data") and rest.startswith("data/")


@dataclass
class Compiled:
    """Rewritten files: ``wheels`` maps each input wheel to its copy with bytecode."""

    wheels: dict[Path, Path]
    stdlib: Path  # python_stdlib.zip with a .pyc beside every .py


def precompile(wheels: Iterable[Path], npm_package: Path, cache: Path, log: Log) -> Compiled:
    """Add Python 3.14 bytecode to the wheels and to the standard library's zip.

    The npm package's ``python_stdlib.zip`` holds sources only, so without this every
    kernel start compiles each stdlib module it imports, and every wheel's too: the
    bytecode makes the kernel start seconds faster (docs/browser.md, "Start-up time").
    Wheels also lose their sys.prefix data (front-end files the site serves anyway).
    Results are cached by the inputs' sha256 and the Pyodide version, so only new
    wheels (usually plasma_nb's) go through Node again.
    """
    version = json.loads((npm_package / "package.json").read_text("utf-8"))["version"]
    root = cache / "pyc" / version
    out: dict[Path, Path] = {}
    todo: dict[Path, Path] = {}
    for whl in wheels:
        key = hashlib.sha256(
            f"{REWRITE_VERSION}:{version}:{sha256_file(whl)}".encode()
        ).hexdigest()[:20]
        dest = root / key / whl.name
        out[whl] = dest
        if not dest.is_file():
            todo[whl] = dest
    stdlib_src = npm_package / "python_stdlib.zip"
    stdlib_key = hashlib.sha256(
        f"{REWRITE_VERSION}:{version}:{sha256_file(stdlib_src)}".encode()).hexdigest()[:20]
    stdlib = root / f"stdlib-{stdlib_key}" / "python_stdlib.zip"
    if not todo and stdlib.is_file():
        return Compiled(out, stdlib)
    node = require_tool("node", NODE_WHY)
    log(f"compiling Python 3.14 bytecode with Pyodide ({len(todo)} wheels"
        f"{', the standard library' if not stdlib.is_file() else ''})")
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="plasma-pyc-", dir=root) as tmp:
        work = Path(tmp) / "work"
        trees = {}
        for n, whl in enumerate(todo):
            tree = work / "wheels" / f"w{n}"
            extract_wheel(whl, tree, drop=kernel_copy_drop)
            trees[whl] = tree
        if not stdlib.is_file():
            with zipfile.ZipFile(stdlib_src) as zf:
                zf.extractall(work / "stdlib")
        else:
            (work / "wheels").mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([node, str(COMPILER), str(npm_package), str(work)],
                              capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise LiteBuildError(f"compiling bytecode with Pyodide under Node failed: "
                                 f"{last_error_line(proc.stdout + proc.stderr)}")
        try:
            report = json.loads(proc.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise LiteBuildError("compiling bytecode with Pyodide under Node printed no "
                                 f"report: {last_error_line(proc.stdout + proc.stderr)}"
                                 ) from None
        for failure in report.get("failed", []):
            # A module that does not compile (test data in a wheel...) keeps its source only.
            log(f"note: some files of {failure['tree']} did not compile; they stay source-only")
        for whl, tree in trees.items():
            dest = todo[whl]
            dest.parent.mkdir(parents=True, exist_ok=True)
            pack_wheel(tree, dest)
            # One cached copy per file name: an editable plasma_nb makes a new wheel of the
            # same name at every change, and the older ones are never asked for again.
            for stale in root.glob(f"*/{whl.name}"):
                if stale != dest:
                    shutil.rmtree(stale.parent, ignore_errors=True)
        if not stdlib.is_file():
            _repack_stdlib(stdlib_src, work / "stdlib", stdlib)
    return Compiled(out, stdlib)


def _repack_stdlib(original: Path, tree: Path, dest: Path) -> None:
    """The original zip's members, unchanged and in order, plus each module's .pyc."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with zipfile.ZipFile(original) as src, zipfile.ZipFile(
            part, "w", compression=zipfile.ZIP_DEFLATED) as out:
        names = set()
        for info in src.infolist():
            out.writestr(info, src.read(info))
            names.add(info.filename)
        for pyc in sorted(tree.rglob("*.pyc")):
            rel = pyc.relative_to(tree).as_posix()
            if rel in names or "__pycache__" in rel:
                continue
            info = zipfile.ZipInfo(rel, date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            out.writestr(info, pyc.read_bytes())
    os.replace(part, dest)


def lock_entry(info: WheelInfo, file_name: str, sha256: str, depends: Iterable[str],
               ) -> dict[str, Any]:
    return {
        "name": info.name,
        "version": info.version,
        "file_name": file_name,
        "install_dir": "site",
        "sha256": sha256,
        "package_type": "package",
        "imports": list(info.top_level),
        "depends": sorted(set(depends)),
        "unvendored_tests": False,
    }


def write_dist(dest: Path, npm_package: Path, wheels: Iterable[Path],
               extra_depends: Mapping[str, Iterable[str]] | None = None,
               stdlib: Path | None = None) -> dict[str, Any]:
    """Assemble ``dest`` (the site's ``static/pyodide``): core files, wheels, a new lock.

    ``stdlib`` replaces the npm package's ``python_stdlib.zip`` (the precompiled one).

    ``extra_depends`` adds lock dependencies by canonical name (``{"plasma-nb":
    ["anywidget", ...]}``): what a package needs in the browser beyond its METADATA.
    Returns the lock.
    """
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in CORE_FILES:
        shutil.copy2(npm_package / name, dest / name)
    if stdlib is not None:
        shutil.copy2(stdlib, dest / "python_stdlib.zip")
    upstream = lock_info(npm_package)
    env = pyodide_environment(upstream["info"]["python"])
    infos: dict[str, WheelInfo] = {}
    for whl in wheels:
        target = dest / whl.name
        shutil.copy2(whl, target)
        info = read_wheel(target)
        if info.key in infos:
            raise LiteBuildError(f"two wheels for {info.name}: {infos[info.key].path.name} "
                                 f"and {whl.name}")
        infos[info.key] = info
    extra = {canonical_name(k): [canonical_name(d) for d in v]
             for k, v in (extra_depends or {}).items()}
    packages = {}
    for key, info in sorted(infos.items()):
        depends = [canonical_name(r.name) for r in applicable_requirements(info, env)]
        depends += extra.get(key, [])
        missing = [d for d in depends if d not in infos]
        if missing:
            raise LiteBuildError(f"{info.name} needs {', '.join(missing)}, which the "
                                 "offline Pyodide does not have")
        packages[key] = lock_entry(info, info.path.name, sha256_file(info.path), depends)
    # Every top-level key of the upstream lock is kept ("info", and "tool" in 314.0.7),
    # except its packages: their files are not in the npm package.
    lock = {**upstream, "packages": packages}
    (dest / "pyodide-lock.json").write_text(json.dumps(lock, indent=1, sort_keys=True) + "\n")
    return lock
