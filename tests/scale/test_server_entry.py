"""The deployable companion server's entry (server/main.py): an app built from PLASMA_*
environment variables, one clear line for a bad setting, and its two ways to run
(``uvicorn server.main:app`` and ``python -m server.main``)."""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from server.main import SettingsError, build_app, settings_from
from tests.scale.cluster import mutation, pull_body, push_body
from tests.server.helpers import ROOT, free_port, run_env
from tests.server.pg import isolated_schema, server_url, with_params

APP = str(ROOT / "tests" / "scale" / "app.py")
EXAMPLES = ROOT / "server"


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Relative paths (./plasma.db, ./plasma-blobs) land in the test's directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def sqlite_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"PLASMA_SCHEMA": APP, "PLASMA_DB": f"sqlite:///{tmp_path / 'entry.db'}", **extra}


@contextlib.asynccontextmanager
async def served(env: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of the app that ``env`` describes, closed at the end."""
    app = build_app(env)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app),
                                     base_url="http://test") as http:
            yield http
    finally:
        await app.state.plasma.close()


async def test_the_app_is_built_from_the_environment(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<h1>the lite site</h1>")
    env = sqlite_env(
        tmp_path,
        PLASMA_CORS_ORIGINS="https://a.example, https://b.example:8443",
        PLASMA_SITE_DIR=str(site),
        PLASMA_MAX_MUTATIONS_PER_PUSH="50",
        PLASMA_MAX_BODY_BYTES="65536",
    )
    async with served(env) as http:
        assert (await http.get("/healthz")).json()["ok"] is True
        described = (await http.get("/sync/schema")).json()
        assert described["limits"]["maxMutationsPerPush"] == 50
        assert described["limits"]["maxBodyBytes"] == 65536
        assert set(described["tables"]) == {"notes", "counters"}
        preflight = await http.options("/sync/push", headers={
            "Origin": "https://b.example:8443", "Access-Control-Request-Method": "POST"})
        assert preflight.headers["access-control-allow-origin"] == "https://b.example:8443"
        assert "the lite site" in (await http.get("/")).text
    assert (tmp_path / "entry.db").exists()


@pytest.mark.postgres
async def test_the_app_runs_on_postgres_from_the_environment(tmp_path: Path) -> None:
    base = server_url()
    async with isolated_schema(base) as namespace:
        env = {"PLASMA_SCHEMA": APP, "PLASMA_DB": with_params(base, schema=namespace)}
        async with served(env) as http:
            body = push_body("entry", [mutation("entry-c", 1, "add_note", id="n1",
                                                author="entry", n=1)])
            assert (await http.post("/sync/push", json=body)).status_code == 200
            pulled = (await http.post("/sync/pull", json=pull_body("entry", None))).json()
            assert pulled["lastMutationIDChanges"] == {"entry-c": 1}
            assert {op.get("key") for op in pulled["patch"]} >= {"notes/n1"}


BAD = [
    ({"PLASMA_SCHEMA": ""}, r"PLASMA_SCHEMA is not set"),
    ({"PLASMA_SCHEMA": "missing.py"}, r"PLASMA_SCHEMA: schema file 'missing.py' does not exist"),
    ({"PLASMA_DB": "mysql://localhost/db"}, r"PLASMA_DB='mysql://localhost/db' is not a "
                                             r"database URL"),
    ({"PLASMA_DB": "postgresql://u:secret@h/db?schema=no-dash"},
     r"schema 'no-dash' in the database URL must be an identifier"),
    ({"PLASMA_BLOBS": "ftp://bucket"}, r"PLASMA_BLOBS='ftp://bucket' is not a blob store URL"),
    ({"PLASMA_TOKEN_FILE": "no-such-tokens.txt"},
     r"PLASMA_TOKEN_FILE='no-such-tokens.txt' is not a file"),
    ({"PLASMA_CORS_ORIGINS": "https://a.example/app"}, r"PLASMA_CORS_ORIGINS: "
                                                        r"'https://a.example/app' is not an "
                                                        r"origin"),
    ({"PLASMA_SITE_DIR": "/no/such/dir"}, r"PLASMA_SITE_DIR='/no/such/dir' is not a directory"),
    ({"PLASMA_MAX_BODY_BYTES": "lots"}, r"PLASMA_MAX_BODY_BYTES must be a positive integer, "
                                        r"got 'lots'"),
    ({"PLASMA_MAX_MUTATIONS_PER_PUSH": "0"}, r"PLASMA_MAX_MUTATIONS_PER_PUSH must be a positive"),
    ({"PLASMA_PORT": "99999"}, r"PLASMA_PORT must be at most 65535"),
    ({"PLASMA_INSECURE": "maybe"}, r"PLASMA_INSECURE must be 1 or 0"),
    ({"PLASMA_LOG_LEVEL": "loud"}, r"PLASMA_LOG_LEVEL must be one of"),
]


@pytest.mark.parametrize(("changes", "message"), BAD, ids=[next(iter(c)) for c, _ in BAD])
def test_a_bad_setting_is_named(tmp_path: Path, changes: dict[str, str], message: str) -> None:
    env = {**sqlite_env(tmp_path), **changes}
    with pytest.raises(SettingsError, match=message) as caught:
        build_app(env)
    assert "secret" not in str(caught.value)  # passwords never reach the message


def _example(name: str, **overrides: str) -> dict[str, str]:
    """The KEY=VALUE lines of an example file (quotes stripped, as a shell would)."""
    env: dict[str, str] = {}
    for line in (EXAMPLES / name).read_text().splitlines():
        if re.match(r"[A-Z_]+=", line):
            key, _, value = line.partition("=")
            env[key] = value.strip().strip("'\"")
    env.update(overrides)
    return env


def test_the_example_settings_are_valid(tmp_path: Path) -> None:
    sqlite = settings_from(_example("sqlite.env.example"))
    assert sqlite.db == "sqlite:///plasma.db" and sqlite.host == "127.0.0.1"
    postgres = settings_from(_example("postgres-r2.env.example"))
    assert postgres.db.startswith("postgresql://") and postgres.insecure
    assert postgres.cors_origins == ("https://notebooks.example.org",)
    # Its R2 line, once uncommented, is a valid blob store URL.
    text = (EXAMPLES / "postgres-r2.env.example").read_text()
    [r2] = re.findall(r"^# (PLASMA_BLOBS=.*)$", text, re.M)
    blobs = r2.partition("=")[2].strip("'")
    assert settings_from(_example("postgres-r2.env.example", PLASMA_BLOBS=blobs)).blobs == blobs
    # The sqlite example builds an app as it stands (its schema path is the repository's).
    app = build_app(_example("sqlite.env.example",
                             PLASMA_SCHEMA=str(ROOT / "notebooks" / "todos.py")))
    assert app.state.plasma.schema is not None


# -- the two ways to run it, as processes ---------------------------------------------------


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    full = {k: v for k, v in run_env().items() if not k.startswith("PLASMA_")}
    full.update(env)
    return subprocess.Popen([sys.executable, *args], cwd=cwd, env=full, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGINT) -> tuple[str, str]:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate(timeout=5)


def _wait_healthy(url: str, proc: subprocess.Popen[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode}: {_stop(proc)[1]}")
        try:
            answer = httpx.get(f"{url}/healthz", timeout=1.0)
            if answer.status_code == 200:
                result: dict[str, Any] = answer.json()
                return result
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError("no answer on /healthz")


@pytest.mark.slow
def test_uvicorn_serves_the_app_and_a_bad_setting_is_one_line(tmp_path: Path) -> None:
    port = free_port()
    proc = _run(["-m", "uvicorn", "server.main:app", "--host", "127.0.0.1", "--port", str(port)],
                sqlite_env(tmp_path), ROOT)
    try:
        assert _wait_healthy(f"http://127.0.0.1:{port}", proc)["ok"] is True
    finally:
        _stop(proc)
    assert proc.returncode is not None

    bad = _run(["-m", "uvicorn", "server.main:app", "--port", str(free_port())],
               {"PLASMA_DB": "mysql://nope"}, ROOT)
    _, err = bad.communicate(timeout=30)
    assert bad.returncode == 2
    assert err.strip().splitlines()[-1].startswith("plasma server: error: PLASMA_SCHEMA is not set")
    assert "Traceback" not in err


@pytest.mark.slow
def test_python_m_server_main_serves_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    proc = _run(["-m", "server.main"], sqlite_env(tmp_path, PLASMA_PORT=str(port),
                                                   PLASMA_LOG_LEVEL="warning"), ROOT)
    try:
        assert _wait_healthy(f"http://127.0.0.1:{port}", proc)["ok"] is True
    finally:
        out, err = _stop(proc, signal.SIGTERM)
    assert proc.returncode == 0, err
    assert f"serving {APP} on http://127.0.0.1:{port}" in out
    assert "Traceback" not in err

    refused = _run(["-m", "server.main"], sqlite_env(tmp_path, PLASMA_HOST="0.0.0.0"), ROOT)
    _, err = refused.communicate(timeout=30)
    assert refused.returncode == 2
    assert "refusing to listen on PLASMA_HOST='0.0.0.0' without auth" in err
    assert "Traceback" not in err


def test_importing_the_module_needs_no_settings() -> None:
    # `app` is built when first read (by uvicorn), not when the module is imported.
    import server.main

    assert "app" not in vars(server.main)


def test_a_token_file_turns_auth_on(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("secret-token alice\n")
    app = build_app({**sqlite_env(tmp_path), "PLASMA_TOKEN_FILE": str(tokens)})
    with TestClient(app) as http:
        assert http.get("/sync/schema").status_code == 401
        described = http.get("/sync/schema", headers={"Authorization": "Bearer secret-token"})
        assert described.status_code == 200 and described.json()["user"] == "alice"
