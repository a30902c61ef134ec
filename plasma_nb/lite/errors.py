"""The one error the site build reports."""

from __future__ import annotations


class LiteBuildError(Exception):
    """A build problem, reported to the user in one line (a missing tool, no network, ...)."""
