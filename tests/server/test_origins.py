"""Origins (server/origins.py): ``cors_origins`` validated and made canonical, and the poke
socket's Origin check, in-process (tests/server/test_pokes.py checks it over uvicorn)."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient, WebSocketDenialResponse

from notebooks import todos
from plasma_nb.core.errors import ConfigError
from plasma_nb.server import create_app
from plasma_nb.server.origins import OriginPolicy, canonical_origins
from tests.server.test_pokes import receive


def test_origins_are_made_canonical_as_browsers_send_them():
    assert canonical_origins(["HTTPS://You.GitHub.io:443", "http://127.0.0.1:8000",
                              "http://[::1]:80", "https://you.github.io"]) == (
        "https://you.github.io", "http://127.0.0.1:8000", "http://[::1]")


@pytest.mark.parametrize(("value", "hint"), [
    ("*", ""), ("you.github.io", ""), ("ftp://x.example", ""), ("https://x.example:99999", ""),
    ("https://user@x.example", ""), ("https:///x", ""),
    ("https://you.github.io/", ": did you mean 'https://you.github.io'?"),
    ("https://you.github.io/project", ": did you mean 'https://you.github.io'?"),
])
def test_anything_but_an_origin_is_a_config_error_naming_it(value, hint):
    with pytest.raises(ConfigError) as error:
        canonical_origins([value])
    message = str(error.value)
    assert message.startswith(f"cors_origins (--cors-origin): {value!r} is not an origin")
    assert message.endswith(f"and no path){hint}")


def test_create_app_refuses_a_bad_origin(tmp_path):
    with pytest.raises(ConfigError, match="'https://a.example/' is not an origin"):
        create_app(todos.schema, todos.mutators, database=f"sqlite:///{tmp_path / 'p.db'}",
                   cors_origins=["https://a.example/"])


@pytest.mark.parametrize(("headers", "allowed"), [
    ({}, True),  # no Origin: not a web page
    ({"origin": "https://site.example"}, True),
    ({"origin": "HTTPS://Site.Example:443"}, True),
    ({"origin": "http://site.example"}, False),  # another scheme, another origin
    ({"origin": "https://evil.example", "host": "sync.example"}, False),
    ({"origin": "https://sync.example", "host": "sync.example"}, True),  # its own (--site)
    ({"origin": "http://127.0.0.1:8000", "host": "127.0.0.1:8000"}, True),
    ({"origin": "http://127.0.0.1:8001", "host": "127.0.0.1:8000"}, False),
    ({"origin": "https://sync.example", "host": "127.0.0.1:8000",
      "x-forwarded-host": "sync.example"}, True),  # behind a proxy
    ({"origin": "null", "host": "sync.example"}, False),
])
def test_the_policy(headers, allowed):
    policy = OriginPolicy(["https://site.example"])
    refusal = policy.refusal(headers)
    assert (refusal is None) == allowed, refusal
    if not allowed:
        assert repr(headers["origin"]) in refusal and "--cors-origin" in refusal


def test_a_refused_origin_is_denied_before_anything_else(tmp_path):
    app = create_app(todos.schema, todos.mutators, database=f"sqlite:///{tmp_path / 'p.db'}",
                     blobs=None, cors_origins=["https://site.example"])
    with TestClient(app) as live:
        with pytest.raises(WebSocketDenialResponse) as denied, live.websocket_connect(
                "/sync/ws?clientGroupID=g1", headers={"origin": "https://evil.example"}):
            pass
        assert denied.value.status_code == 403
        assert denied.value.json() == {
            "error": "Forbidden",
            "message": "origin 'https://evil.example' may not open the poke socket: start the "
                       "server with --cors-origin https://evil.example (cors_origins) to "
                       "allow it"}
        assert app.state.plasma.pokes.listener_count == 0
        with live.websocket_connect("/sync/ws?clientGroupID=g1",
                                    headers={"origin": "https://site.example"}) as ws:
            assert receive(ws)["type"] == "poke"
