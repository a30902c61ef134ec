"""`plasma-nb serve` as a real process on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess

import httpx
import pytest
import websockets

from tests.server.helpers import (
    add,
    free_port,
    plasma_command,
    pull_body,
    push_body,
    query,
    run_env,
)

pytestmark = pytest.mark.slow


def test_serve_answers_a_push_and_a_pull_and_stops_cleanly_on_sigint(serve, tmp_path):
    served = serve()

    with httpx.Client(base_url=served.url) as c:
        health = c.get("/healthz")
        assert health.status_code == 200
        assert health.json()["ok"] is True

        pushed = c.post("/sync/push", json=push_body(add("c1", 1, "t1", "Buy milk"),
                                                      add("c1", 2, "t2", " ")))
        assert pushed.status_code == 200
        assert pushed.json() == {"mutationErrors": [{
            "clientID": "c1", "id": 2, "name": "add_todo",
            "message": "title must not be empty"}]}

        pulled = c.post("/sync/pull", json=pull_body())
        assert pulled.status_code == 200
        body = pulled.json()
        assert body["patch"] == [
            {"op": "clear"},
            {"op": "put", "key": "todos/t1", "value": {
                "id": "t1", "title": "Buy milk", "done": False, "owner": None,
                "photo": None}},
        ]
        assert body["lastMutationIDChanges"] == {"c1": 2}

        schema = c.get("/sync/schema").json()
        assert schema["version"] == "1"
        assert sorted(schema["tables"]["todos"]["columns"]) == [
            "done", "id", "owner", "photo", "title"]

    assert served.interrupt() == 0
    assert "Traceback" not in served.stderr
    assert "ERROR" not in served.stderr
    assert f"on {served.url} (database sqlite:///p.db)" in served.stdout
    # --db sqlite:///p.db is relative to the working directory.
    assert query(tmp_path / "p.db", "SELECT id FROM todos") == [("t1",)]


def test_sigterm_stops_it_cleanly_too(serve):
    served = serve()
    served.proc.send_signal(signal.SIGTERM)
    served.collect()
    assert served.proc.returncode == 0
    assert "Traceback" not in served.stderr


def test_a_restarted_server_keeps_its_data_and_cookie(serve):
    first = serve()
    with httpx.Client(base_url=first.url) as c:
        assert c.post("/sync/push", json=push_body(add("c1", 1, "t1"))).json() == {}
        cookie = c.post("/sync/pull", json=pull_body()).json()["cookie"]
    assert first.interrupt() == 0

    second = serve()
    with httpx.Client(base_url=second.url) as c:
        assert c.post("/sync/push", json=push_body(add("c1", 1, "t1"))).json() == {}
        since = c.post("/sync/pull", json=pull_body(cookie)).json()
        assert since["cookie"] == cookie
        assert since["patch"] == []
        full = c.post("/sync/pull", json=pull_body()).json()
        assert full["lastMutationIDChanges"] == {"c1": 1}
    assert second.interrupt() == 0


def test_serve_refuses_an_incompatible_database_with_a_clear_error(serve, tmp_path):
    for version, body_type in (("v1", "text"), ("v2", "integer")):
        (tmp_path / f"{version}.py").write_text(
            "from plasma_nb import Mutators, Schema, col, table\n"
            f"notes = table('notes', id=col.id(), body=col.{body_type}())\n"
            "schema = Schema([notes])\n"
            "mutators = Mutators(schema)\n"
        )
    assert serve(schema="v1.py").interrupt() == 0

    refused = subprocess.run(
        plasma_command("serve", "v2.py", "--db", "sqlite:///p.db", "--port", str(free_port())),
        cwd=tmp_path, env=run_env(), capture_output=True, text=True, timeout=30,
    )
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "plasma-nb: error: notes.body is TEXT in the database but the schema declares "
        "integer (INTEGER); change it with a new column instead"
    )


async def test_a_real_websocket_gets_pokes_and_ctrl_c_still_stops_cleanly(serve):
    served = serve()
    ws_url = f"ws://127.0.0.1:{served.port}/sync/ws?clientGroupID=g1"
    async with websockets.connect(ws_url) as ws, httpx.AsyncClient(base_url=served.url) as c:
        hello = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert hello["type"] == "poke"
        pushed = await c.post("/sync/push", json=push_body(add("c1", 1, "t1"), group="g2"))
        assert pushed.status_code == 200
        poke = json.loads(await asyncio.wait_for(ws.recv(), 5))
        cookie = (await c.post("/sync/pull", json=pull_body(group="g1"))).json()["cookie"]
        assert poke == {"type": "poke", "cookie": cookie}
        assert cookie > hello["cookie"]

        # Ctrl-C with a listener connected: the listener is told, the server exits 0.
        served.proc.send_signal(signal.SIGINT)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code in (1001, 1012)
    served.collect()
    assert served.proc.returncode == 0
    assert "Traceback" not in served.stderr
