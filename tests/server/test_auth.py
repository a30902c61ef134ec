"""Auth: every ``/sync/*`` route needs a valid bearer token; a client group belongs to the
user who first used it; nobody reads or writes what is not theirs, and a refused request
writes nothing (the whole database is compared before and after)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import httpx
import pytest
from starlette.requests import HTTPConnection

from plasma_nb import Context
from plasma_nb.core.errors import ConfigError, Unavailable
from plasma_nb.server import TokenFile, Tokens
from plasma_nb.server.auth import parse_token_lines
from tests.server.helpers import pull_body, push_body
from tests.server.secure import (
    TOKENS,
    as_user,
    call,
    dump_database,
    mutators,
    note,
    schema,
)

BLOB = b"a photo, as far as anyone can tell"
BLOB_HASH = hashlib.sha256(BLOB).hexdigest()


@pytest.fixture
def secure_app(make_app, tmp_path):
    return make_app(schema, mutators, auth=TOKENS, blobs=f"file:{tmp_path / 'blobs'}")


async def alice_has_a_group(app) -> int:
    """Alice pushes two notes (one private, one public) in group ga and pulls; the cookie."""
    async with as_user(app, "alice") as alice:
        response = await alice.post("/sync/push", json=push_body(
            note("ca", 1, "n1", "alice's secret"), note("ca", 2, "n2", "hello all", public=True),
            group="ga"))
        assert response.status_code == 200, response.text
        response = await alice.put(f"/sync/blob/{BLOB_HASH}", content=BLOB)
        assert response.status_code == 201, response.text
        pulled = (await alice.post("/sync/pull", json=pull_body(group="ga"))).json()
        assert {op["key"] for op in pulled["patch"][1:]} == {"notes/n1", "notes/n2"}
        return int(pulled["cookie"])


def every_route(group: str, cookie: int | None = None) -> list[tuple[str, str, dict]]:
    """Every /sync/* HTTP route, aimed at ``group``."""
    return [
        ("POST", "/sync/push", {"json": push_body(note("cx", 1, "evil"), group=group)}),
        ("POST", "/sync/pull", {"json": pull_body(cookie, group=group)}),
        ("GET", f"/sync/pull?clientGroupID={group}&cookie={cookie or 'null'}"
                "&schemaVersion=1&profileID=p", {}),
        ("GET", "/sync/schema", {}),
        ("GET", f"/sync/blob/{BLOB_HASH}", {}),
        ("HEAD", f"/sync/blob/{BLOB_HASH}", {}),
        ("PUT", f"/sync/blob/{hashlib.sha256(b'x').hexdigest()}", {"content": b"x"}),
        ("GET", "/sync/nothing-here", {}),
    ]


@pytest.mark.parametrize("token", [None, "wrong-token", ""])
async def test_every_sync_route_refuses_a_missing_or_wrong_token(secure_app, database, token):
    cookie = await alice_has_a_group(secure_app)
    before = await dump_database(database)
    async with as_user(secure_app, token=token) as anonymous:
        for method, path, options in every_route("ga", cookie):
            response = await anonymous.request(method, path, **options)
            assert response.status_code == 401, (method, path, response.text)
            challenge = response.headers["www-authenticate"]
            assert challenge.startswith("Bearer ")
            assert ('error="invalid_token"' in challenge) == bool(token)
            if method != "HEAD":
                assert response.json()["error"] == "Unauthorized"
                assert "secret" not in response.text
    assert await dump_database(database) == before


async def test_another_users_valid_token_gets_403_and_nothing_leaks(secure_app, database):
    cookie = await alice_has_a_group(secure_app)
    before = await dump_database(database)
    async with as_user(secure_app, "bob") as bob:
        response = await bob.post("/sync/push", json=push_body(
            note("cb", 1, "n9"), call("cb", 2, "edit_note", id="n1", body="pwned"), group="ga"))
        assert response.status_code == 403, response.text
        assert response.json() == {"error": "Forbidden",
                                   "message": "client group 'ga' belongs to another user"}
        for body in (pull_body(None, group="ga"), pull_body(cookie, group="ga")):
            response = await bob.post("/sync/pull", json=body)
            assert response.status_code == 403, response.text
            assert "secret" not in response.text
        response = await bob.get("/sync/pull", params={
            "clientGroupID": "ga", "cookie": "null", "schemaVersion": "1", "profileID": "p"})
        assert response.status_code == 403
        # Alice's client id in a group of bob's own: refused, and the group is not created.
        response = await bob.post("/sync/push", json=push_body(note("ca", 3, "n3"), group="gb"))
        assert response.status_code == 403, response.text
        assert response.json()["message"] == "client 'ca' belongs to another client group"
    assert await dump_database(database) == before


async def test_a_user_reads_only_what_the_rules_let_them(secure_app, database):
    await alice_has_a_group(secure_app)
    async with as_user(secure_app, "bob") as bob:
        pulled = (await bob.post("/sync/pull", json=pull_body(group="gb"))).json()
        assert pulled["patch"] == [
            {"op": "clear"},
            {"op": "put", "key": "notes/n2",
             "value": {"id": "n2", "body": "hello all", "owner": "alice", "public": True}},
        ]
        # The schema says who bob is; a blob is fetched by its hash (the capability).
        assert (await bob.get("/sync/schema")).json()["user"] == "bob"
        response = await bob.get(f"/sync/blob/{BLOB_HASH}")
        assert response.status_code == 200 and response.content == BLOB
        # Behind auth, no shared cache may hand the blob to a caller without a token.
        assert response.headers["cache-control"] == "private, max-age=31536000, immutable"
        # Read rules do not restrict mutators, which check tx.ctx: bob cannot edit n1.
        pushed = (await bob.post("/sync/push", json=push_body(
            call("cb", 1, "edit_note", id="n1", body="pwned"), group="gb"))).json()
        assert pushed["mutationErrors"] == [
            {"clientID": "cb", "id": 1, "name": "edit_note", "message": "note n1 is not yours"}]
    async with as_user(secure_app, "alice") as alice:
        assert (await alice.get("/sync/schema")).json()["user"] == "alice"
        pulled = (await alice.post("/sync/pull", json=pull_body(group="ga"))).json()
        rows = {op["key"]: op["value"] for op in pulled["patch"] if op["op"] == "put"}
        # tx.ctx.user inside the server's mutator wrote the owner.
        assert rows["notes/n1"] == {"id": "n1", "body": "alice's secret", "owner": "alice",
                                    "public": False}


async def test_healthz_preflights_and_pages_stay_public(make_app, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<h1>hi</h1>")
    app = make_app(schema, mutators, auth=TOKENS, blobs=None, site_dir=site,
                   cors_origins=["https://notebook.example"])
    async with as_user(app) as anonymous:
        assert (await anonymous.get("/healthz")).status_code == 200
        assert (await anonymous.get("/")).text == "<h1>hi</h1>"
        preflight = await anonymous.options("/sync/push", headers={
            "Origin": "https://notebook.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"})
        assert preflight.status_code == 200
        # A refused request still carries CORS headers, so the page can read the 401.
        refused = await anonymous.post("/sync/pull", json=pull_body(),
                                       headers={"Origin": "https://notebook.example"})
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == "https://notebook.example"
        assert "WWW-Authenticate" in refused.headers["access-control-expose-headers"]


async def test_the_first_user_of_a_group_owns_it_whatever_the_route(secure_app):
    async with as_user(secure_app, "carol") as carol, as_user(secure_app, "bob") as bob:
        # A pull creates the group for carol; bob is refused everywhere after that.
        assert (await carol.post("/sync/pull", json=pull_body(group="gc"))).status_code == 200
        assert (await bob.post("/sync/push", json=push_body(note("cb", 1, "x"), group="gc"))
                ).status_code == 403
        # A push creates it just the same.
        assert (await bob.post("/sync/push", json=push_body(note("cb", 1, "x"), group="gb"))
                ).status_code == 200
        assert (await carol.post("/sync/pull", json=pull_body(group="gb"))).status_code == 403


# -- the hook ------------------------------------------------------------------------------------


async def test_the_hook_may_be_async_return_a_user_id_and_see_the_request(make_app):
    seen = []

    async def hook(token: str, conn: HTTPConnection) -> Context | str | None:
        seen.append((token, conn.url.path))
        if token == "jwt-for-dana":
            return Context(user="dana", claims={"team": "red"})
        return "erin" if token == "erin" else None

    app = make_app(schema, mutators, auth=hook, blobs=None)
    async with as_user(app, token="jwt-for-dana") as dana, as_user(app, token="erin") as erin:
        assert (await dana.get("/sync/schema")).json()["user"] == "dana"
        assert (await erin.get("/sync/schema")).json()["user"] == "erin"
    async with as_user(app, token="nope") as nope:
        assert (await nope.get("/sync/schema")).status_code == 401
    assert seen == [("jwt-for-dana", "/sync/schema"), ("erin", "/sync/schema"),
                    ("nope", "/sync/schema")]


async def test_a_hook_that_is_down_answers_503_and_a_broken_one_500(make_app, caplog):
    def down(token: str, conn: HTTPConnection) -> None:
        raise Unavailable("the identity provider is down", retry_after=7)

    def broken(token: str, conn: HTTPConnection) -> None:
        raise RuntimeError("bug in the hook")

    async with as_user(make_app(schema, mutators, auth=down, blobs=None), token="t") as c:
        response = await c.get("/sync/schema")
        assert response.status_code == 503 and response.headers["retry-after"] == "7"
    with caplog.at_level(logging.ERROR, logger="plasma_nb.server"):
        async with as_user(make_app(schema, mutators, auth=broken, blobs=None), token="t") as c:
            response = await c.get("/sync/schema")
            assert response.status_code == 500
            assert response.json()["error"] == "InternalError"
            assert "bug in the hook" not in response.text
    assert "bug in the hook" in caplog.text


async def test_a_hook_returning_a_context_without_a_user_is_a_bug(make_app):
    app = make_app(schema, mutators, auth=lambda token, conn: Context(user=None), blobs=None)
    async with as_user(app, token="t") as c:
        assert (await c.get("/sync/schema")).status_code == 500


def test_auth_must_be_a_hook_a_mapping_or_a_token_file(make_app):
    with pytest.raises(ConfigError, match="auth= takes a function"):
        make_app(schema, mutators, auth="tok-alice")
    with pytest.raises(ConfigError, match="tokens map non-empty token strings"):
        Tokens({"": "alice"})


# -- token files ---------------------------------------------------------------------------------


def test_token_file_lines_comments_and_errors_naming_the_line(tmp_path):
    assert parse_token_lines("# tokens\n\n  t1 alice  \nt2\tbob\n# t3 carol\n", "F") == {
        "t1": "alice", "t2": "bob"}
    with pytest.raises(ConfigError, match=r"^F, line 3: expected `TOKEN USER` \(two fields "
                                          r"separated by spaces\), got 1 field$"):
        parse_token_lines("t1 alice\n\nlonely\n", "F")
    with pytest.raises(ConfigError, match="F, line 2: expected `TOKEN USER`.*got 3 fields"):
        parse_token_lines("t1 alice\nt2 bob extra\n", "F")
    with pytest.raises(ConfigError, match="F, line 4: this token is already on line 1"):
        parse_token_lines("t1 alice\n#\nt2 bob\nt1 carol\n", "F")
    missing = tmp_path / "missing.txt"
    with pytest.raises(ConfigError, match="cannot read the token file"):
        TokenFile(missing)


async def test_a_token_file_is_read_again_when_it_changes(make_app, tmp_path, caplog):
    path = tmp_path / "tokens.txt"
    path.write_text("t-old alice\n")
    tokens = TokenFile(path)
    tokens.check_interval = 0.0
    app = make_app(schema, mutators, auth=tokens, blobs=None)
    async with as_user(app, token="t-old") as old, as_user(app, token="t-new") as new:
        assert (await old.get("/sync/schema")).json()["user"] == "alice"
        assert (await new.get("/sync/schema")).status_code == 401
        path.write_text("t-new alice\n# t-old was revoked\n")
        _touch_later(path)
        assert (await new.get("/sync/schema")).json()["user"] == "alice"
        assert (await old.get("/sync/schema")).status_code == 401
        # A change that does not parse keeps the tokens that worked.
        path.write_text("t-new alice\nbroken line here\n")
        _touch_later(path)
        with caplog.at_level(logging.ERROR, logger="plasma_nb.server"):
            assert (await new.get("/sync/schema")).json()["user"] == "alice"
        assert "line 2" in caplog.text and "keeping the previous tokens" in caplog.text


def _touch_later(path: Path) -> None:
    """Make sure the modification time moves, whatever the file system's resolution."""
    import os

    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


async def test_a_request_from_elsewhere_without_auth_is_anonymous(make_app):
    app = make_app(schema, mutators, blobs=None)
    async with as_user(app, token="ignored", address="192.0.2.7") as c:
        assert (await c.get("/sync/schema")).json()["user"] is None


async def test_unknown_sync_paths_need_a_token_too(secure_app):
    async with as_user(secure_app) as c:
        assert (await c.get("/sync/admin")).status_code == 401
    async with as_user(secure_app, "alice") as c:
        assert (await c.get("/sync/admin")).status_code == 404


def test_tokens_are_looked_up_by_their_hash():
    tokens = Tokens({"s3cret": "alice"})
    conn = HTTPConnection({"type": "http", "headers": [], "path": "/"})
    assert tokens("s3cret", conn) == Context(user="alice")
    assert tokens("s3cre", conn) is None
    assert not any(isinstance(k, str) for k in tokens._users)


async def test_bearer_scheme_is_case_insensitive_and_other_schemes_are_refused(secure_app):
    transport = httpx.ASGITransport(secure_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        ok = await c.get("/sync/schema", headers={"Authorization": "bearer tok-alice"})
        assert ok.json()["user"] == "alice"
        basic = await c.get("/sync/schema", headers={"Authorization": "Basic dG9rLWFsaWNl"})
        assert basic.status_code == 401
