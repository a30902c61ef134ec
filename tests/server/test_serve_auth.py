"""`plasma-nb serve --token-file F` as a real process: bearer tokens on every /sync/* route
and on the poke socket; /healthz stays public."""

from __future__ import annotations

import asyncio
import json

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.server.helpers import add, pull_body, push_body


def test_serve_with_a_token_file(serve, tmp_path):
    (tmp_path / "tokens.txt").write_text("# tokens\nt-alice alice\n\nt-bob bob\n")
    served = serve("--token-file", "tokens.txt")
    with httpx.Client(base_url=served.url) as c:
        assert c.get("/healthz").status_code == 200
        refused = c.post("/sync/push", json=push_body(add("c1", 1, "t1")))
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == 'Bearer realm="plasma_nb"'
        alice = {"Authorization": "Bearer t-alice"}
        assert c.post("/sync/push", json=push_body(add("c1", 1, "t1")),
                      headers=alice).status_code == 200
        pulled = c.post("/sync/pull", json=pull_body(), headers=alice).json()
        assert pulled["patch"][1]["value"]["owner"] == "alice"
        bob = {"Authorization": "Bearer t-bob"}
        assert c.post("/sync/pull", json=pull_body(), headers=bob).status_code == 403

    async def sockets() -> None:
        ws_url = served.url.replace("http", "ws") + "/sync/ws?clientGroupID=cg1"
        async with connect(ws_url + "&token=t-alice") as ws:
            assert json.loads(await ws.recv())["type"] == "poke"
        async with connect(ws_url) as ws:
            await ws.send(json.dumps({"type": "auth", "token": "t-alice"}))
            assert json.loads(await ws.recv())["type"] == "poke"
        for token in ("wrong", "t-bob"):
            try:
                async with connect(f"{ws_url}&token={token}"):
                    raise AssertionError("the socket should have been refused")
            except InvalidStatus as exc:
                assert exc.response.status_code == (401 if token == "wrong" else 403)

    asyncio.run(sockets())
    assert served.interrupt() == 0
    assert "Traceback" not in served.stderr
    assert "(database sqlite:///p.db; tokens from tokens.txt)" in served.stdout


def test_a_real_client_with_a_token_syncs_and_never_shows_it(serve, tmp_path, monkeypatch):
    import plasma_nb as plasma
    from notebooks import todos

    monkeypatch.setenv("PLASMA_NB_HOME", str(tmp_path / "home"))
    (tmp_path / "tokens.txt").write_text("t-alice-secret alice\n")
    served = serve("--token-file", "tokens.txt")

    async def scenario() -> None:
        good = await plasma.connect(served.url, schema=todos.schema, mutators=todos.mutators,
                                    name="good", token="t-alice-secret", storage="memory")
        bad = await plasma.connect(served.url, schema=todos.schema, mutators=todos.mutators,
                                   name="bad", token="t-wrong-secret", storage="memory")
        try:
            h = good.mutate.add_todo(id="t1", title="mine")
            await good.sync()
            assert await h.confirmed is None
            assert good.status().user == "alice"
            rows = await good.query(plasma.select(todos.todos))
            assert rows[0]["owner"] == "alice"
            for _ in range(200):  # the poke socket connects with the token
                if good.status().pokes == "connected":
                    break
                await asyncio.sleep(0.02)
            assert good.status().pokes == "connected"
            try:
                await bad.sync()
                raise AssertionError("a wrong token must be refused")
            except plasma.SyncError as exc:
                assert "401" in str(exc)
            for _ in range(200):
                if bad.status().pokes_detail:
                    break
                await asyncio.sleep(0.02)
            shown = repr(bad.status())
            assert "401" in shown and "t-wrong-secret" not in shown
        finally:
            await good.close()
            await bad.close()

    asyncio.run(scenario())
    assert served.interrupt() == 0
