"""tests/pyodide: the client engine inside Pyodide (Node + fake-indexeddb).

Only ``test_in_pyodide.py`` runs in CPython. The modules in ``inside/`` run inside
Pyodide (the harness starts pytest there), so CPython's pytest must not collect
them; ``node/`` is the harness's Node project.
"""

import sys

if sys.platform != "emscripten":
    collect_ignore = ["inside", "node"]
