"""Bob against Alice's data on every route, with auth on (tests/server/secure.py): her
client group, her client id, her blob, her rows hidden by the read rule. Every attempt is
refused (403, or a poke socket closed) or answered with only what Bob may see; a refused
attempt writes nothing, and no answer carries Alice's private text."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from plasma_nb.server import create_app
from tests.client.server_db import ServerDB
from tests.scale.cluster import pull_body, push_body
from tests.server.secure import TOKEN_OF, TOKENS, call, dump_database, mutators, note, schema

SECRET = "alice's diary 7f3a"
BLOB = b"alice's photo, bytes only she uploaded"
BLOB_HASH = hashlib.sha256(BLOB).hexdigest()


class Session:
    """The app in a TestClient (its own thread and loop), as one user or another."""

    def __init__(self, client: TestClient, database: str) -> None:
        self.client = client
        self.database = database

    def request(self, user: str, method: str, path: str, **options: Any) -> Any:
        """The answer (TestClient's: httpx2's Response where installed, else httpx's)."""
        headers = {"Authorization": f"Bearer {TOKEN_OF[user]}"}
        return self.client.request(method, path, headers=headers, **options)

    def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        return asyncio.run(dump_database(self.database))

    def socket(self, user: str, group: str, *, in_message: bool = False) -> str:
        """Open a poke socket on ``group``: ``served``, ``closed CODE`` or ``denied STATUS``."""
        token = TOKEN_OF[user]
        path = f"/sync/ws?clientGroupID={group}" + ("" if in_message else f"&token={token}")
        try:
            with self.client.websocket_connect(path) as ws:
                if in_message:
                    ws.send_json({"type": "auth", "token": token})
                assert ws.receive_json()["type"] == "poke"
                return "served"
        except WebSocketDenialResponse as denied:
            assert SECRET not in denied.text
            return f"denied {denied.status_code}"
        except WebSocketDisconnect as closed:
            return f"closed {closed.code}"


@pytest.fixture
def session(server_db: ServerDB, tmp_path: Path) -> Iterator[Session]:
    app = create_app(schema, mutators, database=server_db.url, auth=TOKENS,
                     blobs=f"file:{tmp_path / 'blobs'}")
    with TestClient(app) as client:
        yield Session(client, server_db.url)


def alice_moves_in(s: Session) -> int:
    """Alice's group ga (client ca): a private note, a public one, a blob. Bob's group gb
    exists too. Returns Alice's cookie."""
    pushed = s.request("alice", "POST", "/sync/push", json=push_body("ga", [
        note("ca", 1, "n1", SECRET), note("ca", 2, "n2", "hello all", public=True)]))
    assert pushed.status_code == 200, pushed.text
    assert s.request("alice", "PUT", f"/sync/blob/{BLOB_HASH}", content=BLOB).status_code == 201
    assert s.request("bob", "POST", "/sync/pull", json=pull_body("gb", None)).status_code == 200
    pulled = s.request("alice", "POST", "/sync/pull", json=pull_body("ga", None)).json()
    assert any(SECRET in str(op) for op in pulled["patch"])  # the control: Alice sees it
    return int(pulled["cookie"])


def refused_attempts(cookie: int) -> list[tuple[str, str, dict[str, Any]]]:
    """What Bob may not do at all: each must answer 403 and write nothing."""
    other = hashlib.sha256(b"bob's bytes").hexdigest()
    return [
        ("POST", "/sync/push", {"json": push_body("ga", [note("cb", 1, "b1")])}),
        ("POST", "/sync/push", {"json": push_body("ga", [call("ca", 3, "edit_note", id="n1",
                                                              body="pwned")])}),
        ("POST", "/sync/push", {"json": push_body("gb", [note("ca", 3, "b2")])}),
        ("POST", "/sync/push", {"json": push_body("gb", [note("cb", 1, "b3"),
                                                         note("ca", 1, "b4")])}),
        ("POST", "/sync/pull", {"json": pull_body("ga", None)}),
        ("POST", "/sync/pull", {"json": pull_body("ga", cookie)}),
        ("POST", "/sync/pull", {"json": pull_body("ga", 0)}),
        ("GET", "/sync/pull", {"params": {"clientGroupID": "ga", "cookie": "null",
                                          "schemaVersion": "1", "profileID": "p"}}),
        ("GET", "/sync/pull", {"params": {"clientGroupID": "ga", "cookie": str(cookie),
                                          "schemaVersion": "1", "profileID": "p"}}),
        # Not a 403 but a 400: the bytes do not match the hash, and nothing is stored.
        ("PUT", f"/sync/blob/{BLOB_HASH}", {"content": b"bob's bytes"}),
        ("PUT", f"/sync/blob/{other}", {"content": BLOB}),
    ]


def test_bob_is_refused_or_filtered_on_every_route_and_writes_nothing(session: Session) -> None:
    s = session
    cookie = alice_moves_in(s)
    before = s.dump()

    for method, path, options in refused_attempts(cookie):
        response = s.request("bob", method, path, **options)
        expected = 400 if method == "PUT" else 403
        assert response.status_code == expected, (method, path, response.text)
        assert response.json()["message"] and SECRET not in response.text
        assert s.dump() == before, f"{method} {path} wrote"
    assert s.socket("bob", "ga") == "denied 403"
    assert s.socket("bob", "ga", in_message=True) == "closed 1008"
    assert s.dump() == before

    # What Bob may read: his own group, filtered by the read rule; the schema; the blob,
    # whose hash is the capability (docs/security.md).
    for response in (
        s.request("bob", "POST", "/sync/pull", json=pull_body("gb", None)),
        s.request("bob", "GET", "/sync/pull", params={"clientGroupID": "gb", "cookie": "null",
                                                      "schemaVersion": "1", "profileID": "p"}),
    ):
        assert response.status_code == 200, response.text
        keys = {op.get("key") for op in response.json()["patch"]}
        assert keys == {None, "notes/n2"} and SECRET not in response.text
    assert s.request("bob", "GET", "/sync/schema").json()["user"] == "bob"
    assert s.request("bob", "GET", f"/sync/blob/{BLOB_HASH}").content == BLOB
    assert s.request("bob", "HEAD", f"/sync/blob/{BLOB_HASH}").status_code == 200
    assert s.socket("bob", "gb") == "served"
    assert s.dump() == before  # reading wrote nothing either


def test_bobs_mutations_on_alices_rows_are_rejected_and_leave_them_alone(
    session: Session,
) -> None:
    s = session
    cookie = alice_moves_in(s)
    notes_before = s.dump()["notes"]
    attempts: list[Callable[[int], dict[str, Any]]] = [
        lambda i: call("cb", i, "edit_note", id="n1", body="pwned"),
        lambda i: call("cb", i, "edit_note", id="n1", owner="bob"),
        lambda i: call("cb", i, "edit_note", id="n2", public=False),
        lambda i: call("cb", i, "delete_note", id="n1"),
        lambda i: note("cb", i, "n1", "bob's note under alice's id"),
    ]
    for i, attempt in enumerate(attempts, start=1):
        response = s.request("bob", "POST", "/sync/push", json=push_body("gb", [attempt(i)]))
        assert response.status_code == 200, response.text
        [error] = response.json()["mutationErrors"]
        assert error["id"] == i and SECRET not in response.text, error
    assert s.dump()["notes"] == notes_before
    # Bob sees his rejections, never Alice's text; Alice sees none of Bob's doings.
    pulled = s.request("bob", "POST", "/sync/pull", json=pull_body("gb", None))
    assert len(pulled.json()["mutationErrors"]) == len(attempts)
    assert SECRET not in pulled.text
    alice = s.request("alice", "POST", "/sync/pull", json=pull_body("ga", cookie)).json()
    assert alice["patch"] == [] and alice["mutationErrors"] == [], alice
