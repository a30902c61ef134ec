"""Wheels for the site: read their metadata, build plasma_nb's, download the rest, rewrite.

All wheels the browser loads are pure Python (``py3-none-any``). Markers are
evaluated for Pyodide (``sys_platform == "emscripten"``), so CPython-only
dependencies such as httpx stay out.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

from .errors import LiteBuildError
from .resources import last_error_line, looks_like_network_error, source_tree

#: a fixed timestamp for rewritten wheels, so that the same input gives the same bytes
ZIP_DATE = (1980, 1, 1, 0, 0, 0)

Log = Callable[[str], None]


def canonical_name(name: str) -> str:
    """PEP 503 normalized name: ``Typing_Extensions`` -> ``typing-extensions``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class WheelInfo:
    """What the build needs to know about one wheel."""

    path: Path
    name: str  # as written in METADATA
    version: str
    requires: tuple[str, ...]  # Requires-Dist lines, markers included
    top_level: tuple[str, ...]  # importable top-level names
    tags: tuple[str, ...] = field(default=())

    @property
    def key(self) -> str:
        return canonical_name(self.name)


def read_wheel(path: Path) -> WheelInfo:
    """Parse a wheel's METADATA, WHEEL tags and top-level importable names."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            dist_infos = {n.split("/", 1)[0] for n in names if ".dist-info/" in n}
            dist_info = next((d for d in sorted(dist_infos) if d.endswith(".dist-info")), None)
            if dist_info is None:
                raise LiteBuildError(f"{path.name} is not a wheel (no .dist-info)")
            meta = HeaderParser().parsestr(zf.read(f"{dist_info}/METADATA").decode("utf-8"))
            wheel = HeaderParser().parsestr(zf.read(f"{dist_info}/WHEEL").decode("utf-8"))
            top_level_txt = f"{dist_info}/top_level.txt"
            if top_level_txt in names:
                top = [
                    line.strip().replace("/", ".")
                    for line in zf.read(top_level_txt).decode("utf-8").splitlines()
                    if line.strip()
                ]
            else:
                top = _top_level_from_listing(names)
    except zipfile.BadZipFile:
        raise LiteBuildError(f"{path} is not a valid wheel (bad zip file)") from None
    return WheelInfo(
        path=path,
        name=str(meta["Name"]),
        version=str(meta["Version"]),
        requires=tuple(str(r) for r in meta.get_all("Requires-Dist") or ()),
        top_level=tuple(sorted(set(top))),
        tags=tuple(str(t) for t in wheel.get_all("Tag") or ()),
    )


def _top_level_from_listing(names: Iterable[str]) -> list[str]:
    top: set[str] = set()
    for name in names:
        first, _, rest = name.partition("/")
        if first.endswith((".dist-info", ".data")):
            continue
        if rest:
            if rest.endswith(".py"):  # a package (regular or namespace) of modules
                top.add(first)
        elif first.endswith(".py"):
            top.add(first[:-3])
        elif first.endswith(".so"):
            top.add(first.split(".", 1)[0])
    return sorted(top)


def pyodide_environment(python_full_version: str) -> dict[str, str]:
    """PEP 508 marker values inside Pyodide (Emscripten, wasm32, CPython)."""
    major_minor = ".".join(python_full_version.split(".")[:2])
    return {
        "implementation_name": "cpython",
        "implementation_version": python_full_version,
        "os_name": "posix",
        "platform_machine": "wasm32",
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Emscripten",
        "platform_version": "",
        "python_full_version": python_full_version,
        "python_version": major_minor,
        "sys_platform": "emscripten",
    }


def applicable_requirements(info: WheelInfo, env: Mapping[str, str]) -> list[Any]:
    """The ``packaging`` Requirements of ``info`` that apply in ``env`` (no extras)."""
    from packaging.requirements import InvalidRequirement, Requirement

    out = []
    for line in info.requires:
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            raise LiteBuildError(f"{info.path.name}: bad requirement {line!r}: {exc}") from None
        if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
            continue
        out.append(req)
    return out


def check_closure(wheels: Iterable[WheelInfo], env: Mapping[str, str], *,
                  provided: Iterable[str] = (), hint: str) -> None:
    """Every requirement of every wheel is met by a wheel of the set (name and version)."""
    from packaging.version import Version

    by_key = {w.key: w for w in wheels}
    provided_keys = {canonical_name(p) for p in provided}
    problems = []
    for info in by_key.values():
        for req in applicable_requirements(info, env):
            key = canonical_name(req.name)
            if key in provided_keys:
                continue
            dep = by_key.get(key)
            if dep is None:
                problems.append(f"{info.name} {info.version} needs {req} (missing)")
            elif not req.specifier.contains(Version(dep.version), prereleases=True):
                problems.append(f"{info.name} {info.version} needs {req}, found {dep.version}")
    if problems:
        raise LiteBuildError(f"the browser's packages do not fit together: "
                             f"{'; '.join(sorted(problems))} ({hint})")


# --- plasma_nb's own wheel --------------------------------------------------------------


def plasma_wheel(out_dir: Path, log: Log) -> Path:
    """plasma_nb as a pure wheel: built from the source tree, or repacked from the install."""
    out_dir.mkdir(parents=True, exist_ok=True)
    root = source_tree()
    if root is not None:
        log(f"building the plasma_nb wheel from {root}")
        return _build_from_source(root, out_dir)
    log("packing the plasma_nb wheel from the installed distribution")
    return repack_installed("plasma-nb", out_dir)


def _build_from_source(root: Path, out_dir: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="plasma-wheel-") as tmp:
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
               "--disable-pip-version-check", "-w", tmp, str(root)]
        if importlib.util.find_spec("hatchling") is not None:
            # No isolated build environment: faster, and needs no network.
            cmd.insert(4, "--no-build-isolation")
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        wheels = sorted(Path(tmp).glob("plasma_nb-*.whl"))
        if proc.returncode != 0 or len(wheels) != 1:
            output = proc.stdout + proc.stderr
            reason = last_error_line(output)
            if looks_like_network_error(output):
                reason = f"no network to fetch the build backend (hatchling)? {reason}"
            raise LiteBuildError(f"building the plasma_nb wheel from {root} failed: {reason}")
        dest = out_dir / wheels[0].name
        shutil.copy2(wheels[0], dest)
        return dest


def repack_installed(dist_name: str, out_dir: Path) -> Path:
    """A wheel made of an installed distribution's files (as listed in its RECORD)."""
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise LiteBuildError(f"{dist_name} is not installed: cannot pack its wheel") from None
    files = dist.files
    if not files:
        raise LiteBuildError(f"{dist_name} has no RECORD: cannot pack its wheel")
    name = dist.metadata["Name"]
    version = dist.version
    dist_info = f"{canonical_name(name).replace('-', '_')}-{version}.dist-info"
    skip_meta = {"INSTALLER", "REQUESTED", "RECORD", "direct_url.json"}
    with tempfile.TemporaryDirectory(prefix="plasma-repack-") as tmp:
        tree = Path(tmp)
        for f in files:
            rel = str(f).replace("\\", "/")
            if rel.startswith("../") or "/__pycache__/" in f"/{rel}" or rel.endswith(".pyc"):
                continue  # scripts live outside site-packages; bytecode is per interpreter
            parts = rel.split("/")
            if parts[0].endswith(".dist-info"):
                if parts[-1] in skip_meta:
                    continue
                parts[0] = dist_info
            src = Path(str(dist.locate_file(f)))
            if not src.is_file():
                continue
            dest = tree.joinpath(*parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
        if not (tree / dist_info / "WHEEL").is_file():
            (tree / dist_info).mkdir(parents=True, exist_ok=True)
            (tree / dist_info / "WHEEL").write_text(
                "Wheel-Version: 1.0\nGenerator: plasma-nb\nRoot-Is-Purelib: true\n"
                "Tag: py3-none-any\n"
            )
        dest_whl = out_dir / f"{dist_info[: -len('.dist-info')]}-py3-none-any.whl"
        pack_wheel(tree, dest_whl)
    return dest_whl


# --- downloads from PyPI ------------------------------------------------------------------


def _wheel_file_key(filename: str) -> tuple[str, str]:
    name, version = filename.split("-")[:2]
    return canonical_name(name), version


def download_wheels(pins: Mapping[str, str], cache: Path, python_version: str, log: Log,
                    ) -> dict[str, Path]:
    """``{canonical name: wheel}`` for pure wheels ``name==version``, via a download cache.

    Only what the cache lacks is fetched, in one ``pip download`` (no dependencies:
    the pins are the whole set, checked by :func:`check_closure`).
    """
    cache.mkdir(parents=True, exist_ok=True)
    have: dict[tuple[str, str], Path] = {}
    for whl in cache.glob("*.whl"):
        try:
            have[_wheel_file_key(whl.name)] = whl
        except ValueError:
            continue
    from packaging.version import Version

    def cached(name: str, version: str) -> Path | None:
        key = canonical_name(name)
        for (k, v), path in have.items():
            if k == key and Version(v) == Version(version):
                return path
        return None

    missing = {name: v for name, v in pins.items() if cached(name, v) is None}
    if missing:
        log(f"downloading {len(missing)} wheels from PyPI: "
            + ", ".join(f"{n}=={v}" for n, v in sorted(missing.items())))
        with tempfile.TemporaryDirectory(prefix="plasma-dl-", dir=cache) as tmp:
            cmd = [
                sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                "--python-version", python_version, "--platform", "any",
                "--implementation", "py", "--disable-pip-version-check",
                "-d", tmp, *(f"{n}=={v}" for n, v in sorted(missing.items())),
            ]
            env = {**os.environ, "PIP_NO_INPUT": "1"}
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
            if proc.returncode != 0:
                output = proc.stdout + proc.stderr
                if not looks_like_network_error(output):
                    # Without retries pip hides why an index failed: ask it again, verbosely.
                    again = subprocess.run([*cmd, "-vv"], capture_output=True, text=True,
                                           timeout=600, env=env)
                    if looks_like_network_error(again.stdout + again.stderr):
                        output += again.stdout + again.stderr
                if looks_like_network_error(output):
                    raise LiteBuildError(
                        "cannot download wheels from PyPI (is the network available?): "
                        + last_error_line(output)
                    )
                raise LiteBuildError(
                    f"pip download of {', '.join(sorted(missing))} failed: "
                    + last_error_line(output)
                )
            for whl in Path(tmp).glob("*.whl"):
                dest = cache / whl.name
                os.replace(whl, dest)  # atomic: a concurrent build never sees half a file
                have[_wheel_file_key(whl.name)] = dest
    out: dict[str, Path] = {}
    for name, version in pins.items():
        path = cached(name, version)
        if path is None:
            raise LiteBuildError(f"pip did not download {name}=={version} as a pure wheel")
        out[canonical_name(name)] = path
    return out


def read_pins(path: Path) -> dict[str, str]:
    """``name==version`` lines (comments and blank lines ignored)."""
    pins: dict[str, str] = {}
    for n, raw in enumerate(path.read_text("utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not name.strip() or not version.strip():
            raise LiteBuildError(f"{path}:{n}: expected NAME==VERSION, got {raw.strip()!r}")
        pins[name.strip()] = version.strip()
    return pins


# --- rewriting wheels -----------------------------------------------------------------------


def extract_wheel(src: Path, dest: Path, *, drop: Callable[[str], bool] = lambda _: False,
                  ) -> None:
    with zipfile.ZipFile(src) as zf:
        for member in zf.infolist():
            name = member.filename
            if member.is_dir() or drop(name) or name.endswith("/RECORD") and ".dist-info/" in name:
                continue
            if name.startswith("/") or ".." in name.split("/"):
                raise LiteBuildError(f"{src.name} has an unsafe path {name!r}")
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(member))


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def pack_wheel(tree: Path, dest: Path) -> None:
    """Zip a wheel's unpacked tree with a fresh RECORD, deterministically."""
    files = sorted(
        (p.relative_to(tree).as_posix(), p) for p in tree.rglob("*") if p.is_file()
    )
    dist_infos = sorted({rel.split("/", 1)[0] for rel, _ in files
                         if rel.split("/", 1)[0].endswith(".dist-info")})
    if len(dist_infos) != 1:
        raise LiteBuildError(f"cannot pack {dest.name}: expected one .dist-info, "
                             f"found {dist_infos}")
    record_name = f"{dist_infos[0]}/RECORD"
    # .dist-info last, as wheel tools do; RECORD at the very end.
    files.sort(key=lambda item: (item[0].startswith(dist_infos[0] + "/"), item[0]))
    record_lines = []
    tmp = dest.with_name(dest.name + ".part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for rel, path in files:
            if rel == record_name:
                continue
            data = path.read_bytes()
            info = zipfile.ZipInfo(rel, date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
            record_lines.append(f"{rel},{_record_hash(data)},{len(data)}")
        record_lines.append(f"{record_name},,")
        info = zipfile.ZipInfo(record_name, date_time=ZIP_DATE)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        zf.writestr(info, "\n".join(record_lines) + "\n")
    os.replace(tmp, dest)
