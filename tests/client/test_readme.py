"""The README's client session runs as written against a real ``plasma-nb serve``.

The Python block of README.md is run in a fresh interpreter, with top-level ``await``
allowed (as in a notebook cell or ``python -m asyncio``), against ``plasma-nb serve
notebooks/todos.py`` on a free port, so the README cannot drift from the code.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
README_URL = "http://127.0.0.1:8000"

DRIVER = """
import ast, asyncio, sys
source = sys.stdin.read()
code = compile(source, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
result = eval(code, {"__name__": "__main__"})
if asyncio.iscoroutine(result):
    asyncio.run(result)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def readme_python() -> str:
    blocks = re.findall(r"^```python\n(.*?)^```$", README.read_text(), re.S | re.M)
    assert len(blocks) == 1, "README.md should hold exactly one python block"
    return blocks[0]


def test_the_readme_client_session_runs(tmp_path: Path) -> None:
    source = readme_python()
    assert README_URL in source and "await h.confirmed" in source
    port = free_port()
    env = dict(os.environ, PLASMA_NB_HOME=str(tmp_path / "home"), PYTHONDONTWRITEBYTECODE="1",
               PYTHONPATH=os.pathsep.join([str(ROOT / "notebooks"), str(ROOT)]))
    server = subprocess.Popen(
        [sys.executable, "-m", "plasma_nb", "serve", str(ROOT / "notebooks" / "todos.py"),
         "--port", str(port), "--db", f"sqlite:///{tmp_path / 'plasma.db'}",
         "--log-level", "warning"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        # The client retries until the server is up, so no need to wait for it here.
        run = subprocess.run(
            [sys.executable, "-c", DRIVER],
            input=source.replace(README_URL, f"http://127.0.0.1:{port}"),
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
        )
    finally:
        server.terminate()
        out, _ = server.communicate(timeout=15)
    assert run.returncode == 0, f"{run.stderr}\n--- server ---\n{out}"
    # The output the README shows in its comment.
    expected = re.search(r"# (Buy milk \w+)$", source, re.M)
    assert expected is not None
    assert run.stdout.strip() == expected.group(1)
    assert (tmp_path / "home" / "todos.db").exists()  # the replica the README names
