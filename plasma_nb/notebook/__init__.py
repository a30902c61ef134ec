"""The notebook layer: ``%plasma`` magics, live tables and display. Imported lazily.

``%load_ext plasma_nb`` registers the magics (``PlasmaMagics``), shows live
queries as ``LiveTable`` widgets, and awaits ``%plasma connect`` / ``sync`` lines.
Nothing here imports IPython, anywidget, pandas or DuckDB until a feature needs
it, so the package imports in a bare Pyodide kernel; a feature whose dependency
is missing says which one and how to install it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._deps import MissingDependency

if TYPE_CHECKING:
    from .duck import DuckEngine
    from .live_table import LiveTable
    from .magics import PlasmaMagics
    from .rerun import RerunLive
    from .sync_status import SyncStatus

__all__ = [
    "DuckEngine",
    "LiveTable",
    "MissingDependency",
    "PlasmaMagics",
    "RerunLive",
    "SyncStatus",
    "enable_display",
    "load_ipython_extension",
    "unload_ipython_extension",
]

_LAZY = {
    "LiveTable": (".live_table", "anywidget", "LiveTable"),
    "SyncStatus": (".sync_status", "anywidget", "SyncStatus"),
    "PlasmaMagics": (".magics", "IPython", "the %plasma magics"),
    "DuckEngine": (".duck", None, ""),
    "RerunLive": (".rerun", None, ""),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'plasma_nb.notebook' has no attribute {name!r}")
    import importlib

    from ._deps import require

    module, needs, feature = _LAZY[name]
    if needs is not None:
        require(needs, feature)
    return getattr(importlib.import_module(module, __name__), name)


def enable_display(ip: Any = None) -> None:
    """Show live queries as live tables in IPython (``%load_ext plasma_nb`` does this)."""
    from .display import enable

    if ip is None:
        from IPython import get_ipython

        ip = get_ipython()
    if ip is not None:
        enable(ip)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext plasma_nb``: the magics, the display of live queries, awaited lines."""
    from ._deps import require

    require("IPython", "%load_ext plasma_nb")
    from .display import enable
    from .magics import PlasmaMagics, show_usage_error
    from .transformer import MAGICS_NAME, AwaitPlasma

    previous = ipython.user_ns.get(MAGICS_NAME)
    if isinstance(previous, PlasmaMagics):
        unload_ipython_extension(ipython)
    magics = PlasmaMagics(ipython)
    if isinstance(previous, PlasmaMagics):  # %reload_ext keeps the connections
        magics.connections = previous.connections
        magics.current = previous.current
    ipython.register_magics(magics)
    ipython.user_ns[MAGICS_NAME] = magics
    ipython.user_ns_hidden[MAGICS_NAME] = magics
    ipython.input_transformers_post.append(AwaitPlasma(ipython, magics))
    if not hasattr(ipython.show_usage_error, "original"):
        ipython.show_usage_error = show_usage_error(ipython.show_usage_error)
    enable(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext plasma_nb`` (connections stay open; ``%reload_ext`` keeps them)."""
    from .display import disable
    from .transformer import AwaitPlasma

    ipython.input_transformers_post[:] = [
        t for t in ipython.input_transformers_post if not isinstance(t, AwaitPlasma)
    ]
    original = getattr(ipython.show_usage_error, "original", None)
    if original is not None:
        ipython.show_usage_error = original
    disable(ipython)
    magics = ipython.magics_manager.registry.pop("PlasmaMagics", None)
    if magics is not None:
        for kind in ("line", "cell"):
            ipython.magics_manager.magics[kind].pop("plasma", None)
