"""Where the engine's event loop runs, and how callers reach it.

In Pyodide the engine uses the page's loop (``InlineRunner``): there are no
threads, and the browser keeps that loop turning between cells. In CPython,
ipykernel does not run background asyncio tasks between cells, so the engine
gets a loop of its own in a daemon thread (``ThreadRunner``); the public API
stays async, and awaiting it from the caller's loop hops to the engine's with
``run_coroutine_threadsafe``. Nothing here blocks the caller's loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .outcome import call_soon

__all__ = ["InlineRunner", "Runner", "ThreadRunner"]

T = TypeVar("T")


class Runner:
    """Owns (or borrows) the engine's loop."""

    loop: asyncio.AbstractEventLoop

    async def call(self, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run ``fn()`` on the engine's loop and await its result from the caller's."""
        raise NotImplementedError

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        call_soon(self.loop, fn, *args)

    async def aclose(self) -> None:
        raise NotImplementedError


class InlineRunner(Runner):
    """The engine shares the caller's loop (Pyodide; tests that want one loop)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()

    async def call(self, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        return await fn()

    async def aclose(self) -> None:
        return None


class ThreadRunner(Runner):
    """The engine's own loop in a daemon thread (CPython only)."""

    def __init__(self, name: str = "plasma_nb-engine") -> None:
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.call_soon(started.set)
            try:
                self.loop.run_forever()
            finally:
                self.loop.close()

        self._thread = threading.Thread(target=run, name=name, daemon=True)
        self._thread.start()
        started.wait()

    async def call(self, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:  # already on the engine's loop (a subscriber, say)
            return await fn()
        if self.loop.is_closed() or not self._thread.is_alive():
            raise RuntimeError("the engine's loop has stopped")
        future = asyncio.run_coroutine_threadsafe(fn(), self.loop)
        return await asyncio.wrap_future(future)

    async def aclose(self) -> None:
        if not self._thread.is_alive():
            return
        drained = asyncio.run_coroutine_threadsafe(_drain(), self.loop)
        await asyncio.wrap_future(drained)
        self.loop.call_soon_threadsafe(self.loop.stop)
        # The loop stops within a step; join off the caller's loop so it keeps serving.
        await asyncio.to_thread(self._thread.join)


async def _drain() -> None:
    """Cancel every other task on the engine's loop and wait for them to finish."""
    me = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    loop = asyncio.get_running_loop()
    await loop.shutdown_asyncgens()
    await loop.shutdown_default_executor()
