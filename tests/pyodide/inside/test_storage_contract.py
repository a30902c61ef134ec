"""The storage contract suite (tests/client/storage/test_contract.py) against real IndexedDB.

The suite's functions are imported, not copied: every test there that takes the
``backend`` fixture (the shared contract), and every one that takes no fixture at all,
is collected here as well, with ``backend`` replaced by the IndexedDB backend on
fake-indexeddb, through the real JavaScript helper. The suite's IndexedDB-specific tests
use a Python stand-in for the browser (``fake_idb``), so they are not imported; the
checks below do the same things against the real helper and fake-indexeddb.
"""

from __future__ import annotations

import importlib
import inspect
import uuid

import pytest
from pyodide.code import run_js
from pyodide_helpers import idb_dump

from plasma_nb.client.replica import Replica
from plasma_nb.client.storage.indexeddb import IndexedDBStorage
from plasma_nb.client.storage.indexeddb_format import encode_key
from plasma_nb.core.errors import StorageError

contract = importlib.import_module("tests.client.storage.test_contract")

IMPORTED = []
for _name, _fn in vars(contract).items():
    if not _name.startswith("test_") or not inspect.isfunction(_fn):
        continue
    _params = set(inspect.signature(_fn).parameters)
    if _params <= {"backend"}:
        globals()[_name] = _fn
        IMPORTED.append(_name)
del _name, _fn, _params


@pytest.fixture
def backend():
    database = f"contract-{uuid.uuid4().hex}"
    return contract.Backend(
        "indexeddb", lambda: IndexedDBStorage("t", database=database), persistent=True,
    )


def test_the_shared_suite_was_imported() -> None:
    assert len([n for n in IMPORTED if "backend" in inspect.signature(getattr(
        contract, n)).parameters]) >= 5, IMPORTED


# -- the suite's IndexedDB-specific checks, against the real helper ------------------------

items = contract.items


async def open_replica(database: str) -> Replica:
    replica = Replica(IndexedDBStorage("t", database=database), contract.schema)
    await replica.open()
    return replica


_FAULTY_JS = """
(helper) => {
  // The real helper, except that while `fail` is set a write issues its requests and then
  // the transaction aborts, as IndexedDB does on QuotaExceededError.
  const faulty = Object.create(helper);
  faulty.fail = false;
  faulty.write = function (db, store, payload) {
    if (!faulty.fail) return helper.write(db, store, payload);
    const tx = db.transaction([store], "readwrite", { durability: "strict" });
    const { puts } = JSON.parse(payload);
    for (const [k, v] of puts) tx.objectStore(store).put(v, k);
    const done = new Promise((resolve, reject) => {
      tx.oncomplete = () => resolve(null);
      tx.onabort = () => reject(new Error("QuotaExceededError (simulated abort)"));
    });
    tx.abort();
    return done;
  };
  return faulty;
}
"""


async def test_indexeddb_an_aborted_write_breaks_the_storage() -> None:
    database = f"faulty-{uuid.uuid4().hex}"
    replica = await open_replica(database)
    storage = replica.storage
    try:
        await contract.insert(replica, ("a", "kept")).durable
        faulty = run_js(_FAULTY_JS)(storage._helper)
        storage._helper = faulty
        faulty.fail = True
        w = contract.insert(replica, ("b", "lost"))
        with pytest.raises(StorageError, match="IndexedDB write failed"):
            await w.durable
        faulty.fail = False
        w2 = contract.insert(replica, ("c", "after the hole"))
        with pytest.raises(StorageError, match="earlier write"):
            await w2.durable
    finally:
        await replica.close()
    stored = await idb_dump(database)
    assert encode_key("items", ("a",)) in stored
    assert encode_key("items", ("b",)) not in stored
    assert encode_key("items", ("c",)) not in stored
    # Reopening recovers the last durable state.
    again = await open_replica(database)
    try:
        assert contract.labels(again) == {"a": "kept"}
    finally:
        await again.close()


_SPY_JS = """
(db) => {
  const calls = [];
  const original = db.transaction.bind(db);
  db.transaction = (stores, mode, options) => {
    calls.push(JSON.stringify([mode, options || null]));
    return original(stores, mode, options);
  };
  return calls;
}
"""


async def test_indexeddb_one_strict_transaction_per_commit() -> None:
    database = f"spy-{uuid.uuid4().hex}"
    replica = await open_replica(database)
    try:
        calls = run_js(_SPY_JS)(replica.storage._db)
        w = contract.insert(replica, ("a", "1"), ("b", "2"), ("c", "3"))
        assert not w.durable.done()  # resolves on the transaction's `complete`, later
        await w.durable
        writes = [str(c) for c in calls if '"readwrite"' in str(c)]
        assert writes == ['["readwrite",{"durability":"strict"}]']
    finally:
        await replica.close()


async def test_indexeddb_a_rolled_back_transaction_writes_nothing() -> None:
    database = f"rollback-{uuid.uuid4().hex}"
    replica = await open_replica(database)
    try:
        with pytest.raises(RuntimeError), replica.write() as w:
            w.conn.execute("INSERT INTO items (id, label) VALUES ('x', 'gone')")
            raise RuntimeError("abort")
    finally:
        await replica.close()
    assert not any(k.startswith("items/") for k in await idb_dump(database))
