"""A one-shot result that any event loop, in any thread, can await.

The engine settles results on its own loop (the engine thread's in CPython)
while callers await them on theirs (the notebook's). An ``Outcome`` keeps the
result behind a lock and wakes each waiter on the waiter's own loop, so it works
whichever thread settles it, and in Pyodide, where there is one loop and no
threads, it degrades to plain futures.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Generator
from typing import Any, Generic, TypeVar

__all__ = ["Outcome", "call_soon"]

T = TypeVar("T")


def call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> None:
    """``loop.call_soon(fn, *args)`` from whichever thread we are in."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        loop.call_soon(fn, *args)
    elif not loop.is_closed():
        loop.call_soon_threadsafe(fn, *args)


def _wake(fut: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)


class Outcome(Generic[T]):
    """Settled once with a value or an exception; awaitable any number of times."""

    __slots__ = ("_callbacks", "_done", "_exc", "_lock", "_value", "_waiters")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done = False
        self._value: Any = None
        self._exc: BaseException | None = None
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]] = []
        self._callbacks: list[Callable[[Outcome[T]], None]] = []

    def done(self) -> bool:
        return self._done

    def set_result(self, value: T) -> bool:
        return self._settle(value, None)

    def set_exception(self, exc: BaseException) -> bool:
        return self._settle(None, exc)

    def _settle(self, value: Any, exc: BaseException | None) -> bool:
        with self._lock:
            if self._done:
                return False
            self._done = True
            self._value, self._exc = value, exc
            waiters, self._waiters = self._waiters, []
            callbacks, self._callbacks = self._callbacks, []
        for loop, fut in waiters:
            call_soon(loop, _wake, fut, value, exc)
        for callback in callbacks:
            callback(self)
        return True

    def result(self) -> T:
        """The value (raises the exception); only once ``done()``."""
        if not self._done:
            raise asyncio.InvalidStateError("the outcome is not settled yet")
        if self._exc is not None:
            raise self._exc
        return self._value  # type: ignore[no-any-return]

    def exception(self) -> BaseException | None:
        return self._exc

    def add_done_callback(self, callback: Callable[[Outcome[T]], None]) -> None:
        """Call ``callback(self)`` when settled (at once if it already is), in the
        settling thread."""
        with self._lock:
            if not self._done:
                self._callbacks.append(callback)
                return
        callback(self)

    def __await__(self) -> Generator[Any, None, T]:
        with self._lock:
            if not self._done:
                loop = asyncio.get_running_loop()
                fut: asyncio.Future[Any] = loop.create_future()
                self._waiters.append((loop, fut))
            else:
                fut = None  # type: ignore[assignment]
        if fut is not None:
            yield from fut.__await__()
        return self.result()
