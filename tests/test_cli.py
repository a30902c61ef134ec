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


def test_blobs_gc_has_its_options():
    gc = build_parser().parse_args(["blobs", "gc"])
    assert (gc.dry_run, gc.db, gc.blobs, gc.grace) == (
        False, "sqlite:///plasma.db", "file:./plasma-blobs", 86400.0)
    spelled = build_parser().parse_args([
        "blobs", "gc", "--dry-run", "--db", "sqlite:///x.db", "--blobs", "file:./b",
        "--grace", "60"])
    assert (spelled.dry_run, spelled.db, spelled.blobs, spelled.grace) == (
        True, "sqlite:///x.db", "file:./b", 60.0)


def test_blobs_gc_refuses_a_missing_database(capsys, tmp_path):
    assert main(["blobs", "gc", "--db", f"sqlite:///{tmp_path}/none.db"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("plasma-nb: error: cannot open the database ")
    assert not (tmp_path / "none.db").exists()


def test_a_non_loopback_host_is_refused_without_insecure(tmp_path):
    result = run("serve", TODOS, "--host", "0.0.0.0", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        "plasma-nb: error: refusing to listen on '0.0.0.0' without auth: anyone who can "
        "reach it could read and change every row; use a loopback --host, give "
        "--token-file, or pass --insecure\n"
    )
    assert not (tmp_path / "plasma.db").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--token-file", "tokens.txt"],
         "cannot read the token file 'tokens.txt': [Errno 2] No such file or directory: "
         "'tokens.txt'"),
        (["--blobs", "ftp://bucket"],
         "unsupported blob store URL 'ftp://bucket': expected file:DIR or "
         "s3://BUCKET?endpoint=URL&region=R"),
        (["--blobs", "s3://bucket?endpoint=http://127.0.0.1:9000&color=red"],
         "blob store URL 's3://bucket?endpoint=http://127.0.0.1:9000&color=red': unknown "
         "option 'color' (known: endpoint, region; credentials come from the AWS variables)"),
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


def test_a_malformed_token_file_names_its_line(tmp_path):
    (tmp_path / "tokens.txt").write_text("# who may sync\nt-alice alice\nt-bob\n")
    result = run("serve", TODOS, "--token-file", "tokens.txt", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        "plasma-nb: error: tokens.txt, line 3: expected `TOKEN USER` (two fields separated "
        "by spaces), got 1 field\n"
    )
    assert not (tmp_path / "plasma.db").exists()
