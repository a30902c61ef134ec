"""The ``plasma-nb`` command line (DESIGN section 4): options, refusals and the commands
that are not built yet. Serving itself is tested in tests/server/test_serve.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from plasma_nb.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
TODOS = str(ROOT / "notebooks" / "todos.py")


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m plasma_nb ARGS`` in a child process (none of these start a server)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "plasma_nb", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_serve_has_the_options_of_the_contract():
    serve = build_parser().parse_args(["serve", "todos.py"])
    assert serve.db == "sqlite:///plasma.db"
    assert serve.blobs == "file:./plasma-blobs"
    assert serve.host == "127.0.0.1"
    assert serve.port == 8000
    assert serve.site is None and serve.token_file is None
    assert serve.cors_origin is None and serve.insecure is False

    spelled = build_parser().parse_args([
        "serve", "todos.py", "--db", "sqlite:///x.db", "--blobs", "file:./b", "--host",
        "::1", "--port", "9", "--site", "site", "--token-file", "tokens",
        "--cors-origin", "http://a", "--cors-origin", "http://b", "--insecure",
    ])
    assert spelled.cors_origin == ["http://a", "http://b"]
    assert (spelled.db, spelled.blobs, spelled.host, spelled.port, spelled.site,
            spelled.token_file, spelled.insecure) == (
        "sqlite:///x.db", "file:./b", "::1", 9, "site", "tokens", True)


def test_help_lists_every_serve_option(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["serve", "--help"])
    assert stopped.value.code == 0
    out = capsys.readouterr().out
    for option in ("--db", "--blobs", "--host", "--port", "--site", "--token-file",
                   "--cors-origin", "--insecure"):
        assert option in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["blobs", "gc", "--dry-run"], "`plasma-nb blobs gc` is not supported yet"),
    ],
)
def test_commands_that_come_later_say_so(capsys, argv, message):
    assert main(argv) == 2
    assert capsys.readouterr().err == f"plasma-nb: error: {message}\n"


def test_a_non_loopback_host_is_refused_without_insecure(tmp_path):
    result = run("serve", TODOS, "--host", "0.0.0.0", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        "plasma-nb: error: refusing to listen on '0.0.0.0' without auth: anyone who can "
        "reach it could read and change every row; use a loopback --host, or pass --insecure\n"
    )
    assert not (tmp_path / "plasma.db").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--token-file", "tokens.txt"],
         "--token-file is not supported yet (auth arrives with its issue)"),
        (["--blobs", "s3://bucket?endpoint=http://127.0.0.1:9000&region=auto"],
         "--blobs is not supported yet (blob storage arrives with its issue)"),
        (["--blobs", "file:./elsewhere"],
         "--blobs is not supported yet (blob storage arrives with its issue)"),
    ],
)
def test_options_that_come_later_are_refused_not_ignored(tmp_path, args, message):
    result = run("serve", TODOS, *args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == f"plasma-nb: error: {message}\n"
    assert "Traceback" not in result.stderr


def test_an_unknown_schema_file_is_a_clear_error(tmp_path):
    result = run("serve", "missing.py", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "plasma-nb: error: schema file 'missing.py' does not exist\n"


def test_an_unknown_schema_module_is_a_clear_error(tmp_path):
    result = run("serve", "no_such_schema_module", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(
        "plasma-nb: error: cannot import schema module 'no_such_schema_module'")
    assert "Traceback" not in result.stderr


def test_a_schema_file_without_schema_and_mutators_is_a_clear_error(tmp_path):
    (tmp_path / "empty.py").write_text("x = 1\n")
    result = run("serve", "empty.py", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        "plasma-nb: error: empty.py must define `schema = Schema([...])`, found None\n")


def test_a_bad_database_url_is_a_clear_error(tmp_path):
    result = run("serve", TODOS, "--db", "mysql://localhost/db", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        "plasma-nb: error: unsupported database URL 'mysql://localhost/db': expected "
        "sqlite:///PATH or postgresql://...\n")
