"""``SyncStatus``: where a client stands, with buttons to sync now and go offline or online.

The client has no event for "the status changed", so the widget polls
``client.status()`` (every ``interval`` seconds, on a daemon thread in CPython and
a task on the page's loop in Pyodide) and also refreshes on every commit; only
traits whose values changed are sent. The buttons' work runs off the kernel's
loop: ipykernel does not run background tasks between cells.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from . import _access
from ._deps import IN_PYODIDE
from .values import static_table

__all__ = ["SyncStatus", "describe", "run_soon"]

logger = logging.getLogger("plasma_nb.notebook")

STATIC = Path(__file__).with_name("static")


def _iso(when: _dt.datetime | None) -> str:
    if when is None:
        return ""
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.UTC)
    return when.astimezone(_dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def describe(status: Any) -> str:
    """One line about a ``client.status()``."""
    if status.local_only:
        state = "local only"
    elif status.offline:
        state = "offline"
    elif status.online:
        state = "online"
    else:
        state = "not connected"
    parts = [state]
    if status.url:
        parts.append(status.url)
    parts.append(f"{status.pending} pending")
    if not status.local_only:
        parts.append(f"last push {_iso(status.last_push) or 'never'}")
        parts.append(f"last pull {_iso(status.last_pull) or 'never'}")
    pulling = getattr(status, "pulling", None)
    if pulling is not None:
        parts.append(pulling.describe())
    if status.last_error:
        parts.append(f"last error: {status.last_error}")
    return "plasma: " + " · ".join(parts)


def run_soon(work: Callable[[], Coroutine[Any, Any, Any]],
             done: Callable[[BaseException | None], None]) -> None:
    """Run ``work()`` without blocking the caller; call ``done(error)`` when it ends."""

    async def wrapped() -> None:
        try:
            await work()
        except BaseException as exc:  # reported through done()
            done(exc)
        else:
            done(None)

    if IN_PYODIDE:
        asyncio.ensure_future(wrapped())  # the page's loop keeps turning between cells
    else:
        threading.Thread(target=asyncio.run, args=(wrapped(),), daemon=True,
                         name="plasma_nb-status-action").start()


class SyncStatus(anywidget.AnyWidget):  # type: ignore[misc, unused-ignore]
    """A client's sync state and controls: ``SyncStatus(client)`` or ``%plasma status``."""

    _esm = STATIC / "sync_status.js"
    _css = STATIC / "sync_status.css"

    url = traitlets.Unicode("").tag(sync=True)
    local_only = traitlets.Bool(False).tag(sync=True)
    online = traitlets.Bool(False).tag(sync=True)
    offline = traitlets.Bool(False).tag(sync=True)
    pending = traitlets.Int(0).tag(sync=True)
    rejected = traitlets.Int(0).tag(sync=True)
    last_push = traitlets.Unicode("").tag(sync=True)
    last_pull = traitlets.Unicode("").tag(sync=True)
    last_error = traitlets.Unicode("").tag(sync=True)
    busy = traitlets.Bool(False).tag(sync=True)
    message = traitlets.Unicode("").tag(sync=True)
    closed = traitlets.Bool(False).tag(sync=True)

    def __init__(self, client: Any, *, interval: float = 1.0, **kwargs: Any) -> None:
        self._client = client
        self._since_ms = _access.first_seen(client)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self.refreshes = 0
        super().__init__(**self._state(), **kwargs)
        self.on_msg(self._message)
        self._unsubscribe: Callable[[], None] | None = None
        try:
            self._unsubscribe = client.subscribe(list(client.schema.tables), self._changed)
        except Exception:  # a closed client: the widget says so
            pass
        if interval > 0:
            self._start_polling(interval)

    @property
    def client(self) -> Any:
        return self._client

    def _state(self) -> dict[str, Any]:
        try:
            status = self._client.status()
        except Exception:
            return {"closed": True, "online": False, "busy": False}
        try:
            rejected = len(_access.rejections(self._client, since_ms=self._since_ms, limit=100))
        except Exception:
            rejected = 0
        return {
            "url": status.url or "",
            "local_only": status.local_only,
            "online": status.online,
            "offline": status.offline,
            "pending": status.pending,
            "rejected": rejected,
            "last_push": _iso(status.last_push),
            "last_pull": _iso(status.last_pull),
            "last_error": status.last_error or "",
            "closed": False,
        }

    def refresh(self) -> bool:
        """Send what changed since the last refresh (one message); True if anything did."""
        with self._lock:
            state = self._state()
            changed = {k: v for k, v in state.items() if getattr(self, k) != v}
            if not changed:
                return False
            with self.hold_sync():
                for name, value in changed.items():
                    setattr(self, name, value)
            self.refreshes += 1
        if state.get("closed"):
            self._stop.set()
        return True

    def _changed(self, change: Any) -> None:
        try:
            self.refresh()
        except Exception:
            logger.exception("SyncStatus could not refresh")

    def _start_polling(self, interval: float) -> None:
        if IN_PYODIDE:
            async def poll() -> None:
                while not self._stop.is_set():
                    await asyncio.sleep(interval)
                    self._changed(None)

            self._task = asyncio.ensure_future(poll())
            return

        def poll_thread() -> None:
            while not self._stop.wait(interval):
                self._changed(None)

        threading.Thread(target=poll_thread, daemon=True, name="plasma_nb-status").start()

    # -- buttons -------------------------------------------------------------------------

    def _message(self, widget: Any, content: Any, buffers: Any) -> None:
        action = content.get("action") if isinstance(content, dict) else None
        if action == "sync":
            self.sync()
        elif action in ("offline", "online"):
            with self.hold_sync():  # one message: the new mode and what it says
                if action == "offline":
                    self._client.offline()
                    self.message = "offline: mutations queue locally"
                else:
                    self._client.online()
                    self.message = "online: pushing what queued up"
                self.refresh()

    def sync(self) -> None:
        """Start a sync (what the "Sync now" button does); the widget shows how it went."""
        if self.busy:
            return
        with self.hold_sync():
            self.busy = True
            self.message = ""

        def done(error: BaseException | None) -> None:
            with self.hold_sync():
                self.busy = False
                self.message = f"sync failed: {error}" if error else "synced"
            self.refresh()

        run_soon(self._client.sync, done)

    # -- display and lifetime ------------------------------------------------------------

    def summary(self) -> str:
        try:
            return describe(self._client.status())
        except Exception as exc:
            return f"plasma: {exc}"

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        if isinstance(data, dict):
            text = self.summary()
            data["text/plain"] = text
            data["text/html"] = static_table(["status"], [[text]], 1)
        return bundle

    def close(self) -> None:
        self._stop.set()
        unsubscribe = getattr(self, "_unsubscribe", None)
        if unsubscribe is not None:
            unsubscribe()
            self._unsubscribe = None
        super().close()
