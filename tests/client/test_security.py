"""The client against a server with auth, read rules, a rate limit and compaction: it waits
as Retry-After says, follows its user's view, and recovers from a compacted log. On both
server backends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

import plasma_nb as plasma
from plasma_nb import select
from plasma_nb.server import Limits, compact, create_app
from tests.client.server_db import ServerDB
from tests.client.test_backoff import FakeClock
from tests.server.secure import TOKEN_OF, TOKENS, mutators, notes, schema


class Secured:
    def __init__(self, db: ServerDB, **options: Any) -> None:
        self.db = db
        self.app = create_app(schema, mutators, database=db.url, auth=TOKENS, blobs=None,
                              **options)
        self.transport = httpx.ASGITransport(self.app)

    async def connect(self, user: str, **options: Any) -> plasma.Client:
        options.setdefault("storage", "memory")
        options.setdefault("pokes", False)
        options.setdefault("name", user)
        return await plasma.connect(
            "http://server", schema=schema, mutators=mutators, thread=False,
            token=TOKEN_OF[user], transport=self.transport, pull_interval=3600, **options)


@pytest.fixture
async def server(server_db: ServerDB) -> AsyncIterator[Secured]:
    srv = Secured(server_db)
    yield srv
    await srv.app.state.plasma.close()


async def replica(client: plasma.Client) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in await client.query(select(notes))}


def server_notes(db: ServerDB) -> dict[str, tuple[Any, ...]]:
    return db.rows("SELECT id, body, owner FROM notes")


async def test_each_user_follows_their_own_view(server):
    alice = await server.connect("alice")
    bob = await server.connect("bob")
    try:
        h = alice.mutate.add_note(id="n1", body="for bob, later")
        alice.mutate.add_note(id="n2", body="mine")
        alice.mutate.add_note(id="n3", body="everyone's", public=True)
        await alice.sync()
        await h.confirmed
        # The client learned its user from the server, so the optimistic row had it too.
        assert alice.status().user == "alice"
        assert (await replica(alice))["n1"]["owner"] == "alice"
        await bob.sync()
        assert set(await replica(bob)) == {"n3"}
        alice.mutate.edit_note(id="n1", owner="bob")
        alice.mutate.edit_note(id="n3", public=False)
        await alice.sync()
        await bob.sync()
        assert set(await replica(alice)) == {"n2", "n3"}
        assert await replica(bob) == {
            "n1": {"id": "n1", "body": "for bob, later", "owner": "bob", "public": False}}
        # Bob may not edit alice's note: his mutator says so, and his replica is restored.
        rejected = bob.mutate.add_note(id="n2", body="clash")  # the key exists, unseen
        await bob.sync()
        with pytest.raises(plasma.MutationError, match="already exists"):
            await rejected.confirmed
        assert set(await replica(bob)) == {"n1"}
    finally:
        await alice.close()
        await bob.close()


async def test_a_client_told_429_waits_as_retry_after_says_then_succeeds(server_db):
    # Two requests a second: a retry (push again, then pull) fits in the second waited.
    server = Secured(server_db, limits=Limits(requests_per_second=2, request_burst=3))
    clock = FakeClock([0.0] * 20)  # no jitter: the wait is the Retry-After alone
    server.app.state.plasma.gate.limiter.clock = clock.monotonic
    # The fake clock moves only when the engine sleeps: push at once rather than debounce.
    alice = await server.connect("alice", clock=clock, push_delay=0)
    try:
        for _ in range(500):  # the loop's first cycle: describe, pull (two of three)
            if alice.status().last_pull is not None:
                break
            await asyncio.sleep(0.01)
        h = alice.mutate.add_note(id="n1", body="x")
        # Push (the last request), pull: 429, Retry-After 1; the loop waits, then retries.
        try:
            await asyncio.wait_for(h.confirmed, 10)
        except TimeoutError:
            raise AssertionError((clock.sleeps, alice.status())) from None
        assert clock.sleeps == [1.0]
        assert any("HTTP 429" in e for e in alice.status().errors)
        assert alice.status().last_error is None and alice.status().pending == 0
        assert set(server_notes(server_db)) == {"n1"}
    finally:
        await alice.close()
        await server.app.state.plasma.close()


async def test_a_stale_cookie_after_compaction_ends_equal_to_the_server(server):
    alice = await server.connect("alice")
    try:
        for i in range(4):
            alice.mutate.add_note(id=f"n{i}", body=f"note {i}")
        await alice.sync()
        stale = alice.status().cookie
        alice.offline()
        # Meanwhile, through another client: deletions, then a compaction drops them.
        other = await server.connect("alice", name="alice-laptop")
        await other.sync()
        other.mutate.delete_note(id="n0")
        other.mutate.delete_note(id="n1")
        other.mutate.edit_note(id="n2", body="edited")
        other.mutate.add_note(id="n9", body="new")
        await other.sync()
        await other.close()
        done = await compact(server.app, horizon=0)
        assert done.tombstones == 2 and done.min_version > stale
        alice.online()
        await alice.sync()
        assert alice.status().cookie >= done.min_version
        rows = await replica(alice)
        assert {k: (v["body"], v["owner"]) for k, v in rows.items()} == {
            k: (v[0], v[1]) for k, v in server_notes(server.db).items()}
        assert set(rows) == {"n2", "n3", "n9"}
    finally:
        await alice.close()


async def test_client_state_not_found_against_a_wiped_server_with_auth(server_db):
    """Section 7's recovery with auth and read rules: a new group (owned by the same user),
    the pending mutations renumbered and pushed again, then exactly the user's view."""
    from tests.client.test_sync import SwappableASGI

    first = Secured(server_db)
    swappable = SwappableASGI(first.app)
    first.transport = swappable
    alice = await first.connect("alice")
    try:
        alice.mutate.add_note(id="n1", body="before the wipe")
        await alice.sync()
        old_group = alice.status().client_group_id
        alice.offline()
        h2 = alice.mutate.add_note(id="n2", body="offline")
        h3 = alice.mutate.edit_note(id="n1", body="edited offline")
        await first.app.state.plasma.close()
        await server_db.wipe()
        second = Secured(server_db)
        swappable.inner = httpx.ASGITransport(second.app)
        # Someone else's row on the new server, which alice must not receive.
        bob = await second.connect("bob")
        bob.mutate.add_note(id="b1", body="bob's")
        await bob.sync()
        await bob.close()
        alice.online()
        await alice.sync()
        assert await h2.confirmed is None
        with pytest.raises(plasma.MutationError, match="note n1 is not yours"):
            await h3.confirmed  # n1 died with the old server
        status = alice.status()
        assert status.client_group_id != old_group and status.pending == 0
        assert await replica(alice) == {
            "n2": {"id": "n2", "body": "offline", "owner": "alice", "public": False}}
        assert set(server_notes(server_db)) == {"n2", "b1"}
        await second.app.state.plasma.close()
    finally:
        await alice.close()


async def test_a_group_owned_by_another_user_stops_sync_with_a_clear_message(
    server, tmp_path, monkeypatch
):
    monkeypatch.setenv("PLASMA_NB_HOME", str(tmp_path))
    shared = {"storage": "sqlite", "name": "shared"}
    alice = await server.connect("alice", **shared)
    try:
        alice.mutate.add_note(id="n1", body="alice's")
        await alice.sync()
    finally:
        await alice.close()
    # Bob opens alice's local database: the client group is hers, the server says 403.
    bob = await server.connect("bob", **shared)
    try:
        h = bob.mutate.add_note(id="n2", body="bob's")
        with pytest.raises(plasma.AccessDenied, match="belongs to another user") as refused:
            await bob.sync()
        assert refused.value.status == 403
        with pytest.raises(plasma.AccessDenied):
            await h.confirmed
        status = bob.status()
        assert status.pending == 1  # kept in the outbox
        assert status.last_error is not None and "another user" in status.last_error
        with pytest.raises(plasma.AccessDenied):  # stopped: no retry loop behind the scenes
            await bob.sync()
    finally:
        await bob.close()
    assert server_notes(server.db) == {"n1": ("alice's", "alice")}


async def test_a_refused_token_stops_sync_and_says_which_option_to_fix(server):
    intruder = await plasma.connect(
        "http://server", schema=schema, mutators=mutators, thread=False, storage="memory",
        pokes=False, token="not-a-token", transport=server.transport, pull_interval=3600)
    try:
        h = intruder.mutate.add_note(id="n9", body="sneaky")
        with pytest.raises(plasma.AccessDenied, match=r"HTTP 401.*token=") as refused:
            await intruder.sync()
        assert refused.value.status == 401
        with pytest.raises(plasma.AccessDenied):
            await h.confirmed
    finally:
        await intruder.close()
    assert server_notes(server.db) == {}
