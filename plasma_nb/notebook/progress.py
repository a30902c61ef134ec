"""A progress bar for long pulls, drawn while ``%plasma connect`` or ``%plasma sync`` waits.

The first sync of a large database can take seconds: the answer downloads, then its
changes go into the replica in one transaction. The engine publishes where a pull
stands as ``client.status().pulling`` (client/status.py); :func:`watching` polls it
while the command waits and draws a bar only when the wait lasts, so quick syncs stay
quiet. The bar is an ipywidgets progress bar in a kernel with widgets, a line of text
rewritten in place elsewhere, and it disappears when the sync ends.

In Pyodide the engine and the bar share the page's loop: the bar moves while the
answer downloads and says "applying" while the changes go in (the loop is busy then).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable
from typing import Any, Protocol, TypeVar

from ..client.status import PullProgress
from ._deps import has

__all__ = ["SHOW_AFTER", "watching"]

T = TypeVar("T")

#: Seconds a sync may take before a bar appears.
SHOW_AFTER = 0.5
#: Seconds between two looks at ``client.status()``.
INTERVAL = 0.1


class _Bar(Protocol):
    def show(self, progress: PullProgress) -> None: ...
    def close(self) -> None: ...


async def watching(client: Any, work: Awaitable[T], *, show_after: float = SHOW_AFTER,
                   interval: float = INTERVAL) -> T:
    """Await ``work`` (a sync of ``client``), drawing a bar for its pull if it lasts
    longer than ``show_after`` seconds."""
    task = asyncio.ensure_future(work)
    started = time.monotonic()
    bar: _Bar | None = None
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=interval)
            if done:
                return task.result()
            progress = client.status().pulling
            if progress is None or time.monotonic() - started < show_after:
                continue
            if bar is None:
                bar = _open_bar()
            bar.show(progress)
    finally:
        if not task.done():
            task.cancel()  # the cell was interrupted: so is the wait (sync goes on behind)
        if bar is not None:
            bar.close()


def _open_bar() -> _Bar:
    if _in_kernel() and has("ipywidgets"):
        return _WidgetBar()
    return _TextBar()


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class _WidgetBar:
    def __init__(self) -> None:
        import ipywidgets  # type: ignore[import-untyped]
        from IPython.display import display

        self.bar = ipywidgets.FloatProgress(min=0.0, max=1.0, value=0.0,
                                            layout=ipywidgets.Layout(width="240px"))
        self.label = ipywidgets.Label("pulling")
        self.box = ipywidgets.HBox([self.bar, self.label])
        display(self.box)  # type: ignore[no-untyped-call]

    def show(self, progress: PullProgress) -> None:
        fraction = progress.fraction
        if progress.phase == "apply" or fraction is None:
            # One transaction with no steps to count: a full, striped bar says "busy".
            self.bar.value, self.bar.bar_style = 1.0, "info"
        else:
            self.bar.value, self.bar.bar_style = fraction, ""
        self.label.value = progress.describe()

    def close(self) -> None:
        self.box.close()


class _TextBar:
    def __init__(self) -> None:
        self.width = 0

    def show(self, progress: PullProgress) -> None:
        text = progress.describe()
        if progress.fraction is not None and progress.phase == "download":
            text += f" ({progress.fraction:.0%})"
        sys.stdout.write("\r" + text.ljust(self.width))
        sys.stdout.flush()
        self.width = len(text)

    def close(self) -> None:
        sys.stdout.write("\r" + " " * self.width + "\r")
        sys.stdout.flush()
