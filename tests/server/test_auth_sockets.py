"""Auth on the poke WebSocket: the token as a query parameter or in the first message; a
wrong token, another user's client group, or one socket too many is refused with a reason.
Starlette's TestClient runs the app (and its lifespan) in its own thread."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from plasma_nb.server import Limits
from plasma_nb.server import gate as gate_module
from tests.server.helpers import push_body
from tests.server.secure import TOKENS, mutators, note, schema
from tests.server.test_pokes import receive


@pytest.fixture
def live(make_app) -> Iterator[TestClient]:
    app = make_app(schema, mutators, auth=TOKENS, blobs=None,
                   limits=Limits(max_websockets_per_user=2))
    with TestClient(app) as client:
        # Alice's group ga exists.
        response = client.post("/sync/push", json=push_body(note("ca", 1, "n1"), group="ga"),
                               headers={"Authorization": "Bearer tok-alice"})
        assert response.status_code == 200
        yield client


def test_the_token_as_a_query_parameter(live):
    with live.websocket_connect("/sync/ws?clientGroupID=ga&token=tok-alice") as ws:
        assert receive(ws)["type"] == "poke"


def test_the_token_in_the_authorization_header(live):
    with live.websocket_connect("/sync/ws?clientGroupID=ga",
                                headers={"Authorization": "Bearer tok-alice"}) as ws:
        assert receive(ws)["type"] == "poke"


def test_the_token_in_the_first_message(live):
    with live.websocket_connect("/sync/ws?clientGroupID=ga") as ws:
        ws.send_text(json.dumps({"type": "auth", "token": "tok-alice"}))
        assert receive(ws)["type"] == "poke"


@pytest.mark.parametrize("first", [
    json.dumps({"type": "auth", "token": "wrong"}),
    json.dumps({"type": "hello"}),
    "not json",
])
def test_a_bad_first_message_closes_with_1008(live, first):
    with live.websocket_connect("/sync/ws?clientGroupID=ga") as ws:
        ws.send_text(first)
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
    assert closed.value.code == 1008


def test_no_first_message_in_time_closes_with_1008(live, monkeypatch):
    monkeypatch.setattr(gate_module, "AUTH_MESSAGE_TIMEOUT", 0.05)
    with live.websocket_connect("/sync/ws?clientGroupID=ga") as ws:
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
    assert closed.value.code == 1008
    assert "auth" in closed.value.reason


def test_a_wrong_token_is_refused_with_401(live):
    with pytest.raises(WebSocketDenialResponse) as denied:
        with live.websocket_connect("/sync/ws?clientGroupID=ga&token=wrong"):
            pass
    assert denied.value.status_code == 401
    assert denied.value.json()["error"] == "Unauthorized"
    assert denied.value.headers["www-authenticate"].startswith("Bearer")


def test_another_users_group_is_refused_with_403(live):
    with pytest.raises(WebSocketDenialResponse) as denied:
        with live.websocket_connect("/sync/ws?clientGroupID=ga&token=tok-bob"):
            pass
    assert denied.value.status_code == 403
    assert denied.value.json() == {"error": "Forbidden",
                                   "message": "client group 'ga' belongs to another user"}


def test_another_users_group_is_refused_after_a_first_message_too(live):
    with live.websocket_connect("/sync/ws?clientGroupID=ga") as ws:
        ws.send_text(json.dumps({"type": "auth", "token": "tok-bob"}))
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
    assert closed.value.code == 1008
    assert "belongs to another user" in closed.value.reason


def test_sockets_per_user_are_limited(live):
    url = "/sync/ws?clientGroupID=ga&token=tok-alice"
    with live.websocket_connect(url) as one, live.websocket_connect(url) as two:
        receive(one)
        receive(two)
        with live.websocket_connect(url) as three:
            with pytest.raises(WebSocketDisconnect) as closed:
                three.receive_text()
        assert closed.value.code == 1008
        assert closed.value.reason == "too many poke sockets for this caller (limit 2)"
        # Another user has sockets of their own.
        with live.websocket_connect("/sync/ws?clientGroupID=gb&token=tok-bob") as bobs:
            assert receive(bobs)["type"] == "poke"
    # Closed sockets are given back.
    with live.websocket_connect(url) as again:
        assert receive(again)["type"] == "poke"
