"""Hostile input on every route (hostile.py), in process and against a real server: never
a 5xx, every refusal a JSON error with a message, a refused request leaves the database
as it was (every table, internal ones included), and the server still serves a valid
push afterwards."""

from __future__ import annotations

import hashlib
import socket
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, reject, seed, settings
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from plasma_nb.server import Limits, create_app
from tests.client.server_db import ServerDB
from tests.reliability import bank
from tests.reliability.budget import base_seed, replayable, scaled
from tests.reliability.hostile import Hostile, hostile_requests, socket_attempts
from tests.reliability.serving import BankServer
from tests.scale.cluster import mutation, pull_body, push_body
from tests.server.secure import TOKENS, as_user, dump_database

LIMIT = 64 * 1024
AS_ALICE = {"authorization": "Bearer tok-alice"}
AS_BOB = {"authorization": "Bearer tok-bob"}

# httpx's Response, or httpx2's (what starlette's TestClient uses where it is installed).
Answer = Any
Send = Callable[[Hostile], Answer]


class Contents:
    """The server's SQLite file seen from outside: ``changed()`` tells whether a request
    wrote anything (every row of every table, internal ones included, hashed again
    whenever SQLite's ``data_version`` says another connection committed)."""

    def __init__(self, database: str) -> None:
        self.path = database.removeprefix("sqlite:///")
        self.conn = sqlite3.connect(self.path)
        self.version = self._data_version()
        self.digest = self._digest()

    def _data_version(self) -> int:
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def _digest(self) -> str:
        tables = [r[0] for r in self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        rows = {t: sorted(map(repr, self.conn.execute(f'SELECT * FROM "{t}"'))) for t in tables}
        return hashlib.sha256(repr(rows).encode()).hexdigest()

    def changed(self) -> bool:
        version = self._data_version()
        if version == self.version:
            return False
        digest = self._digest()
        changed = digest != self.digest
        self.version, self.digest = version, digest
        return changed

    def close(self) -> None:
        self.conn.close()


def deposit(client: str, id: int) -> dict[str, Any]:
    return mutation(client, id, "deposit", op=f"{client}:{id}", actor=client, account="a",
                    amount=1)


def groups_of_alice_and_bob(send: Callable[..., Answer]) -> None:
    """Alice owns g-alice (client c-alice), bob owns g-bob (client c-bob): the fuzz's
    groups and clients then belong to someone."""
    for group, client, auth in (("g-alice", "c-alice", AS_ALICE), ("g-bob", "c-bob", AS_BOB)):
        response = send("POST", "/sync/push", json=push_body(group, [deposit(client, 1)]),
                        headers=auth)
        assert response.status_code == 200, response.text


def still_serves(send: Callable[..., Answer], next_id: int) -> None:
    """A valid push and pull go through after everything the fuzz sent."""
    response = send("POST", "/sync/push", json=push_body("g-alice", [deposit("c-alice", next_id)]),
                    headers=AS_ALICE)
    assert response.status_code == 200 and response.json() == {}, response.text
    pulled = send("POST", "/sync/pull", json=pull_body("g-alice", None), headers=AS_ALICE).json()
    assert pulled["lastMutationIDChanges"]["c-alice"] == next_id, pulled


def check_answer(request: Hostile, response: Answer) -> bool:
    """Assert what every answer owes; return whether the request was refused."""
    assert response.status_code < 500, (request, response.status_code, response.text)
    if response.status_code >= 400 and request.method != "HEAD":
        assert response.headers["content-type"] == "application/json", response.headers
        body = response.json()
        assert isinstance(body.get("error"), str), body
        assert isinstance(body.get("message"), str) and body["message"], body
    if response.status_code >= 400:
        return True
    if response.headers.get("content-type") != "application/json" or request.method == "HEAD":
        return False
    body = response.json()
    return isinstance(body, dict) and "error" in body  # ClientStateNotFound, VersionNotSupported


def fuzz(send: Send, contents: Contents, count: int, first_seed: int,
         limit: int) -> Counter[str]:
    """``count`` hostile requests through ``send``; the tally of their answers."""
    tally: Counter[str] = Counter()

    @settings(max_examples=count, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @seed(first_seed)
    @given(hostile_requests(limit))
    def one(request: Hostile) -> None:
        contents.changed()  # what an earlier request wrote
        response = send(request)
        refused = check_answer(request, response)
        tally[f"{response.status_code}{' refused' if refused else ''}"] += 1
        if contents.changed():
            assert not refused or request.db_may_change, f"{request!r} was refused but wrote"

    one()
    return tally


def sender(request_fn: Callable[..., Answer]) -> Send:
    def send(request: Hostile) -> Answer:
        try:
            return request_fn(request.method, request.path, content=request.body,
                              params=request.params, headers=request.headers)
        except httpx.LocalProtocolError:
            reject()  # h11 will not send it (a header ending in a space): not a request
    return send


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[tuple[TestClient, Contents]]:
    """The bank app with auth and a file blob store, a small body limit and no rate
    limit, in process (with its lifespan), on a SQLite file."""
    database = f"sqlite:///{tmp_path / 'fuzz.db'}"
    app = create_app(bank.schema, bank.mutators, database=database, auth=TOKENS,
                     blobs=f"file:{tmp_path / 'blobs'}",
                     limits=Limits(max_body_bytes=LIMIT, requests_per_second=None))
    with TestClient(app) as client:
        groups_of_alice_and_bob(client.request)
        contents = Contents(database)
        yield client, contents
        contents.close()


def test_hostile_requests_in_process_get_no_5xx_and_write_nothing(app_client):
    client, contents = app_client
    count = scaled(400, 6000)
    first = base_seed("hostile requests in process")
    started = time.monotonic()
    with replayable(first, "hypothesis"):
        tally = fuzz(sender(client.request), contents, count, first, LIMIT)
    still_serves(client.request, 2)
    print(f"{sum(tally.values())} hostile requests in process in "
          f"{time.monotonic() - started:.1f} s: {dict(sorted(tally.items()))}")
    assert sum(tally.values()) >= count * 0.9 and len(tally) > 5


def test_hostile_poke_sockets_are_refused_or_served(app_client):
    client, contents = app_client
    count = scaled(30, 400)
    first = base_seed("hostile poke sockets")
    tally: Counter[str] = Counter()

    @settings(max_examples=count, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @seed(first)
    @given(socket_attempts())
    def one(attempt: tuple[dict[str, str], str | None]) -> None:
        params, message = attempt
        if message is None and not params.get("token"):
            message = "{}"  # else the server waits its whole timeout for a first message
        contents.changed()
        try:
            with client.websocket_connect(f"/sync/ws?{urlencode(params)}") as ws:
                if message is not None:
                    ws.send_text(message)
                answer = ws.receive_json()
                assert answer["type"] == "poke", answer
                tally["served"] += 1
        except WebSocketDenialResponse as denied:  # (a WebSocketDisconnect too)
            assert 400 <= denied.status_code < 500, (params, denied.status_code)
            assert denied.json()["message"]
            tally[f"denied {denied.status_code}"] += 1
        except WebSocketDisconnect as closed:
            assert closed.code in (1008, 1013), (params, message, closed.code, closed.reason)
            tally[f"closed {closed.code}"] += 1
        assert not contents.changed(), f"a poke socket wrote: {params} {message!r}"

    with replayable(first, "hypothesis"):
        one()
    still_serves(client.request, 2)
    print(f"{count} hostile poke sockets: {dict(tally)}")
    assert tally["served"] and len(tally) > 1


def hang_up_halfway(port: int, path: str) -> None:
    """Announce a body of 1000 bytes, send 10 and hang up: the server must shrug."""
    with socket.create_connection(("127.0.0.1", port)) as conn:
        method = "PUT" if "blob" in path else "POST"
        conn.sendall(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Authorization: Bearer tok-alice\r\nContent-Length: 1000\r\n\r\n"
                     '{"pushVer'.encode())
    time.sleep(0.2)  # the server notices


@pytest.mark.parametrize("first", [
    deposit("c-new", 5),  # an unknown client starting past 1: ClientStateNotFound
    mutation("c-new", 1, "create_note", op="x", actor="bob", note="x", title="t",
             photo="0" * 64),  # a blob the server lacks: 409
], ids=["unknown client", "missing blob"])
async def test_a_push_refused_before_its_first_mutation_leaves_no_group(
    server_db: ServerDB, tmp_path: Path, first: dict[str, Any],
) -> None:
    """Found by the fuzz (the group used to be created, and owned, by such a push)."""
    app = create_app(bank.schema, bank.mutators, database=server_db.url, auth=TOKENS,
                     blobs=f"file:{tmp_path / 'blobs'}")
    try:
        async with as_user(app, "bob") as bob:
            await bob.get("/healthz")
            before = await dump_database(server_db.url)
            response = await bob.post("/sync/push", json=push_body("g-new", [first]))
            assert response.status_code in (200, 409), response.text
            assert "error" in response.json()
            assert await dump_database(server_db.url) == before
            # Alice may still take the name.
        async with as_user(app, "alice") as alice:
            response = await alice.post("/sync/push", json=push_body("g-new", [
                deposit("c-alice", 1)]))
            assert response.status_code == 200, response.text
    finally:
        await app.state.plasma.close()


@pytest.mark.slow
def test_hostile_requests_against_a_real_server(tmp_path):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("".join(f"{token} {user}\n" for token, user in TOKENS.items()))
    database = f"sqlite:///{tmp_path / 'real.db'}"
    server = BankServer(database, tmp_path, "--token-file", str(tokens),
                        "--blobs", f"file:{tmp_path / 'blobs'}")
    server.start()
    try:
        server.wait_ready()
        count = scaled(100, 600)
        first = base_seed("hostile requests to plasma-nb serve")
        with httpx.Client(base_url=server.url, timeout=30) as http:
            groups_of_alice_and_bob(http.request)
            contents = Contents(database)
            with replayable(first, "hypothesis"):
                tally = fuzz(sender(http.request), contents, count, first, 16 * 1024 * 1024)
            contents.close()
            for path in ("/sync/push", "/sync/pull", f"/sync/blob/{'0' * 64}"):
                hang_up_halfway(server.port, path)
            still_serves(http.request, 2)
        print(f"{sum(tally.values())} hostile requests to plasma-nb serve: "
              f"{dict(sorted(tally.items()))}")
    finally:
        server.stop()
    assert not server.errors(), server.output()
