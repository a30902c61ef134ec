"""``create_app`` options: what works, what is refused as not supported yet, what is invalid;
and the small routes (``/sync/schema``, ``/healthz``)."""

from __future__ import annotations

import pytest

from notebooks import todos
from plasma_nb import Schema, col, table
from plasma_nb.core.errors import ConfigError
from plasma_nb.server import Limits, create_app
from tests.server.helpers import add, http, pull, push, puts


@pytest.fixture
def backend() -> str:
    """SQLite only: options and small routes do not depend on the backend."""
    return "sqlite"

@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"auth": object()}, "auth= takes a function (token, request) -> Context | None"),
        ({"auth": "tokens.txt"}, "auth= takes a function (token, request) -> Context | None"),
    ],
)
def test_an_auth_option_that_is_not_a_hook_is_refused(tmp_path, options, message):
    with pytest.raises(ConfigError) as raised:
        create_app(todos.schema, todos.mutators, database=f"sqlite:///{tmp_path}/p.db",
                   **options)
    assert str(raised.value).startswith(message)
    assert not (tmp_path / "p.db").exists()


@pytest.mark.parametrize(
    ("database", "message"),
    [
        ("mysql://localhost/db",
         "unsupported database URL 'mysql://localhost/db': expected sqlite:///PATH or "
         "postgresql://..."),
        ("plasma.db",
         "unsupported database URL 'plasma.db': expected sqlite:///PATH or postgresql://..."),
        ("sqlite://plasma.db",
         "database URL 'sqlite://plasma.db' must look like sqlite:///plasma.db (three "
         "slashes, then a path)"),
        ("sqlite:///", "database URL 'sqlite:///' has no path"),
        (42, "database must be a URL string, got 42"),
    ],
)
def test_a_bad_database_url_raises_config_error(database, message):
    with pytest.raises(ConfigError) as raised:
        create_app(todos.schema, todos.mutators, database=database)
    assert str(raised.value) == message


def test_invalid_arguments_raise_config_error(tmp_path):
    db = f"sqlite:///{tmp_path}/p.db"
    other = Schema([table("other", id=col.id())])
    with pytest.raises(ConfigError, match="takes a Schema first"):
        create_app(todos.mutators, todos.mutators, database=db)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="takes Mutators second"):
        create_app(todos.schema, todos.schema, database=db)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="registered for a different schema"):
        create_app(other, todos.mutators, database=db)
    with pytest.raises(ConfigError, match="cors_origins must be a list of origins"):
        create_app(todos.schema, todos.mutators, database=db, cors_origins="http://a")
    with pytest.raises(ConfigError, match="is not a directory"):
        create_app(todos.schema, todos.mutators, database=db, site_dir=tmp_path / "nope")


@pytest.mark.parametrize("field", ["max_body_bytes", "max_mutations_per_push",
                                   "max_json_depth", "max_blob_bytes"])
@pytest.mark.parametrize("value", [0, -1, True, 1.5, "10"])
def test_limits_must_be_positive_integers(field, value):
    with pytest.raises(ConfigError, match=f"limit {field} must be a positive integer"):
        Limits(**{field: value})


async def test_schema_and_healthz(client):
    schema = await client.get("/sync/schema")
    assert schema.status_code == 200
    assert schema.json() == {
        "version": "1",
        "compatible": [],
        "tables": {"todos": {"primaryKey": "id", "columns": {
            "id": {"type": "text", "nullable": False},
            "title": {"type": "text", "nullable": False},
            "done": {"type": "boolean", "nullable": False, "default": False},
            "owner": {"type": "text", "nullable": True},
            "photo": {"type": "blob", "nullable": True},
        }}},
        "mutators": ["add_todo", "delete_todo", "mark_done", "rename"],
        "limits": {"maxBodyBytes": 16 * 1024 * 1024, "maxMutationsPerPush": 1000,
                   "maxJsonDepth": 64, "maxBlobBytes": 2 * 1024**3,
                   "requestsPerSecond": 100, "requestBurst": 1000,
                   "maxWebSocketsPerUser": 100, "tombstoneHorizonSeconds": 7 * 24 * 3600},
        "pushVersion": 1,
        "pullVersion": 1,
        "user": None,
    }
    version = (await pull(client))["cookie"]
    health = await client.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"ok": True, "version": version}


async def test_without_a_blob_store_the_blob_routes_answer_not_implemented(make_app):
    async with http(make_app(blobs=None)) as c:
        response = await c.put("/sync/blob/" + "ab" * 32, content=b"data")
    assert response.status_code == 501
    assert response.json() == {"error": "NotImplemented",
                               "message": "this server has no blob store (blobs=None)"}


async def test_a_memory_database_is_private_to_its_app(make_app):
    one = make_app(database="sqlite:///:memory:")
    two = make_app(database="sqlite:///:memory:")
    async with http(one) as a, http(two) as b:
        await push(a, add("c1", 1, "t1"))
        assert sorted(puts((await pull(a))["patch"])) == ["todos/t1"]
        assert puts((await pull(b))["patch"]) == {}


async def test_cors_origins_answer_preflights(make_app):
    app = make_app(cors_origins=["http://notebook.example"])
    async with http(app) as c:
        preflight = await c.options("/sync/push", headers={
            "Origin": "http://notebook.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        })
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "http://notebook.example"
        other = await c.options("/sync/push", headers={
            "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
        assert other.status_code == 400
        assert "access-control-allow-origin" not in other.headers


async def test_site_dir_is_served_at_the_root(make_app, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<h1>lite</h1>")
    async with http(make_app(site_dir=site)) as c:
        page = await c.get("/")
        assert page.status_code == 200
        assert page.text == "<h1>lite</h1>"
        # The sync routes still win over the site.
        assert (await c.get("/healthz")).json()["ok"] is True
        missing = await c.get("/nope.html")
        assert missing.status_code == 404

