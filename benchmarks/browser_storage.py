"""The replica in the browser: IndexedDB at start, mutate() to durable, a 10k-change pull.

``python -m benchmarks.browser_storage [--runs N] [--site DIR] [--json PATH]``

Like ``browser_cold_start``, a script of its own, not a ``bench_*`` module and not a
timed test. Each figure is timed inside the Pyodide kernel (``time.perf_counter``
around an ``await``) of a notebook in headless Chromium, on the ``--offline`` site
served by ``plasma-nb serve notebooks/todos.py --site`` on 127.0.0.1, and set beside
a *reference*: the same work done the plainest way from JavaScript in the same page
(no Python, no SQLite). The reference is a floor to read the figure against, not a
bar it must meet:

- ``load_10k`` / ``load_100k``: ``await plasma.connect(...)`` of a replica of 10,000 /
  100,000 todos kept in IndexedDB, in a fresh kernel (a page reload; plasma_nb already
  imported). Reference: opening the same IndexedDB database from JavaScript and
  reading every key and value (``getAllKeys`` and ``getAll``).
- ``mutate_durable``: ``await client.mutate.add_todo(...)`` (local only), one at a
  time: the mutator ran and the row and its outbox entry are durable in IndexedDB.
  Reference: one ``put`` of the same row in a ``readwrite`` transaction with
  ``durability: "strict"``, awaited until ``complete``.
- ``pull_10k``: ``await client.sync()`` after 10,000 rows changed on the server
  (operator SQL), into a replica of 100,000 rows: fetch, apply, write to IndexedDB.
  Reference: ``fetch`` of the same pull (same client group and cookie) and
  ``response.json()``: the network and the server alone.

Setup (not timed): the server gets 10,000, then 100,000 rows by operator SQL, and
clients pull them into their IndexedDB databases. Prints medians and writes JSON
(default benchmarks/results/browser_storage.json).
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.standalone import browser_arguments

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = "browser_storage.ipynb"
MUTATIONS = 100  # per run
CHANGES = 10_000
SIZES = (10_000, 100_000)

SETUP = r'''
import asyncio, json, time
import plasma_nb as plasma
from js import location
from pyodide.code import run_js
from plasma_nb import select
from todos import mutators, schema, todos
URL = str(location.origin)

async def open_client(name, url=URL, **kw):
    return await plasma.connect(url, schema=schema, mutators=mutators, name=name,
                                pokes=False, pull_interval=3600, **kw)

async def count(client):
    return len(await client.query(select(todos.id)))

def database(client):
    return client.status().storage.removeprefix("indexeddb:")

RAW_LOAD = run_js("""async (name) => {
  const t0 = performance.now();
  const db = await new Promise((ok, no) => {
    const r = indexedDB.open(name); r.onsuccess = () => ok(r.result); r.onerror = () => no(r.error);
  });
  const stores = Array.from(db.objectStoreNames);
  const tx = db.transaction(stores, "readonly");
  const got = stores.map((s) => [tx.objectStore(s).getAllKeys(), tx.objectStore(s).getAll()]);
  await new Promise((ok, no) => { tx.oncomplete = ok; tx.onerror = () => no(tx.error); });
  const n = got.reduce((sum, [keys]) => sum + keys.result.length, 0);
  db.close();
  return [performance.now() - t0, n];
}""")

RAW_PUTS = run_js("""async (n, row) => {
  const db = await new Promise((ok, no) => {
    const r = indexedDB.open("bench-raw-puts", 1);
    r.onupgradeneeded = () => r.result.createObjectStore("rows");
    r.onsuccess = () => ok(r.result); r.onerror = () => no(r.error);
  });
  const times = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const tx = db.transaction(["rows"], "readwrite", { durability: "strict" });
    tx.objectStore("rows").put(row.replace("ID", String(i)), "todos/[\\"raw-" + i + "\\"]");
    await new Promise((ok, no) => { tx.oncomplete = ok; tx.onerror = () => no(tx.error); });
    times.push(performance.now() - t0);
  }
  db.close();
  return JSON.stringify(times);
}""")

RAW_PULL = run_js("""async (url, body) => {
  const t0 = performance.now();
  const r = await fetch(url, {method: "POST", headers: {"content-type": "application/json"},
                              body});
  const j = await r.json();
  return [performance.now() - t0, j.patch.length];
}""")

warm = await plasma.connect(None, schema=schema, mutators=mutators, name="bench-warm")
await warm.close()  # imports and first-use costs, outside every timing
print("READY", URL)
'''

CELLS = [
    SETUP,
    # 1, 2: fill the replicas from the server (setup), after 10k, then 100k rows there
    "async def fill(name):\n"
    "    c = await open_client(name)\n"
    "    await c.sync()\n"
    "    n = await count(c)\n"
    "    await c.close()\n"
    "    return n\n"
    "print('FILLED', json.dumps([await fill('bench-10k'), await fill('bench-pull')]))",
    "print('FILLED', json.dumps([await fill('bench-100k'), await fill('bench-pull')]))",
    # 3: load both replicas at start (a fresh kernel: the page was reloaded)
    "result = {}\n"
    "for name in ('bench-10k', 'bench-100k'):\n"
    "    t0 = time.perf_counter()\n"
    "    c = await open_client(name)\n"
    "    seconds = time.perf_counter() - t0\n"
    "    rows, db = await count(c), database(c)\n"
    "    await c.close()\n"
    "    raw_ms, raw_rows = await RAW_LOAD(db)\n"
    "    result[name] = [seconds, rows, raw_ms / 1000, raw_rows]\n"
    "print('LOAD', json.dumps(result))",
    # 4: mutate() to durable, local only
    f"m = await plasma.connect(None, schema=schema, mutators=mutators, name='bench-mutate')\n"
    f"times = []\n"
    f"for i in range({MUTATIONS}):\n"
    f"    t0 = time.perf_counter()\n"
    f"    await m.mutate.add_todo(id=plasma.new_id(), title=f'mutation {{i}} of the benchmark')\n"
    f"    times.append(time.perf_counter() - t0)\n"
    f"await m.close()\n"
    f"row = json.dumps({{'id': 'ID', 'title': 'mutation 1 of the benchmark', 'done': 0,\n"
    f"                  'owner': None, 'photo': None}})\n"
    f"raw = [t / 1000 for t in json.loads(await RAW_PUTS({MUTATIONS}, row))]\n"
    f"print('MUTATE', json.dumps([times, raw]))",
    # 5: the pull client, caught up (then the server changes 10k rows)
    "p = await open_client('bench-pull')\n"
    "await p.sync()\n"
    "print('PULL_READY', json.dumps([await count(p), p.status().cookie]))",
    # 6: the 10k-change pull, then the same pull fetched raw
    "before = p.status().cookie\n"
    "t0 = time.perf_counter()\n"
    "await p.sync()\n"
    "seconds = time.perf_counter() - t0\n"
    "body = json.dumps({'pullVersion': 1, 'clientGroupID': p.status().client_group_id,\n"
    "                   'cookie': before, 'profileID': 'bench', 'schemaVersion': '1'})\n"
    "raw_ms, raw_ops = await RAW_PULL(URL + '/sync/pull', body)\n"
    "await p.close()\n"
    "print('PULL', json.dumps([seconds, raw_ms / 1000, raw_ops]))",
]


def build(tmp: Path) -> Path:
    from benchmarks.browser_cold_start import build_with

    return build_with(tmp, NOTEBOOK, CELLS)


def insert_rows(db: Path, start: int, stop: int) -> None:
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO todos (id, title, done) VALUES (?, ?, 0)",
            ((f"row-{i:06d}", f"todo number {i} from the operator") for i in range(start, stop)))


def change_rows(db: Path, run: int) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE todos SET title = ? || id WHERE id < ?",
                     (f"run {run}: ", f"row-{CHANGES:06d}"))


def output(text: str, tag: str) -> Any:
    for line in text.splitlines():
        if line.startswith(tag + " "):
            return json.loads(line[len(tag) + 1:])
    raise RuntimeError(f"no {tag} line in the cell's output:\n{text}")


def median_ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 1)


def main(argv: list[str] | None = None) -> int:
    args = browser_arguments("browser_storage", __doc__, NOTEBOOK, runs=7, argv=argv)
    sys.path.insert(0, str(REPO))
    from tests.browser.driver import Browser, Notebook
    from tests.browser.servers import plasma_server

    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="plasma-bench-") as tmp_name:
        tmp = Path(tmp_name)
        site = args.site or build(tmp)
        server = plasma_server(tmp, site=site).start()
        db = tmp / "sync.db"
        try:
            with Browser() as browser:
                nb = Notebook(browser, server.url, NOTEBOOK)
                nb.open()
                nb.run(0, timeout=300)
                insert_rows(db, 0, SIZES[0])
                print("setup:", nb.run(1, timeout=600), flush=True)
                insert_rows(db, SIZES[0], SIZES[1])
                print("setup:", nb.run(2, timeout=900), flush=True)
                for n in range(args.runs):
                    nb.reload()
                    nb.run(0, timeout=300)
                    load = output(nb.run(3, timeout=600), "LOAD")
                    times, raw = output(nb.run(4, timeout=600), "MUTATE")
                    ready = output(nb.run(5, timeout=600), "PULL_READY")
                    change_rows(db, n)
                    pull = output(nb.run(6, timeout=600), "PULL")
                    run = {
                        "load_10k": load["bench-10k"][0], "raw_load_10k": load["bench-10k"][2],
                        "load_100k": load["bench-100k"][0],
                        "raw_load_100k": load["bench-100k"][2],
                        "rows": [load["bench-10k"][1], load["bench-100k"][1], ready[0]],
                        "raw_rows": [load["bench-10k"][3], load["bench-100k"][3]],
                        "mutate_durable": statistics.median(times),
                        "mutate_durable_p90": statistics.quantiles(times, n=10)[-1],
                        "raw_put_durable": statistics.median(raw),
                        "pull_10k": pull[0], "raw_pull_10k": pull[1], "pull_ops": pull[2],
                    }
                    runs.append(run)
                    print(f"run {n + 1}: " + ", ".join(
                        f"{k} {v * 1000:.1f} ms" for k, v in run.items()
                        if isinstance(v, float)), flush=True)
                external = browser.requests.external()
                if external:
                    raise RuntimeError(f"requests to other hosts: {external}")
        finally:
            server.stop()
    keys = [k for k, v in runs[0].items() if isinstance(v, float)]
    report: dict[str, Any] = {
        "benchmark": "browser_storage",
        "what": "the IndexedDB replica in headless Chromium (timed in the Pyodide kernel), "
                "each figure beside the same work done raw from JavaScript",
        "runs": runs,
        **{key: {"median_ms": median_ms([r[key] for r in runs]),
                 "min_ms": round(min(r[key] for r in runs) * 1000, 1),
                 "max_ms": round(max(r[key] for r in runs) * 1000, 1)} for key in keys},
    }
    for key in keys:
        s = report[key]
        print(f"{key:>20}: median {s['median_ms']:.1f} ms  "
              f"(min {s['min_ms']:.1f}, max {s['max_ms']:.1f})")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
