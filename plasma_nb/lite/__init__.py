"""Building the JupyterLite site: ``plasma-nb lite build`` and ``plasma-nb demo``.

Build-time only: this package runs in CPython with the ``lite`` extra installed
(``pip install 'plasma-nb[lite]'``) and is never imported by the engines or in
Pyodide. It imports the standard library, plus ``packaging`` lazily (from the
extra); JupyterLite itself runs as a subprocess. See docs/browser.md.

- :mod:`.build`: the site (contents, widget extensions, the plasma_nb wheel, the
  piplite index, the configuration) and the demo's cached site;
- :mod:`.pyodide_dist`: the self-hosted Pyodide of an ``--offline`` site (npm core,
  wheels from PyPI, precompiled bytecode, a regenerated ``pyodide-lock.json``);
- :mod:`.wheels`: reading, building, downloading and rewriting wheels;
- :mod:`.resources`: where things are (the cache, the site config, the notebooks).
"""

from __future__ import annotations

from .errors import LiteBuildError

__all__ = ["LiteBuildError"]
