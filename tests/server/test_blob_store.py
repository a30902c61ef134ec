"""The blob store (plasma_nb/server/blob_store.py), one suite over both kinds of store:
obstore's local store (``file:DIR``) and its S3 store (``s3://``) against moto's S3
server mode on 127.0.0.1.

What every store must keep: a blob appears under its hash whole and checked, or not at
all (a wrong hash, a body over the limit and a body that breaks off leave nothing,
temporary objects included); reads stream whole blobs and byte ranges.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from plasma_nb.core.errors import BadRequest, ConfigError, PayloadTooLarge
from plasma_nb.server.blob_store import (
    PART_SIZE,
    TMP_PREFIX,
    BlobStore,
    HashMismatch,
    open_blob_store,
)
from tests.server.s3 import CREDENTIALS, moto_server, multipart_uploads, new_bucket


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture(params=["file", "s3"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest,
              monkeypatch: pytest.MonkeyPatch) -> str:
    if kind == "file":
        return f"file:{tmp_path / 'blobs'}"
    endpoint = request.getfixturevalue("moto")
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    return f"s3://{new_bucket(endpoint)}?endpoint={endpoint}&region=us-east-1"


@pytest.fixture
def store(store_url: str) -> BlobStore:
    return open_blob_store(store_url)


def blob(size: int, seed: int = 0) -> tuple[str, bytes]:
    data = (hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1))[:size]
    return hashlib.sha256(data).hexdigest(), data


async def body(data: bytes, chunk: int = 64 * 1024, *, fail_after: int | None = None
               ) -> AsyncIterator[bytes]:
    """``data`` in chunks, as a request body arrives; ``fail_after``: the connection
    drops after that many bytes."""
    for start in range(0, len(data), chunk):
        if fail_after is not None and start >= fail_after:
            raise ConnectionResetError("the client went away")
        yield data[start:start + chunk]


async def read_all(store: BlobStore, hash: str, start: int = 0, end: int | None = None
                   ) -> bytes:
    read = await store.read(hash, start, end)
    assert read is not None
    return b"".join([chunk async for chunk in read.chunks])


async def keys(store: BlobStore) -> list[str]:
    return sorted(o.key for o in await store.list())


@pytest.mark.parametrize("size", [0, 1, 100_000, PART_SIZE * 2 + 12_345])
async def test_a_blob_is_written_and_read_back_whole(store, size):
    hash, data = blob(size)
    assert await store.write(hash, body(data), max_bytes=10**9) == size
    info = await store.head(hash)
    assert info is not None and (info.key, info.size) == (hash, size)
    assert info.modified <= _dt.datetime.now(_dt.UTC) + _dt.timedelta(seconds=5)
    assert await read_all(store, hash) == data
    assert await keys(store) == [hash]


async def test_ranges_are_read_without_the_rest(store):
    hash, data = blob(300_000)
    await store.write(hash, body(data), max_bytes=10**9)
    assert await read_all(store, hash, 10, 20) == data[10:20]
    assert await read_all(store, hash, 299_990) == data[299_990:]
    read = await store.read(hash, 1000, 2000)
    assert read is not None and (read.start, read.end, read.size) == (1000, 2000, 300_000)
    assert b"".join([c async for c in read.chunks]) == data[1000:2000]


async def test_a_wrong_hash_stores_nothing(store):
    hash, _ = blob(1000, seed=1)
    _, other = blob(PART_SIZE + 10, seed=2)  # large enough to go in parts
    for data in (b"small", other):
        with pytest.raises(HashMismatch, match="nothing was stored") as raised:
            await store.write(hash, body(data), max_bytes=10**9)
        assert raised.value.expected == hash
        assert raised.value.actual == hashlib.sha256(data).hexdigest()
    assert await keys(store) == []
    assert await store.head(hash) is None


async def test_a_body_over_the_limit_stores_nothing(store):
    hash, data = blob(PART_SIZE + 100)
    with pytest.raises(PayloadTooLarge, match="over the limit of 1000 bytes"):
        await store.write(hash, body(b"x" * 5000), max_bytes=1000)
    with pytest.raises(PayloadTooLarge):
        await store.write(hash, body(data), max_bytes=PART_SIZE)
    assert await keys(store) == []


@pytest.mark.parametrize("fail_after", [0, 100_000, PART_SIZE + 64 * 1024])
async def test_a_body_that_breaks_off_leaves_nothing(store, kind, moto_endpoint, fail_after):
    hash, data = blob(PART_SIZE * 2)
    with pytest.raises(ConnectionResetError):
        await store.write(hash, body(data, fail_after=fail_after), max_bytes=10**9)
    assert await keys(store) == []
    if kind == "s3":  # an aborted multipart upload leaves no hidden parts either
        bucket = store.url.split("//")[1].split("?")[0]
        assert "<UploadId>" not in multipart_uploads(moto_endpoint, bucket)


async def test_writing_a_blob_again_is_harmless(store):
    hash, data = blob(5000)
    assert await store.write(hash, body(data), max_bytes=10**9) == 5000
    assert await store.write(hash, body(data), max_bytes=10**9) == 5000
    assert await keys(store) == [hash]
    assert await read_all(store, hash) == data


async def test_missing_blobs_and_deletes(store):
    hash, data = blob(10)
    assert await store.head(hash) is None
    assert await store.read(hash) is None
    await store.delete(hash)  # a missing blob is no error
    await store.write(hash, body(data), max_bytes=100)
    await store.delete(hash)
    assert await store.head(hash) is None
    assert await keys(store) == []
    with pytest.raises(ValueError, match="not a blob or temporary key"):
        await store.delete("../etc/passwd")


async def test_names_other_than_a_hash_are_refused(store):
    for name in ("AB" * 32, "ab" * 31, "../" + "ab" * 31, "ab" * 32 + "\n"):
        with pytest.raises(BadRequest, match="64 lowercase hex characters"):
            await store.write(name, body(b"x"), max_bytes=10)
        with pytest.raises(BadRequest):
            await store.head(name)
    assert await keys(store) == []


async def test_leftover_temporary_objects_are_listed_for_gc(store):
    import obstore

    hash, data = blob(10)
    await store.write(hash, body(data), max_bytes=100)
    raw = store._get_store(create=True)
    assert raw is not None
    await obstore.put_async(raw, f"{TMP_PREFIX}/crashed", b"partial")
    listed = {o.key: o.is_blob for o in await store.list()}
    assert listed == {hash: True, f"{TMP_PREFIX}/crashed": False}
    await store.delete(f"{TMP_PREFIX}/crashed")
    assert await keys(store) == [hash]


@pytest.fixture
def moto_endpoint(kind: str, request: pytest.FixtureRequest) -> str | None:
    return str(request.getfixturevalue("moto")) if kind == "s3" else None


# -- URLs ------------------------------------------------------------------------------------


def test_a_local_store_makes_its_directory_only_when_a_blob_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = open_blob_store("file:./plasma-blobs")
    assert store.location == str(tmp_path / "plasma-blobs")
    assert not (tmp_path / "plasma-blobs").exists()


async def test_local_store_urls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hash, data = blob(10)
    for url, where in [("file:rel/dir", tmp_path / "rel" / "dir"),
                       (f"file://{tmp_path}/abs", tmp_path / "abs"),
                       (f"file:{tmp_path}/plain", tmp_path / "plain")]:
        store = open_blob_store(url)
        assert store.kind == "file" and store.location == str(where)
        assert await store.head(hash) is None
        assert not where.exists()
        await store.write(hash, body(data), max_bytes=100)
        assert (where / hash).read_bytes() == data
        assert not os.listdir(where / TMP_PREFIX)


def test_s3_store_urls():
    store = open_blob_store("s3://bucket/some/prefix?endpoint=https://acct.r2.example&region=auto")
    assert store.kind == "s3"
    assert store.location == "s3://bucket/some/prefix at https://acct.r2.example"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://x", "unsupported blob store URL 'ftp://x': expected file:DIR or "
                    "s3://BUCKET?endpoint=URL&region=R"),
        ("file:", "blob store URL 'file:' has no directory: use file:DIR"),
        ("file://host/dir", "blob store URL 'file://host/dir' names a host"),
        ("s3://?region=auto", "blob store URL 's3://?region=auto' has no bucket"),
        ("s3://b?endpoint=x&endpoint=y", "gives 'endpoint' twice"),
        ("s3://b?secret=1", "unknown option 'secret' (known: endpoint, region; credentials "
                            "come from the AWS variables)"),
        ("s3://b?endpoint=localhost:9000", "endpoint must be an http(s) URL"),
        (42, "blobs must be a URL string, got 42"),
    ],
)
def test_bad_urls_are_config_errors(url, message):
    with pytest.raises(ConfigError) as raised:
        open_blob_store(url)
    assert message in str(raised.value)
