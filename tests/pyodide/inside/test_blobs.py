"""Blobs in Pyodide: the IndexedDB blob cache, the durable upload queue and the fetch
transport's byte transfers, against the real ``plasma-nb serve`` of the harness."""

from __future__ import annotations

import hashlib

import pytest
from pyodide.code import run_js
from pyodide.ffi import to_js
from pyodide_helpers import idb_databases

from plasma_nb.client.blob_cache_idb import IndexedDBBlobCache
from plasma_nb.client.blobs import BlobNotFound

_OPEN = """
  const open = (name) => new Promise((ok, fail) => {
    const r = indexedDB.open(name);
    r.onsuccess = () => ok(r.result);
    r.onerror = () => fail(r.error);
  });
  const done = (tx) => new Promise((ok, fail) => {
    tx.oncomplete = ok; tx.onerror = () => fail(tx.error);
  });
"""

_KEYS_JS = f"""(async (name) => {{ {_OPEN}
  const db = await open(name);
  try {{
    const tx = db.transaction(["blobs"], "readonly");
    const keys = tx.objectStore("blobs").getAllKeys();
    await done(tx);
    return JSON.stringify(keys.result);
  }} finally {{ db.close(); }}
}})"""

_GET_JS = f"""(async (name, key) => {{ {_OPEN}
  const db = await open(name);
  try {{
    const tx = db.transaction(["blobs"], "readonly");
    const got = tx.objectStore("blobs").get(key);
    await done(tx);
    return got.result;
  }} finally {{ db.close(); }}
}})"""

_PUT_JS = f"""(async (name, key, bytes) => {{ {_OPEN}
  const db = await open(name);
  try {{
    const tx = db.transaction(["blobs"], "readwrite");
    tx.objectStore("blobs").put(bytes, key);
    await done(tx);
  }} finally {{ db.close(); }}
}})"""


async def blob_keys(database: str) -> list[str]:
    import json

    return list(json.loads(str(await run_js(_KEYS_JS)(database))))


async def raw_entry(database: str, key: str) -> bytes:
    value = await run_js(_GET_JS)(database, key)
    return bytes(value.to_bytes())


async def blobs_database(name: str) -> str:
    return next(n for n in await idb_databases() if n.endswith(f":{name}:blobs"))


async def connect(client_api, todos, url: str, name: str, **kw):
    return await client_api(url, schema=todos.schema, mutators=todos.mutators, name=name, **kw)


async def test_put_upload_download_and_a_corrupted_entry(client_api, todos, server_url, run_id):
    data = f"blob of run {run_id} ".encode() * 20_000
    hash = hashlib.sha256(data).hexdigest()
    a = await connect(client_api, todos, server_url, f"blobs-a-{run_id}")
    b = await connect(client_api, todos, server_url, f"blobs-b-{run_id}")
    try:
        assert isinstance(a.blobs.cache, IndexedDBBlobCache)
        # Let the loop's first cycle end first: offline() does not stop a cycle already
        # under way, and that cycle would upload the blob queued below.
        await a.sync()
        a.offline()
        assert await a.blobs.put(data) == hash
        a_db = await blobs_database(f"blobs-a-{run_id}")
        assert await blob_keys(a_db) == [hash]
        assert await raw_entry(a_db, hash) == data
        assert [(p.hash, p.size) for p in a.blobs.status()] == [(hash, len(data))]

        a.online()
        await a.sync()
        assert a.blobs.status() == []

        # B downloads, checks and caches it in its own IndexedDB.
        assert await b.blobs.get(hash) == data
        b_db = await blobs_database(f"blobs-b-{run_id}")
        assert await raw_entry(b_db, hash) == data
        b.offline()
        assert await b.blobs.get(hash) == data  # from the cache: no server needed

        # A corrupted entry is detected (offline: it cannot be fetched again yet)...
        await run_js(_PUT_JS)(b_db, hash, to_js(b"bit rot" + data[7:]))
        with pytest.raises(BlobNotFound, match="offline"):
            await b.blobs.get(hash)
        # ...and fetched again once online.
        b.online()
        assert await b.blobs.get(hash) == data
        assert await raw_entry(b_db, hash) == data
    finally:
        await a.close()
        await b.close()


async def test_the_upload_queue_survives_a_page_reload(client_api, todos, server_url, run_id):
    name = f"blobs-reload-{run_id}"
    data = f"queued across a reload {run_id}".encode()
    hash = hashlib.sha256(data).hexdigest()
    c = await connect(client_api, todos, server_url, name)
    c.offline()
    await c.blobs.put(data)
    await c.close()

    c = await connect(client_api, todos, server_url, name)
    try:
        assert [p.hash for p in c.blobs.status()] == [hash]
        await c.sync()
        assert c.blobs.status() == []
    finally:
        await c.close()
    probe = await connect(client_api, todos, server_url, f"blobs-probe-{run_id}",
                          storage="memory")
    try:
        assert await probe.blobs.get(hash) == data
    finally:
        await probe.close()
