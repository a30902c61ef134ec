"""The notebook package imports without its optional dependencies (a bare Pyodide kernel)
and says what a feature needs when one is missing."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.notebook.helpers import child_env

BLOCKED = ("pandas", "duckdb", "anywidget", "ipywidgets", "IPython", "traitlets")


def run_without_optional_packages(code: str) -> str:
    script = textwrap.dedent(f"""
        import sys
        for name in {BLOCKED!r}:
            sys.modules[name] = None  # `import name` now raises ImportError
        {textwrap.indent(textwrap.dedent(code), '        ').strip()}
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=child_env(), timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_package_imports_and_names_what_is_missing() -> None:
    out = run_without_optional_packages("""
        import plasma_nb.notebook as nb
        from plasma_nb.notebook import commands, display, parameters, rerun, values
        for name in ("LiveTable", "PlasmaMagics"):
            try:
                getattr(nb, name)
            except ImportError as exc:
                print(name, "->", exc)
        try:
            nb.DuckEngine(object())
        except ImportError as exc:
            print("DuckEngine ->", exc)
        try:
            nb.load_ipython_extension(object())
        except ImportError as exc:
            print("load ->", exc)
    """)
    assert ("LiveTable -> LiveTable needs anywidget, which is not installed: pip install "
            "anywidget (or pip install 'plasma-nb[notebook]')") in out
    assert "PlasmaMagics -> the %plasma magics needs ipython" in out
    assert "DuckEngine -> %%plasma sql --engine duckdb needs duckdb, which is not installed" in out
    assert "load -> %load_ext plasma_nb needs ipython" in out


def test_a_live_query_shows_as_static_html_without_anywidget() -> None:
    out = run_without_optional_packages("""
        from plasma_nb.notebook import display
        class Live:
            columns = ["a"]
            rows = [{"a": 1}]
            def __len__(self): return 1
            def window(self, offset, limit): return self.rows[offset:offset + limit]
        bundle = display.live_mimebundle(Live())
        print(sorted(bundle))
        print(bundle["text/html"])
    """)
    assert out.splitlines()[0] == "['text/html', 'text/plain']"
    assert '<td style="text-align: right">1</td>' in out
