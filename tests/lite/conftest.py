"""tests/lite: the site build (``plasma-nb lite build``), inspected on disk."""

from __future__ import annotations

import pytest

from tests.lite.sites import BuiltSite, offline_site


@pytest.fixture(scope="session")
def offline(tmp_path_factory: pytest.TempPathFactory) -> BuiltSite:
    """The session's ``--offline`` site (shared with tests/browser)."""
    return offline_site(tmp_path_factory)
