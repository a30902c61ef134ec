"""Server storage backends behind one contract (``base.Storage``)."""

from __future__ import annotations

from .base import Storage

__all__ = ["Storage"]
