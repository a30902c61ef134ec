"""Pokes over WebSocket ``/sync/ws``: the server says when its version advanced, whoever
advanced it. Starlette's TestClient runs the app's lifespan (and so the poke hub)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from starlette.testclient import TestClient, WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from notebooks import todos
from plasma_nb.server import create_app
from tests.server.helpers import add, db_version, pull_body, push_body, sqlite_connect


@pytest.fixture
def backend() -> str:
    """SQLite only: the Postgres pokes are tested in test_postgres_backend.py."""
    return "sqlite"

def receive(ws: WebSocketTestSession, timeout: float = 5.0) -> dict[str, Any]:
    """The next message as JSON; fails after ``timeout`` seconds instead of hanging."""

    async def next_message() -> Any:
        with anyio.fail_after(timeout):
            return await ws._send_rx.receive()

    message = ws.portal.call(next_message)
    assert message["type"] == "websocket.send", message
    result: dict[str, Any] = json.loads(message["text"])
    return result


def receive_cookie(ws: WebSocketTestSession, above: int) -> int:
    """Wait for a poke with a cookie above ``above``; return that cookie."""
    deadline = time.monotonic() + 5.0
    while True:
        poke = receive(ws, max(0.01, deadline - time.monotonic()))
        assert set(poke) == {"type", "cookie"} and poke["type"] == "poke"
        if poke["cookie"] > above:
            return int(poke["cookie"])


@pytest.fixture
def live(db_path: Path) -> Iterator[TestClient]:
    app = create_app(todos.schema, todos.mutators, database=f"sqlite:///{db_path}")
    with TestClient(app) as client:  # runs the lifespan: the hub polls PRAGMA data_version
        yield client


def test_a_listener_gets_the_current_cookie_first(live, db_path):
    with live.websocket_connect("/sync/ws?clientGroupID=g1") as ws:
        assert receive(ws) == {"type": "poke", "cookie": db_version(db_path)}


def test_a_push_by_another_client_pokes_with_the_new_version(live, db_path):
    with live.websocket_connect("/sync/ws?clientGroupID=g1") as ws:
        first = receive(ws)["cookie"]
        response = live.post("/sync/push", json=push_body(add("c2", 1, "t1"), group="g2"))
        assert response.status_code == 200
        cookie = receive_cookie(ws, first)
        assert cookie == db_version(db_path)
        assert cookie == live.post("/sync/pull", json=pull_body(group="g1")).json()["cookie"]


def test_a_push_of_only_rejected_mutations_pokes_too(live, db_path):
    with live.websocket_connect("/sync/ws?clientGroupID=g1") as ws:
        first = receive(ws)["cookie"]
        live.post("/sync/push", json=push_body(add("c2", 1, "t1", " "), group="g2"))
        assert receive_cookie(ws, first) == db_version(db_path)


def test_operator_sql_pokes(live, db_path):
    with live.websocket_connect("/sync/ws?clientGroupID=g1") as ws:
        first = receive(ws)["cookie"]
        with sqlite_connect(db_path) as sql:
            sql.execute("INSERT INTO todos (id, title) VALUES ('op1', 'from the shell')")
            sql.commit()
        cookie = receive_cookie(ws, first)
        assert cookie == db_version(db_path) > first


def test_every_group_listening_is_poked(live, db_path):
    with live.websocket_connect("/sync/ws?clientGroupID=g1") as one, \
            live.websocket_connect("/sync/ws?clientGroupID=g2") as two:
        start = receive(one)["cookie"]
        receive(two)
        live.post("/sync/push", json=push_body(add("c1", 1, "t1"), group="g1"))
        assert receive_cookie(one, start) == receive_cookie(two, start)


def test_messages_from_the_client_are_ignored(live, db_path):
    with live.websocket_connect("/sync/ws?clientGroupID=g1") as ws:
        first = receive(ws)["cookie"]
        ws.send_text("hello")
        ws.send_bytes(b"\x00\xff")
        ws.send_json({"type": "whatever"})
        live.post("/sync/push", json=push_body(add("c1", 1, "t1")))
        assert receive_cookie(ws, first) == db_version(db_path)


@pytest.mark.parametrize("path", ["/sync/ws", "/sync/ws?clientGroupID="])
def test_a_missing_client_group_closes_with_1008(live, path):
    with pytest.raises(WebSocketDisconnect) as closed, live.websocket_connect(path):
        pass
    assert closed.value.code == 1008
    assert closed.value.reason == "clientGroupID is required"


def test_a_listener_that_leaves_is_forgotten(live):
    hub = live.app.state.plasma.pokes
    with live.websocket_connect("/sync/ws?clientGroupID=g1") as ws:
        receive(ws)
        assert hub.listener_count == 1
    deadline = time.monotonic() + 5.0
    while hub.listener_count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert hub.listener_count == 0
    # Pushing with nobody listening is fine.
    assert live.post("/sync/push", json=push_body(add("c1", 1, "t1"))).json() == {}


def test_the_socket_checks_origin_over_a_real_server(serve):
    """A page's origin must be the server's own or listed with --cors-origin; a client that
    sends no Origin (not a browser: the CPython client) is let in."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus
    from websockets.typing import Origin

    served = serve("--cors-origin", "http://notebook.example:8080")
    ws_url = served.url.replace("http", "ws", 1) + "/sync/ws?clientGroupID=g1"

    async def poke(origin: str | None) -> dict[str, Any]:
        async with connect(ws_url, origin=None if origin is None else Origin(origin)) as ws:
            result: dict[str, Any] = json.loads(await ws.recv())
            return result

    async def scenario() -> None:
        for origin in (None, "http://notebook.example:8080", served.url):
            assert (await poke(origin))["type"] == "poke", origin
        for origin in ("http://evil.example", "http://notebook.example", "null"):
            with pytest.raises(InvalidStatus) as refused:
                await poke(origin)
            answer = refused.value.response
            assert answer.status_code == 403, origin
            body = json.loads(answer.body or b"{}")
            assert body["error"] == "Forbidden"
            assert repr(origin) in body["message"] and "--cors-origin" in body["message"]
        with pytest.raises(InvalidStatus) as refused:
            await poke("http://evil.example")
        assert ("start the server with --cors-origin http://evil.example"
                in json.loads(refused.value.response.body or b"{}")["message"])

    anyio.run(scenario)
    assert served.interrupt() == 0
    assert "Traceback" not in served.stderr
