"""The notebook layer: ``%plasma`` magics, live tables and display. Imported lazily."""

from __future__ import annotations

from typing import Any

from ..core.errors import NotSupportedYet

__all__ = ["load_ipython_extension"]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext plasma_nb``: the magics arrive with the notebook issue."""
    raise NotSupportedYet("%load_ext plasma_nb", "the %plasma magics are not built yet")
