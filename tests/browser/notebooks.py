"""The notebooks the browser tests open, written into the test site's contents.

Each is a list of code cells; tests run them by index. They sit next to the example
notebooks (``notebooks/``), so ``from todos import ...`` imports the same schema file
that the test's ``plasma-nb serve notebooks/todos.py`` runs.
"""

from __future__ import annotations

from pathlib import Path

from tests.browser.driver import write_notebook

IMPORTS = (
    "import sys\n"
    "import plasma_nb as plasma\n"
    "from plasma_nb import select\n"
    "from todos import mutators, schema, todos\n"
    "print('plasma_nb', plasma.__version__, sys.platform, sys.version.split()[0])"
)

#: local only (url=None): the replica and its outbox in IndexedDB, no server involved
LOCAL = [
    IMPORTS + "\n"
    "client = await plasma.connect(None, schema=schema, mutators=mutators, name='e2e-local')\n"
    "print('STORAGE', client.status().storage)",
    # 1: a local mutation, awaited until durable in IndexedDB
    "h = client.mutate.add_todo(id='local-1', title='written in the browser')\n"
    "await h\n"
    "print('DURABLE')",
    # 2: read the replica
    "rows = await client.query(select(todos.id, todos.title).order_by(todos.id))\n"
    "print('ROWS', [(r['id'], r['title']) for r in rows])",
    # 3: %pip finds plasma-nb in the site's own index (PyPI is off): already there, a no-op
    "%pip install plasma-nb\n"
    "import micropip\n"
    "print('PIP', micropip.list()['plasma-nb'].version)",
]

#: against the page's own origin (the site served by ``plasma-nb serve --site``)
SYNC = [
    IMPORTS + "\n"
    "from js import location\n"
    "client = await plasma.connect(str(location.origin), schema=schema, mutators=mutators,\n"
    "                              name='e2e-sync')\n"
    "print('URL', client.status().url)",
    # 1: mutate, then push and pull now
    "h = client.mutate.add_todo(id=f'browser-{plasma.new_id()}', title='from the browser')\n"
    "await h\n"
    "await client.sync()\n"
    "print('CONFIRMED', await h.confirmed)",
    # 2: what the replica holds (rows from every client, after a sync)
    "await client.sync()\n"
    "rows = await client.query(select(todos.id, todos.title).order_by(todos.id))\n"
    "print('ROWS', sorted(r['title'] for r in rows))",
]

#: the magics and a live table, against the page's own origin (two profiles open it)
MAGICS = [
    "%load_ext plasma_nb",
    "import plasma_nb\n"
    "from js import location\n"
    "server = str(location.origin)\n"
    "print('SERVER', server)",
    # No URL: the page's origin, since the site is served by `plasma-nb serve --site`.
    "%plasma connect --schema todos.py --name e2e-magics",
    "%%plasma sql --live\nSELECT title, done FROM todos ORDER BY title",
    "row_id = plasma_nb.new_id()\n"
    "%plasma mutate add_todo id=:row_id title='added by profile A'",
]

#: the site on a static host; sync servers on the next two ports, with and without CORS
HOSTED = [
    "%load_ext plasma_nb",
    "import plasma_nb\n"
    "from js import location\n"
    "port = int(location.port)\n"
    "with_cors, without_cors = f'http://127.0.0.1:{port + 1}', f'http://127.0.0.1:{port + 2}'\n"
    "print('SITE', location.origin)",
    "%plasma connect {without_cors} --schema todos.py --name e2e-refused",
    "%plasma connect {with_cors} --schema todos.py --name e2e-hosted",
    "%%plasma sql --live\nSELECT title FROM todos ORDER BY title",
    "row_id = plasma_nb.new_id()\n"
    "%plasma mutate add_todo id=:row_id title='queued while the server was down'",
    "client = %plasma client\n"
    "print('PENDING', client.status().pending)",
    # 7: what each client's status says about its server (the sync loop's own attempts)
    "import asyncio\n"
    "refused = %plasma client --name e2e-refused\n"
    "hosted = %plasma client --name e2e-hosted\n"
    "for _ in range(150):\n"
    "    if (refused.status().last_error and refused.status().pokes == 'unavailable'\n"
    "            and hosted.status().pokes == 'connected'):\n"
    "        break\n"
    "    await asyncio.sleep(0.1)\n"
    "print('REFUSED ERROR', refused.status().last_error)\n"
    "print('REFUSED POKES', refused.status().pokes, refused.status().pokes_detail)\n"
    "print('HOSTED POKES', hosted.status().pokes)",
]

#: opened in two pages (tabs) of one browser at once: one database, two clients
TABS = [
    IMPORTS + "\n"
    "import asyncio, json\n"
    "from js import location\n"
    "client = await plasma.connect(str(location.origin), schema=schema, mutators=mutators,\n"
    "                              name='e2e-tabs')\n"
    "live = client.live(select(todos.id, todos.title).order_by(todos.id))\n"
    "me = client.status().client_id\n"
    "print('CLIENT', me, client.status().client_group_id)",
    # 1: a row of this tab's own, durable in IndexedDB
    "await client.mutate.add_todo(id='tab-' + me, title='from ' + me)\n"
    "print('MINE', 'tab-' + me)",
    # 2: both tabs' rows, as this tab's live query shows them (nothing run here but waiting)
    "for _ in range(300):\n"
    "    tabs = [r['id'] for r in live.rows if r['id'].startswith('tab-')]\n"
    "    if len(tabs) == 2:\n"
    "        break\n"
    "    await asyncio.sleep(0.1)\n"
    "print('SEEN', len(tabs))",
    # 3: (first tab only) a row both tabs then edit
    "await client.mutate.add_todo(id='shared', title='shared')\n"
    "print('SHARED')",
    # 4: wait until the shared row shows here, then rename it
    "for _ in range(300):\n"
    "    if any(r['id'] == 'shared' for r in live.rows):\n"
    "        break\n"
    "    await asyncio.sleep(0.1)\n"
    "h = client.mutate.rename(id='shared', title='renamed by ' + me)\n"
    "await h\n"
    "print('RENAMED')",
    # 5: sync, then what this tab holds
    "await client.sync()\n"
    "await client.sync()\n"
    "await h.confirmed\n"
    "rows = await client.query(select(todos.id, todos.title).order_by(todos.id))\n"
    "print('ROWS', json.dumps({r['id']: r['title'] for r in rows}, sort_keys=True))\n"
    "print('PENDING', client.status().pending)",
]

NOTEBOOKS = {
    "e2e_local.ipynb": LOCAL,
    "e2e_sync.ipynb": SYNC,
    "e2e_magics.ipynb": MAGICS,
    "e2e_hosted.ipynb": HOSTED,
    "e2e_tabs.ipynb": TABS,
}


def write_all(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, cells in NOTEBOOKS.items():
        write_notebook(directory / name, cells, markdown=f"# {name} (written by tests/browser)")
