"""Fixtures of the scale tests: two ``plasma-nb serve`` instances on one Postgres schema
(``PLASMA_TEST_POSTGRES``; skipped without it, failed under ``CI``), one cluster per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.scale.cluster import Cluster


@pytest.fixture(autouse=True)
def plasma_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep client replicas out of the real home directory."""
    home = tmp_path / "plasma_home"
    monkeypatch.setenv("PLASMA_NB_HOME", str(home))
    return home


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # A backend looks for a deadlock once, deadlock_timeout after it starts waiting: the
    # pushes' look at 0.5 s, late enough for test_transient to close the cycle first, and
    # before the operator's (who sets 30 s), so the push is the one that gives up.
    cluster = Cluster(["a", "b"], tmp_path_factory.mktemp("cluster"),
                      deadlock_timeout="500ms")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()
