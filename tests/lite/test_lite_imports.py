"""plasma_nb.lite is build-time only: it imports the standard library, itself and the
``lite`` extra's ``packaging``; the engines never import it (parsed, not imported)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "plasma_nb"
ALLOWED_THIRD_PARTY = {"packaging"}


def imports_of(path: Path) -> list[tuple[int, str, int]]:
    """(line, module, relative level) of every import statement in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, node.module or "", node.level))
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"):
            found.append((node.lineno, node.args[0].value, 0))
    return found


def test_lite_imports_only_the_stdlib_itself_and_the_lite_extra() -> None:
    bad = []
    for path in sorted((PACKAGE / "lite").rglob("*.py")):
        for line, module, level in imports_of(path):
            top = module.partition(".")[0]
            if level == 1 or top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY:
                continue
            if module.startswith(("jupyterlite_pyodide_kernel", "plasma_nb.lite")):
                continue  # the kernel's constants (from the extra); itself
            bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {module or '.'} "
                       f"(level {level})")
    assert not bad, "plasma_nb.lite imports more than it may:\n" + "\n".join(bad)


def test_the_engines_never_import_lite() -> None:
    bad = []
    for layer in ("core", "client", "server", "notebook"):
        for path in sorted((PACKAGE / layer).rglob("*.py")):
            for line, module, level in imports_of(path):
                if "lite" in module.split(".") and (level > 0 or module.startswith("plasma_nb")):
                    bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {module}")
    assert not bad, "\n".join(bad)
