"""``plasma-nb blobs gc`` (plasma_nb/server/blob_gc.py) on both database backends, and the
command itself on SQLite."""

from __future__ import annotations

import datetime as _dt
import hashlib
import subprocess
import time
from pathlib import Path

import pytest

from plasma_nb.core.errors import ConfigError
from plasma_nb.server.blob_gc import collect_garbage, describe
from tests import blob_app
from tests.server.helpers import http, mutation, plasma_command, push, query, run_env

BLOB_APP = Path(blob_app.__file__)


def blob(text: str) -> tuple[str, bytes]:
    data = text.encode() * 100
    return hashlib.sha256(data).hexdigest(), data


KEPT, KEPT_DATA = blob("referenced")
THUMB, THUMB_DATA = blob("thumbnail")
LOOSE, LOOSE_DATA = blob("unreferenced")
LATER = _dt.datetime.now(_dt.UTC) + _dt.timedelta(hours=2)


@pytest.fixture
async def setup(make_app, tmp_path):
    """An app whose rows reference KEPT and THUMB; LOOSE is stored but unreferenced."""
    app = make_app(blob_app.schema, blob_app.mutators)
    async with http(app) as c:
        for hash, data in ((KEPT, KEPT_DATA), (THUMB, THUMB_DATA), (LOOSE, LOOSE_DATA)):
            assert (await c.put(f"/sync/blob/{hash}", content=data)).status_code == 201
        await push(c, mutation("c1", 1, "add_photo", id="p1", title="t", photo=KEPT,
                               thumb=THUMB))
    (tmp_path / "blobs" / ".plasma-tmp" / "crashed-upload").write_bytes(b"partial")
    return app


def files(tmp_path: Path) -> list[str]:
    root = tmp_path / "blobs"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


async def test_gc_deletes_unreferenced_blobs_older_than_the_grace(setup, database, tmp_path):
    store = f"file:{tmp_path / 'blobs'}"
    result = await collect_garbage(database, store, grace=3600, now=LATER)
    assert [b.key for b in result.deleted] == [LOOSE]
    assert [t.key for t in result.temporary] == [".plasma-tmp/crashed-upload"]
    assert result.referenced == 2
    assert result.spared == []
    assert result.freed_bytes == len(LOOSE_DATA) + len(b"partial")
    assert files(tmp_path) == sorted([KEPT, THUMB])
    lines = describe(result, grace=3600)
    assert lines[0].startswith(f"deleted {LOOSE} ({len(LOOSE_DATA)} bytes, stored ")
    assert lines[-1] == (f"deleted 1 unreferenced blob(s), {result.freed_bytes} bytes; kept 2 "
                         "referenced and 0 newer than 1 h")

    # The server forgot LOOSE: a push storing it now gets 409, until it is uploaded again.
    async with http(setup) as c:
        refused = await push(c, mutation("c1", 2, "set_photo", id="p1", photo=LOOSE),
                             status=409)
        assert refused["hash"] == LOOSE
        assert (await c.get(f"/sync/blob/{LOOSE}")).status_code == 404
        assert (await c.put(f"/sync/blob/{LOOSE}", content=LOOSE_DATA)).status_code == 201
        assert await push(c, mutation("c1", 2, "set_photo", id="p1", photo=LOOSE)) == {}

    # KEPT is no longer referenced now (p1's photo is LOOSE), but it was stored "now".
    again = await collect_garbage(database, store, grace=3600)
    assert again.deleted == [] and [b.key for b in again.spared] == [KEPT]


async def test_recent_blobs_are_spared(setup, database, tmp_path):
    result = await collect_garbage(database, f"file:{tmp_path / 'blobs'}", grace=24 * 3600)
    assert result.deleted == [] and result.temporary == []
    assert [b.key for b in result.spared] == [LOOSE]
    assert LOOSE in files(tmp_path)


async def test_a_dry_run_deletes_nothing(setup, database, tmp_path):
    before = files(tmp_path)
    result = await collect_garbage(database, f"file:{tmp_path / 'blobs'}", grace=3600,
                                   now=LATER, dry_run=True)
    assert [b.key for b in result.deleted] == [LOOSE]
    assert describe(result, grace=3600)[0].startswith(f"would delete {LOOSE} ")
    assert files(tmp_path) == before
    async with http(setup) as c:  # still known: a push storing it passes
        assert await push(c, mutation("c1", 2, "set_photo", id="p1", photo=LOOSE)) == {}


async def test_a_known_blob_whose_object_is_gone_is_forgotten(setup, database, tmp_path):
    (tmp_path / "blobs" / LOOSE).unlink()
    result = await collect_garbage(database, f"file:{tmp_path / 'blobs'}", grace=3600,
                                   now=LATER)
    assert result.forgotten == [LOOSE]
    async with http(setup) as c:
        refused = await push(c, mutation("c1", 2, "set_photo", id="p1", photo=LOOSE),
                             status=409)
        assert refused["hash"] == LOOSE


async def test_gc_refuses_what_is_not_a_plasma_database(tmp_path):
    with pytest.raises(ConfigError, match="cannot open the database"):
        await collect_garbage(f"sqlite:///{tmp_path}/none.db", f"file:{tmp_path}/b")
    assert not (tmp_path / "none.db").exists()
    import sqlite3

    sqlite3.connect(tmp_path / "other.db").close()
    with pytest.raises(ConfigError, match="no _plasma_blobs table"):
        await collect_garbage(f"sqlite:///{tmp_path}/other.db", f"file:{tmp_path}/b")
    with pytest.raises(ConfigError, match="grace must be"):
        await collect_garbage(f"sqlite:///{tmp_path}/other.db", f"file:{tmp_path}/b", grace=-1)


@pytest.mark.slow
def test_the_command_lists_then_deletes(serve, tmp_path):
    served = serve("--blobs", "file:blobs", schema=str(BLOB_APP))
    import httpx

    with httpx.Client(base_url=served.url) as c:
        for hash, data in ((KEPT, KEPT_DATA), (LOOSE, LOOSE_DATA)):
            assert c.put(f"/sync/blob/{hash}", content=data).status_code == 201
        assert c.post("/sync/push", json={
            "pushVersion": 1, "clientGroupID": "g", "profileID": "p", "schemaVersion": "1",
            "mutations": [mutation("c1", 1, "add_photo", id="p1", title="t", photo=KEPT)],
        }).json() == {}

    def gc(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(plasma_command("blobs", "gc", "--db", "sqlite:///p.db",
                                             "--blobs", "file:blobs", *args),
                              cwd=tmp_path, env=run_env(), capture_output=True, text=True,
                              timeout=60)

    # Stores keep modification times in whole seconds: let a second pass, so that
    # "--grace 0" finds both blobs older than the grace period.
    time.sleep(1.1)
    listed = gc("--dry-run", "--grace", "0")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].startswith(f"would delete {LOOSE} (")
    assert lines[-1].startswith("would delete 1 unreferenced blob(s)")
    assert (tmp_path / "blobs" / LOOSE).exists()

    spared = gc()  # the default grace: a day
    assert spared.returncode == 0, spared.stderr
    assert spared.stdout.splitlines()[-1].endswith("kept 1 referenced and 1 newer than 24 h")

    deleted = gc("--grace", "0")  # while the server runs
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.splitlines()[0].startswith(f"deleted {LOOSE} (")
    assert not (tmp_path / "blobs" / LOOSE).exists()
    assert (tmp_path / "blobs" / KEPT).exists()
    assert query(tmp_path / "p.db", "SELECT hash FROM _plasma_blobs") == [(KEPT,)]
    assert served.interrupt() == 0
