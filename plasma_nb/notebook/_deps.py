"""Optional dependencies of the notebook layer, imported only when a feature needs them.

The package itself imports in Pyodide, where pandas, DuckDB or anywidget may be
missing; a feature that needs one says which, and how to install it.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

from ..core.errors import MissingDependency

__all__ = ["IN_PYODIDE", "MissingDependency", "has", "require"]

IN_PYODIDE = sys.platform == "emscripten"

# What to install for each optional module (the pip name, when it differs).
_PIP_NAMES = {"IPython": "ipython"}


def _hint() -> str:
    if IN_PYODIDE:
        return "in JupyterLite: %pip install it in a cell"
    return "or pip install 'plasma-nb[notebook]'"


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` or raise ``MissingDependency`` naming ``feature``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependency(_PIP_NAMES.get(module, module), feature, _hint()) from None


def has(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it if it is not loaded)."""
    if module in sys.modules:
        return sys.modules[module] is not None  # None: imports of it are blocked
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
