"""Cold start of the ``--offline`` site in headless Chromium, to the first ``import plasma_nb``.

``python -m benchmarks.browser_cold_start [--runs N] [--site DIR] [--json PATH]``

Not a timed test and not an anchor comparison (there is no raw path to compare
with), so it is a script of its own rather than a ``bench_*`` module. Each run:

1. starts Chromium on a fresh profile (not timed: the browser's own start);
2. navigates to a notebook whose first cell is ``import plasma_nb; plasma_nb.__version__``;
3. "dom": the notebook's cells are on screen;
4. "cold": the cell's result is on screen, from navigation (Pyodide, the wheels,
   the kernel, plasma_nb: everything fetched and compiled for the first time);
5. "cold_plasma": then ``%load_ext plasma_nb`` and ``%plasma connect`` (local only,
   IndexedDB) in the next cells: navigation to the first ``%plasma`` result;
6. "reload": the first cell again after a page reload (HTTP cache warm, new kernel).

The site is built (offline, cached downloads) into a temporary directory unless
``--site`` names one that contains ``cold_start.ipynb``; it is served by
``plasma-nb serve notebooks/todos.py --site`` on 127.0.0.1. Prints median/min/max
and writes JSON (default benchmarks/results/browser_cold_start.json).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.standalone import browser_arguments

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = "cold_start.ipynb"
CELLS = [
    "import plasma_nb\nplasma_nb.__version__",
    # the first %plasma result: the magics, the schema file, a local IndexedDB replica
    "%load_ext plasma_nb",
    "%plasma connect --schema todos.py --name cold-start",
]


def build_with(tmp: Path, notebook: str, cells: list[str]) -> Path:
    """An --offline site under ``tmp`` with the example notebooks and ``notebook``."""
    from plasma_nb.lite.build import build_site
    from tests.browser.driver import write_notebook

    contents = tmp / "contents"
    contents.mkdir()
    write_notebook(contents / notebook, cells)
    site = tmp / "site"
    build_site(site, contents=[REPO / "notebooks", contents], offline=True)
    return site


def build(tmp: Path) -> Path:
    return build_with(tmp, NOTEBOOK, CELLS)


def one_run(base_url: str) -> dict[str, float]:
    from tests.browser.driver import Browser, Notebook

    with Browser() as browser:
        nb = Notebook(browser, base_url, NOTEBOOK)
        dom = nb.open()
        out = nb.run(0)
        cold = time.perf_counter() - nb.opened_at
        if "0." not in out and "1." not in out:
            raise RuntimeError(f"unexpected output of the import cell: {out!r}")
        nb.run(1)
        out = nb.run(2)
        plasma = time.perf_counter() - nb.opened_at
        if not out.startswith("Connected"):
            raise RuntimeError(f"unexpected output of the %plasma cell: {out!r}")
        nb.reload()
        nb.run(0)
        reload = time.perf_counter() - nb.opened_at
        external = browser.requests.external()
        if external:
            raise RuntimeError(f"requests to other hosts: {external}")
    return {"dom": dom, "cold": cold, "cold_plasma": plasma, "reload": reload}


KEYS = ("dom", "cold", "cold_plasma", "reload")


def summarize(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2),
            "max": round(max(values), 2)}


def main(argv: list[str] | None = None) -> int:
    args = browser_arguments("browser_cold_start", __doc__, NOTEBOOK, runs=3, argv=argv)
    sys.path.insert(0, str(REPO))
    from tests.browser.servers import plasma_server

    with tempfile.TemporaryDirectory(prefix="plasma-bench-") as tmp_name:
        tmp = Path(tmp_name)
        site = args.site or build(tmp)
        server = plasma_server(tmp, site=site).start()
        runs: list[dict[str, float]] = []
        try:
            for n in range(args.runs):
                result = one_run(server.url)
                runs.append(result)
                print(f"run {n + 1}: " + ", ".join(f"{k} {v:.2f} s" for k, v in result.items()),
                      flush=True)
        finally:
            server.stop()
    report: dict[str, Any] = {
        "benchmark": "browser_cold_start",
        "what": "navigation to the result of `import plasma_nb` in a fresh Chromium profile",
        "runs": runs,
        **{key: summarize([r[key] for r in runs]) for key in KEYS},
    }
    for key in KEYS:
        s = report[key]
        print(f"{key:>6}: median {s['median']:.2f} s  (min {s['min']:.2f}, max {s['max']:.2f})")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
