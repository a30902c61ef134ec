"""Imports point one way: core <- client <- notebook, and core <- server (DESIGN.md section 2).

Every ``.py`` file under ``plasma_nb/`` is parsed, never imported, so the check holds for files
whose dependencies are not installed, and it sees imports inside functions and under
``TYPE_CHECKING`` as well as module-level ones.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "plasma_nb"


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    module: str
    imported: str
    rule: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.module} imports {self.imported!r}: {self.rule}"


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _layer_rule(module: str, imported: str) -> str | None:
    """Why ``module`` may not import ``imported``, or None if it may."""
    if _within(module, "plasma_nb.core"):
        top = imported.partition(".")[0]
        if top in sys.stdlib_module_names or _within(imported, "plasma_nb.core"):
            return None
        return "plasma_nb.core imports only the standard library and plasma_nb.core"
    if _within(module, "plasma_nb.client"):
        for forbidden in ("plasma_nb.server", "plasma_nb.notebook", "starlette", "uvicorn"):
            if _within(imported, forbidden):
                return f"plasma_nb.client never imports {forbidden}"
    if _within(module, "plasma_nb.server"):
        for forbidden in ("plasma_nb.client", "plasma_nb.notebook"):
            if _within(imported, forbidden):
                return f"plasma_nb.server never imports {forbidden}"
    return None


def _resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    package = module.split(".") if is_package else module.split(".")[:-1]
    if level - 1 >= len(package):
        raise ValueError(f"relative import of level {level} goes above the top of {module!r}")
    base = package[: len(package) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _imported_names(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The absolute module names an import statement (or a literal dynamic import) pulls in."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = _resolve_relative(module, is_package, node.level, node.module)
        else:
            base = node.module or ""
        if _within(base, "plasma_nb"):
            # `from plasma_nb import server` imports the submodule plasma_nb.server: check each
            # name as a possible submodule (plasma_nb.core.<name> stays inside core either way).
            return [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"] or [base]
        return [base]
    if (
        isinstance(node, ast.Call)
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name in ("import_module", "__import__"):
            return [node.args[0].value]
    return []


def check_source(source: str, module: str, *, path: str = "<string>") -> list[Violation]:
    """Every import in ``source`` (the text of ``module``) that breaks the layering."""
    is_package = path.endswith("__init__.py")
    violations = []
    for node in ast.walk(ast.parse(source, filename=path)):
        line = getattr(node, "lineno", 0)
        try:
            names = _imported_names(node, module, is_package)
        except ValueError as exc:
            violations.append(Violation(path, line, module, "?", str(exc)))
            continue
        for imported in names:
            rule = _layer_rule(module, imported)
            if rule is not None:
                violations.append(Violation(path, line, module, imported, rule))
    return violations


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def check_package(root: Path) -> list[Violation]:
    violations = []
    for path in sorted(root.rglob("*.py")):
        rel = str(path.relative_to(root.parent))
        violations += check_source(path.read_text("utf-8"), module_name(path, root), path=rel)
    return violations


def test_plasma_nb_imports_point_one_way() -> None:
    violations = check_package(PACKAGE_DIR)
    assert not violations, "layering violations:\n" + "\n".join(map(str, violations))


@pytest.mark.parametrize(
    ("module", "path", "source", "imported"),
    [
        ("plasma_nb.core.schema", "plasma_nb/core/schema.py", "import httpx\n", "httpx"),
        (
            "plasma_nb.core.query",
            "plasma_nb/core/query.py",
            "def f():\n    from ..client import engine\n",
            "plasma_nb.client.engine",
        ),
        (
            "plasma_nb.core",
            "plasma_nb/core/__init__.py",
            "from .. import errors\n",
            "plasma_nb.errors",
        ),
        (
            "plasma_nb.client.sync",
            "plasma_nb/client/sync.py",
            "async def f():\n    import starlette.requests\n",
            "starlette.requests",
        ),
        (
            "plasma_nb.client.live",
            "plasma_nb/client/live.py",
            "from ..notebook.widgets import Table\n",
            "plasma_nb.notebook.widgets.Table",
        ),
        (
            "plasma_nb.server.app",
            "plasma_nb/server/app.py",
            "from plasma_nb import client\n",
            "plasma_nb.client",
        ),
        (
            "plasma_nb.server.app",
            "plasma_nb/server/app.py",
            "import importlib\nimportlib.import_module('plasma_nb.notebook')\n",
            "plasma_nb.notebook",
        ),
    ],
)
def test_checker_reports_violations(module: str, path: str, source: str, imported: str) -> None:
    violations = check_source(source, module, path=path)
    assert [v.imported for v in violations] == [imported]
    assert path in str(violations[0])


def test_checker_accepts_allowed_imports() -> None:
    core = (
        "from __future__ import annotations\nimport sqlite3, typing\n"
        "from . import errors\nfrom .schema import Table\nfrom plasma_nb.core import query\n"
    )
    assert check_source(core, "plasma_nb.core", path="plasma_nb/core/__init__.py") == []
    client = "import httpx\nfrom ..core import schema\nfrom plasma_nb.core.errors import X\n"
    assert check_source(client, "plasma_nb.client.sync", path="plasma_nb/client/sync.py") == []
    server = "import starlette.routing\nfrom ..core.protocol import Push\n"
    assert check_source(server, "plasma_nb.server.app", path="plasma_nb/server/app.py") == []
    notebook = "from ..client import Client\nimport anywidget\n"
    assert check_source(notebook, "plasma_nb.notebook.widgets", path="x/widgets.py") == []


def test_relative_import_above_the_top_is_reported() -> None:
    [violation] = check_source("from ... import x\n", "plasma_nb.core", path="core/__init__.py")
    assert "goes above the top" in violation.rule


def test_module_names_from_paths() -> None:
    root = Path("/repo/plasma_nb")
    assert module_name(root / "core" / "__init__.py", root) == "plasma_nb.core"
    assert module_name(root / "core" / "schema.py", root) == "plasma_nb.core.schema"
    assert module_name(root / "__init__.py", root) == "plasma_nb"
