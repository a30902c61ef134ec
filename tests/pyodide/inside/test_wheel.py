"""The interpreter and the installed wheel are what the browser gets."""

from __future__ import annotations

import os
import sqlite3
import sys
from importlib.metadata import distribution
from pathlib import Path

from packaging.requirements import Requirement


def test_interpreter_is_pyodide_314() -> None:
    assert sys.platform == "emscripten"
    assert sys.version_info[:2] == (3, 14)
    # DESIGN section 7: the replica uses nothing newer than Pyodide's SQLite.
    assert sqlite3.sqlite_version_info[:2] == (3, 39), sqlite3.sqlite_version
    # Built into the interpreter: nothing to loadPackage (the npm package has no wheels).
    assert "_sqlite3" in sys.builtin_module_names


def test_plasma_nb_comes_from_the_wheel() -> None:
    import plasma_nb

    where = Path(plasma_nb.__file__).resolve()
    assert "site-packages" in where.parts, where
    dist = distribution("plasma-nb")
    assert dist.version == plasma_nb.__version__
    # The file this test run built, not some other installed copy.
    wheel = os.environ.get("PLASMA_PYODIDE_WHEEL", "")
    assert wheel.startswith(f"plasma_nb-{dist.version}-py3-none-any"), wheel


def test_no_dependency_applies_in_pyodide() -> None:
    """micropip would install nothing more: every requirement is CPython-only or an extra."""
    env = {"sys_platform": "emscripten", "platform_system": "Emscripten", "extra": ""}
    needed = [
        r for r in map(Requirement, distribution("plasma-nb").requires or ())
        if r.marker is None or r.marker.evaluate(env)
    ]
    assert needed == []


def test_example_schema_ships_in_the_wheel(todos) -> None:
    assert todos.schema.version == "1"
    assert {"add_todo", "mark_done", "rename", "delete_todo"} <= set(todos.mutators)
