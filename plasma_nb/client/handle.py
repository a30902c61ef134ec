"""Mutation handles: what ``client.mutate.NAME(...)`` returns.

``await handle`` resolves once the mutation is durable in local storage;
``await handle.confirmed`` resolves to None once a pull shows the server
processed it, or raises ``MutationError`` with the server's message if the
server rejected it. Both can be awaited from any event loop, any number of times.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from ..core.errors import MutationError
from .outcome import Outcome

__all__ = ["MutationHandle"]


class MutationHandle:
    """One queued mutation. ``seq`` is its place in the local order; the client and
    mutation ids are the ones it was queued with (renumbered if the server lost the
    client group, see docs/offline.md)."""

    __slots__ = ("_confirmed", "_durable", "args", "client_id", "mutation_id", "name", "seq")

    def __init__(
        self, name: str, args: dict[str, Any], *, seq: int, client_id: str, mutation_id: int,
        durable: Outcome[None], confirmed: Outcome[None],
    ) -> None:
        self.name = name
        self.args = args
        self.seq = seq
        self.client_id = client_id
        self.mutation_id = mutation_id
        self._durable = durable
        self._confirmed = confirmed

    def __await__(self) -> Generator[Any, None, None]:
        return self._durable.__await__()

    @property
    def confirmed(self) -> Outcome[None]:
        """Awaitable: None once the server applied the mutation; raises MutationError
        with the server's message if it rejected it."""
        return self._confirmed

    @property
    def is_durable(self) -> bool:
        return self._durable.done() and self._durable.exception() is None

    @property
    def is_confirmed(self) -> bool:
        """The server applied it (False while pending, and when rejected)."""
        return self._confirmed.done() and self._confirmed.exception() is None

    def __repr__(self) -> str:
        error = self._confirmed.exception() if self._confirmed.done() else None
        if self._confirmed.done() and error is None:
            state = "confirmed"
        elif isinstance(error, MutationError):
            state = "rejected"
        elif self.is_durable:
            state = "durable"
        else:
            state = "pending"
        return f"<MutationHandle {self.name} #{self.seq} {state}>"
