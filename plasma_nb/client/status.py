"""``client.status()``: a snapshot of the client's sync state."""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["PullProgress", "Status"]


@dataclass(frozen=True)
class PullProgress:
    """A pull under way, for progress bars: ``phase`` is ``"download"`` while the answer
    arrives (``done`` of ``total`` bytes; ``total`` is None when the server did not say),
    then ``"apply"`` while ``total`` changes go into the replica in one transaction."""

    phase: str
    done: int
    total: int | None

    @property
    def fraction(self) -> float | None:
        """How far along this phase is, from 0 to 1; None when the total is unknown."""
        if not self.total:
            return None
        return min(1.0, self.done / self.total)

    def describe(self) -> str:
        if self.phase == "download":
            done = f"{self.done / 1e6:.1f}"
            if self.total is None:
                return f"pulling: {done} MB received"
            return f"pulling: {done} of {self.total / 1e6:.1f} MB"
        count = "" if self.total is None else f" {self.total:,}"
        return f"pulling: applying{count} changes"


@dataclass(frozen=True)
class Status:
    """Where the client stands. ``online`` is true when sync is on (not ``offline()``,
    not local-only) and the last exchange with the server succeeded."""

    url: str | None
    storage: str
    client_group_id: str
    client_id: str | None
    cookie: int | None
    pending: int
    offline: bool
    connected: bool
    pokes: str  # "connected", "disconnected", "unavailable" or "off"
    last_push: _dt.datetime | None = None
    last_pull: _dt.datetime | None = None
    last_error: str | None = None
    errors: tuple[str, ...] = field(default_factory=tuple)
    user: str | None = None
    #: Why ``pokes`` is not "connected": offline, the server or runtime has no poke
    #: socket, or the last connection failure. None when connected or off.
    pokes_detail: str | None = None
    #: The pull under way, if any (``%plasma connect`` draws it as a progress bar).
    pulling: PullProgress | None = None

    @property
    def online(self) -> bool:
        return self.url is not None and not self.offline and self.connected

    @property
    def local_only(self) -> bool:
        return self.url is None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["online"] = self.online
        return data
