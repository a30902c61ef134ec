"""The blob routes (DESIGN section 5, "Blobs"), in process, on both database backends:
``PUT`` (hash check, size limit, idempotence), ``GET``/``HEAD`` (ETag, Range, the cache
header, 404), malformed names refused before anything is touched, and pushes that store
a blob the server lacks (409 naming the hash)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from urllib.parse import unquote

import pytest

from plasma_nb.server import Limits
from plasma_nb.server.blobs import parse_range
from tests import blob_app
from tests.server.helpers import errors, http, mutation, pull, push, puts

DATA = bytes(range(256)) * 40  # 10 240 bytes
HASH = hashlib.sha256(DATA).hexdigest()
OTHER = b"another blob"
OTHER_HASH = hashlib.sha256(OTHER).hexdigest()
CACHE = "public, max-age=31536000, immutable"


@pytest.fixture
def blob_dir(tmp_path: Path) -> Path:
    return tmp_path / "blobs"  # make_app's default blob store


def stored(blob_dir: Path) -> list[str]:
    """Every file under the blob directory, temporary ones included."""
    if not blob_dir.exists():
        return []
    return sorted(str(p.relative_to(blob_dir)) for p in blob_dir.rglob("*") if p.is_file())


@pytest.fixture
async def c(make_app):
    async with http(make_app(blob_app.schema, blob_app.mutators)) as client:
        yield client


# -- PUT ---------------------------------------------------------------------------------------


async def test_put_stores_a_blob_once_and_answers_its_hash_and_size(c, blob_dir):
    first = await c.put(f"/sync/blob/{HASH}", content=DATA)
    assert first.status_code == 201
    assert first.json() == {"hash": HASH, "size": len(DATA)}
    again = await c.put(f"/sync/blob/{HASH}", content=DATA)
    assert again.status_code == 200
    assert again.json() == {"hash": HASH, "size": len(DATA)}
    assert stored(blob_dir) == [HASH]
    assert (blob_dir / HASH).read_bytes() == DATA


async def test_a_streamed_body_without_a_length_is_fine(c, blob_dir):
    async def chunks():
        for i in range(0, len(DATA), 1000):
            yield DATA[i:i + 1000]

    response = await c.put(f"/sync/blob/{HASH}", content=chunks())
    assert response.status_code == 201, response.text
    assert (blob_dir / HASH).read_bytes() == DATA


async def test_a_hash_mismatch_is_400_and_stores_nothing(c, blob_dir):
    response = await c.put(f"/sync/blob/{OTHER_HASH}", content=DATA)
    assert response.status_code == 400
    assert response.json() == {
        "error": "HashMismatch",
        "message": f"the body's sha256 is {HASH} ({len(DATA)} bytes), not {OTHER_HASH}: "
                   "nothing was stored"}
    assert stored(blob_dir) == []
    assert (await c.get(f"/sync/blob/{OTHER_HASH}")).status_code == 404
    assert (await c.get(f"/sync/blob/{HASH}")).status_code == 404


async def test_a_body_past_the_limit_is_413_and_stores_nothing(make_app, blob_dir):
    app = make_app(blob_app.schema, blob_app.mutators, limits=Limits(max_blob_bytes=1000))
    async with http(app) as c:
        schema = (await c.get("/sync/schema")).json()
        assert schema["limits"]["maxBlobBytes"] == 1000
        declared = await c.put(f"/sync/blob/{HASH}", content=DATA)
        assert declared.status_code == 413
        assert declared.json() == {"error": "PayloadTooLarge",
                                   "message": "the blob is 10240 bytes; the limit is 1000"}

        async def chunks():  # no content-length: found out on the way
            for i in range(0, len(DATA), 100):
                yield DATA[i:i + 100]

        streamed = await c.put(f"/sync/blob/{HASH}", content=chunks())
        assert streamed.status_code == 413
        assert streamed.json()["message"] == "the blob is over the limit of 1000 bytes"
        small = await c.put(f"/sync/blob/{OTHER_HASH}", content=OTHER)
        assert small.status_code == 201
    assert stored(blob_dir) == [OTHER_HASH]


async def asgi_request(app, method: str, raw_path: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """One request straight to the ASGI app, with the path as a server hands it over:
    percent-decoded, dot segments left alone (httpx would normalize "..")."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": unquote(raw_path.decode()), "raw_path": raw_path,
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
        "headers": [(b"host", b"test"), (b"content-length", str(len(body)).encode())],
    }
    sent = False
    status = 0
    chunks: list[bytes] = []

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


@pytest.mark.parametrize(
    "name",
    [
        HASH.upper(),
        HASH[:-1],
        HASH + "0",
        "",
        "..",
        "../" + HASH,
        "..%2F..%2Fetc%2Fpasswd",
        "%2e%2e%2f" + HASH,
        HASH[:32] + "%2F" + HASH[32:],
        HASH[:32] + "/" + HASH[32:],
        HASH + "%00",
        " " + HASH,
        "g" * 64,
    ],
)
async def test_a_malformed_name_is_refused_before_anything_is_touched(make_app, tmp_path,
                                                                       name):
    app = make_app(blob_app.schema, blob_app.mutators)
    for method in ("PUT", "GET", "HEAD"):
        status, answer = await asgi_request(app, method, f"/sync/blob/{name}".encode(),
                                            DATA if method == "PUT" else b"")
        assert status == 400, (method, name, answer)
        if method != "HEAD":
            assert json.loads(answer)["error"] == "BadRequest"
            assert "64 lowercase hex characters" in json.loads(answer)["message"]
    # Neither the blob store nor the database was created.
    assert not (tmp_path / "blobs").exists()
    assert not (tmp_path / "p.db").exists()


# -- GET and HEAD ------------------------------------------------------------------------------


async def test_get_and_head_answer_the_bytes_with_an_etag_and_an_immutable_cache(c):
    await c.put(f"/sync/blob/{HASH}", content=DATA)
    got = await c.get(f"/sync/blob/{HASH}")
    assert got.status_code == 200
    assert got.content == DATA
    assert got.headers["etag"] == f'"{HASH}"'
    assert got.headers["cache-control"] == CACHE
    assert got.headers["accept-ranges"] == "bytes"
    assert got.headers["content-length"] == str(len(DATA))
    assert got.headers["content-type"] == "application/octet-stream"
    head = await c.head(f"/sync/blob/{HASH}")
    assert head.status_code == 200
    assert head.content == b""
    for name in ("etag", "cache-control", "content-length", "accept-ranges", "content-type"):
        assert head.headers[name] == got.headers[name]
    cached = await c.get(f"/sync/blob/{HASH}", headers={"if-none-match": f'"{HASH}"'})
    assert cached.status_code == 304
    assert cached.content == b""
    assert cached.headers["etag"] == f'"{HASH}"'


async def test_an_absent_blob_is_404(c):
    got = await c.get(f"/sync/blob/{HASH}")
    assert got.status_code == 404
    assert got.json() == {"error": "NotFound", "message": f"no blob {HASH} on this server"}
    assert (await c.head(f"/sync/blob/{HASH}")).status_code == 404
    assert (await c.get(f"/sync/blob/{HASH}", headers={"range": "bytes=0-1"})).status_code == 404


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-9", 0, 10),
        ("bytes=10-", 10, len(DATA)),
        ("bytes=-5", len(DATA) - 5, len(DATA)),
        ("bytes=100-99999", 100, len(DATA)),
        ("bytes=-99999", 0, len(DATA)),
        ("bytes=10239-10239", 10239, 10240),
    ],
)
async def test_a_range_is_answered_with_206(c, header, start, end):
    await c.put(f"/sync/blob/{HASH}", content=DATA)
    got = await c.get(f"/sync/blob/{HASH}", headers={"range": header})
    assert got.status_code == 206
    assert got.content == DATA[start:end]
    assert got.headers["content-range"] == f"bytes {start}-{end - 1}/{len(DATA)}"
    assert got.headers["content-length"] == str(end - start)
    assert got.headers["etag"] == f'"{HASH}"'
    head = await c.head(f"/sync/blob/{HASH}", headers={"range": header})
    assert head.status_code == 206
    assert head.headers["content-range"] == got.headers["content-range"]


@pytest.mark.parametrize("header", ["bytes=10240-", "bytes=99999-100000", "bytes=-0"])
async def test_a_range_outside_the_blob_is_416(c, header):
    await c.put(f"/sync/blob/{HASH}", content=DATA)
    got = await c.get(f"/sync/blob/{HASH}", headers={"range": header})
    assert got.status_code == 416
    assert got.headers["content-range"] == f"bytes */{len(DATA)}"
    assert got.json()["error"] == "RangeNotSatisfiable"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-1", "bytes=5-2", "bytes=a-b",
                                    "bytes"])
async def test_a_range_this_server_ignores_gets_the_whole_blob(c, header):
    await c.put(f"/sync/blob/{HASH}", content=DATA)
    got = await c.get(f"/sync/blob/{HASH}", headers={"range": header})
    assert got.status_code == 200
    assert got.content == DATA


async def test_if_range_with_another_validator_gets_the_whole_blob(c):
    await c.put(f"/sync/blob/{HASH}", content=DATA)
    got = await c.get(f"/sync/blob/{HASH}", headers={"range": "bytes=0-9", "if-range": '"x"'})
    assert got.status_code == 200 and got.content == DATA
    ok = await c.get(f"/sync/blob/{HASH}", headers={"range": "bytes=0-9",
                                                    "if-range": f'"{HASH}"'})
    assert ok.status_code == 206 and ok.content == DATA[:10]


def test_parse_range():
    assert parse_range(None, 10) is None
    assert parse_range("bytes=2-4", 10) == (2, 5)
    assert parse_range("bytes = 2 - 4", 10) == (2, 5)
    assert parse_range("BYTES=-3", 10) == (7, 10)
    with pytest.raises(ValueError):
        parse_range("bytes=0-", 0)
    with pytest.raises(ValueError):
        parse_range("bytes=-1", 0)


# -- pushes that store blobs ---------------------------------------------------------------------


def add_photo(id: int, photo_id: str, photo: str | None, **extra):
    return mutation("c1", id, "add_photo", id=photo_id, title=f"title {photo_id}", photo=photo,
                    **extra)


async def test_a_push_storing_a_missing_blob_stops_there_with_409(c):
    body = [add_photo(1, "p1", None), add_photo(2, "p2", HASH), add_photo(3, "p3", None)]
    response = await c.post("/sync/push", json={
        "pushVersion": 1, "clientGroupID": "cg1", "profileID": "p1", "schemaVersion": "1",
        "mutations": body})
    assert response.status_code == 409
    assert response.json() == {
        "error": "MissingBlob",
        "message": f"mutation 2 of client 'c1' stores blob {HASH}, which the server does not "
                   f"have: upload it (PUT /sync/blob/{HASH}), then push again",
        "hash": HASH, "clientID": "c1", "id": 2,
    }
    # The mutation before it stays applied; nothing of it or after it is.
    pulled = await pull(c)
    assert sorted(puts(pulled["patch"])) == ["photos/p1"]
    assert pulled["lastMutationIDChanges"] == {"c1": 1}

    # The client uploads the blob and pushes again: the rest goes through.
    assert (await c.put(f"/sync/blob/{HASH}", content=DATA)).status_code == 201
    assert await push(c, *body) == {}
    rows = puts((await pull(c))["patch"])
    assert sorted(rows) == ["photos/p1", "photos/p2", "photos/p3"]
    assert rows["photos/p2"]["photo"] == HASH
    assert (await c.get(f"/sync/blob/{HASH}")).content == DATA


async def test_updates_are_checked_and_nulls_and_known_blobs_pass(c):
    await c.put(f"/sync/blob/{HASH}", content=DATA)
    assert await push(c, add_photo(1, "p1", HASH, thumb=None)) == {}
    assert await push(c, mutation("c1", 2, "set_photo", id="p1", photo=None)) == {}
    assert await push(c, mutation("c1", 3, "retitle", id="p1", title="renamed")) == {}
    refused = await push(c, mutation("c1", 4, "set_photo", id="p1", photo=OTHER_HASH),
                         status=409)
    assert refused["hash"] == OTHER_HASH and refused["id"] == 4
    # Two blob columns in one row: the first missing one is named.
    refused = await push(c, add_photo(4, "p2", HASH, thumb=OTHER_HASH), status=409)
    assert refused["hash"] == OTHER_HASH
    row = puts((await pull(c))["patch"])["photos/p1"]
    assert (row["title"], row["photo"]) == ("renamed", None)


async def test_a_mutator_cannot_swallow_the_missing_blob(c):
    refused = await push(c, mutation("c1", 1, "add_photo_anyway", id="p1", photo=HASH),
                         status=409)
    assert refused["error"] == "MissingBlob"
    assert puts((await pull(c))["patch"]) == {}


async def test_rejected_mutations_before_the_stop_are_reported_later(c):
    body = [mutation("c1", 1, "add_photo", id="p0", title=" "), add_photo(2, "p1", HASH)]
    refused = await push(c, *body, status=409)
    assert refused["id"] == 2
    await c.put(f"/sync/blob/{HASH}", content=DATA)
    again = await push(c, *body)
    assert errors(again) == [("c1", 1, "add_photo", "title must not be empty")]


async def test_without_a_blob_store_blob_columns_are_not_checked(make_app):
    async with http(make_app(blob_app.schema, blob_app.mutators, blobs=None)) as c:
        assert await push(c, add_photo(1, "p1", HASH)) == {}

