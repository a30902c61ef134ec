"""Malformed requests get 400 (naming the field) or 413, never a 500, change nothing, and
the server keeps serving."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import pytest

from plasma_nb.server import Limits
from tests.server.helpers import (
    add,
    db_version,
    dumps,
    http,
    last_mutation_ids,
    pull,
    pull_body,
    push,
    push_body,
    query,
)

MAX = 2**53
# Every malformed push carries a mutation that must never be applied.
BAD_MUTATION = add("c1", 1, "never", "must not be applied")


@pytest.fixture
def backend() -> str:
    """SQLite only: malformed requests never reach the storage."""
    return "sqlite"


def push_with(path: str, value: Any = ..., *, body: dict[str, Any] | None = None) -> bytes:
    """A push body with the field at ``path`` (``"mutations.0.id"``) set to ``value``, or
    removed when ``value`` is omitted."""
    obj: Any = copy.deepcopy(body or push_body(BAD_MUTATION))
    *parents, last = path.split(".")
    target = obj
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    key: int | str = int(last) if isinstance(target, list) else last
    if value is ...:
        del target[key]
    else:
        target[key] = value
    return dumps(obj)


def pull_with(field: str, value: Any = ...) -> bytes:
    return push_with(field, value, body=pull_body())


def bad(field: str, message: str) -> dict[str, str]:
    return {"error": "BadRequest", "message": f"{field}: {message}"}


# (raw body, expected answer); every one is a 400.
PUSH_CASES: list[tuple[bytes, dict[str, str]]] = [
    # the body itself
    (b"", bad("body", "invalid JSON at line 1 column 1 (char 0): Expecting value")),
    (b'{"pushVersion": 1,', bad("body", "invalid JSON at line 1 column 19 (char 18): "
                                        "Expecting property name enclosed in double quotes")),
    (b"[]", bad("body", "expected a JSON object, got []")),
    (b'"push"', bad("body", "expected a JSON object, got 'push'")),
    (b"42", bad("body", "expected a JSON object, got 42")),
    (b"[" * 100_000, bad("body", "nesting too deep: more than 64 levels")),
    (b'{"a": ' * 50_000 + b"1" + b"}" * 50_000,
     bad("body", "nesting too deep: more than 64 levels")),
    (b'{"pushVersion": NaN}', bad("body", "NaN is not valid JSON: numbers must be finite")),
    (b'{"pushVersion": Infinity}',
     bad("body", "Infinity is not valid JSON: numbers must be finite")),
    (b'{"pushVersion": -Infinity}',
     bad("body", "-Infinity is not valid JSON: numbers must be finite")),
    (b'{"pushVersion": 1e400}', bad("body", "'1e400' is too large: numbers must be finite")),
    (b'{"pushVersion": 1, "clientGroupID": "\xff"}',
     bad("body", "invalid UTF-8 at byte 37: invalid start byte")),
    # wrong types
    (push_with("pushVersion", "1"), bad("pushVersion", "expected an integer, got '1'")),
    (push_with("pushVersion", True), bad("pushVersion", "expected an integer, got True")),
    (push_with("pushVersion", 1.5), bad("pushVersion", "expected an integer, got 1.5")),
    (push_with("clientGroupID", 7), bad("clientGroupID", "expected a non-empty string, got 7")),
    (push_with("clientGroupID", ""), bad("clientGroupID", "expected a non-empty string, got ''")),
    (push_with("profileID", None), bad("profileID", "expected a non-empty string, got None")),
    (push_with("schemaVersion", 1), bad("schemaVersion", "expected a string, got 1")),
    (push_with("mutations", {}), bad("mutations", "expected a JSON array, got {}")),
    (push_with("mutations", "all"), bad("mutations", "expected a JSON array, got 'all'")),
    (push_with("mutations.0", 5), bad("mutations[0]", "expected a JSON object, got 5")),
    (push_with("mutations.0.clientID", 1),
     bad("mutations[0].clientID", "expected a non-empty string, got 1")),
    (push_with("mutations.0.id", "1"), bad("mutations[0].id", "expected an integer, got '1'")),
    (push_with("mutations.0.id", 1.0), bad("mutations[0].id", "expected an integer, got 1.0")),
    (push_with("mutations.0.id", True), bad("mutations[0].id", "expected an integer, got True")),
    (push_with("mutations.0.id", 0),
     bad("mutations[0].id", f"expected an integer from 1 to {MAX}, got 0")),
    (push_with("mutations.0.id", MAX + 1),
     bad("mutations[0].id", f"expected an integer from 1 to {MAX}, got {MAX + 1}")),
    (push_with("mutations.0.name", 5),
     bad("mutations[0].name", "expected a non-empty string, got 5")),
    (push_with("mutations.0.args", ["t1"]),
     bad("mutations[0].args", "expected a JSON object, got ['t1']")),
    (push_with("mutations.0.timestamp", "now"),
     bad("mutations[0].timestamp", "expected a finite number, got 'now'")),
    # missing fields
    *[(push_with(field), bad(field, "required field is missing"))
      for field in ("pushVersion", "clientGroupID", "profileID", "schemaVersion", "mutations")],
    *[(push_with(f"mutations.0.{field}"), bad(f"mutations[0].{field}",
                                              "required field is missing"))
      for field in ("clientID", "id", "name", "args", "timestamp")],
    # strings that are not Unicode text: JSON allows escaped lone surrogates
    (push_with("clientGroupID", "g\ud800"),
     bad("clientGroupID", "expected valid Unicode text, got a lone surrogate")),
    (push_with("mutations.0.clientID", "c\udfff"),
     bad("mutations[0].clientID", "expected valid Unicode text, got a lone surrogate")),
    (push_with("mutations.0.name", "add_todo\ud800"),
     bad("mutations[0].name", "expected valid Unicode text, got a lone surrogate")),
    (push_with("mutations.0.args", {"id": "t1", "title": ["x", "\ud800"]}),
     bad("mutations[0].args.title[1]", "expected valid Unicode text, got a lone surrogate")),
]

PULL_CASES: list[tuple[bytes, dict[str, str]]] = [
    (b"[]", bad("body", "expected a JSON object, got []")),
    (b"{" * 100_000, bad("body", "nesting too deep: more than 64 levels")),
    (b'{"cookie": NaN}', bad("body", "NaN is not valid JSON: numbers must be finite")),
    (pull_with("pullVersion", "1"), bad("pullVersion", "expected an integer, got '1'")),
    (pull_with("clientGroupID", 5), bad("clientGroupID", "expected a non-empty string, got 5")),
    (pull_with("cookie", "41"), bad("cookie", "expected an integer, got '41'")),
    (pull_with("cookie", 1.5), bad("cookie", "expected an integer, got 1.5")),
    (pull_with("cookie", True), bad("cookie", "expected an integer, got True")),
    (pull_with("cookie", -1), bad("cookie", f"expected an integer from 0 to {MAX}, got -1")),
    (pull_with("cookie", MAX + 1),
     bad("cookie", f"expected an integer from 0 to {MAX}, got {MAX + 1}")),
    (pull_with("profileID", 5), bad("profileID", "expected a non-empty string, got 5")),
    (pull_with("schemaVersion", None), bad("schemaVersion", "expected a string, got None")),
    (pull_with("clientGroupID", "\udc00"),
     bad("clientGroupID", "expected valid Unicode text, got a lone surrogate")),
    *[(pull_with(field), bad(field, "required field is missing"))
      for field in ("pullVersion", "clientGroupID", "cookie", "profileID", "schemaVersion")],
]


@pytest.fixture
async def small(make_app) -> AsyncIterator[Any]:
    """A client of an app with a body limit of 4 KiB."""
    async with http(make_app(limits=Limits(max_body_bytes=4096))) as c:
        await c.get("/healthz")
        yield c


@pytest.mark.parametrize(("raw", "answer"), PUSH_CASES,
                         ids=[answer["message"][:60] for _, answer in PUSH_CASES])
async def test_a_malformed_push_gets_400_naming_the_field(client, db_path, raw, answer):
    response = await client.post("/sync/push", content=raw)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json() == answer
    assert query(db_path, "SELECT count(*) FROM todos") == [(0,)]


@pytest.mark.parametrize(("raw", "answer"), PULL_CASES,
                         ids=[answer["message"][:60] for _, answer in PULL_CASES])
async def test_a_malformed_pull_gets_400_naming_the_field(client, raw, answer):
    response = await client.post("/sync/pull", content=raw)
    assert response.status_code == 400
    assert response.json() == answer


async def test_a_body_over_the_limit_gets_413(small):
    schema = (await small.get("/sync/schema")).json()
    assert schema["limits"]["maxBodyBytes"] == 4096

    big = push_with("mutations.0.args.title", "x" * 5000)
    response = await small.post("/sync/push", content=big)
    assert response.status_code == 413
    assert response.json() == {"error": "PayloadTooLarge",
                               "message": f"the body is {len(big)} bytes; the limit is 4096"}

    pulled = await small.post("/sync/pull", content=b" " * 5000)
    assert pulled.status_code == 413

    # At the limit exactly is fine.
    body = push_with("mutations.0.args.title", "")
    fitting = body.replace(b'"title": ""', b'"title": "' + b"y" * (4096 - len(body)) + b'"')
    assert len(fitting) == 4096
    assert (await small.post("/sync/push", content=fitting)).status_code == 200


async def test_a_streamed_body_over_the_limit_gets_413_without_a_content_length(small):
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(100):
            sent += 1
            yield b" " * 1024

    response = await small.post("/sync/push", content=chunks())
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert response.json() == {"error": "PayloadTooLarge",
                               "message": "the body is over the limit of 4096 bytes"}
    assert sent < 100  # the server stopped reading early


@pytest.mark.parametrize(
    ("method", "path", "status", "answer", "allow"),
    [
        ("GET", "/nope", 404, {"error": "NotFound", "message": "GET /nope: Not Found"}, None),
        ("POST", "/sync", 404, {"error": "NotFound", "message": "POST /sync: Not Found"}, None),
        ("GET", "/sync/push", 405,
         {"error": "MethodNotAllowed", "message": "GET /sync/push: Method Not Allowed"}, "POST"),
        ("PUT", "/sync/pull", 405,
         {"error": "MethodNotAllowed", "message": "PUT /sync/pull: Method Not Allowed"}, None),
        ("DELETE", "/sync/schema", 405,
         {"error": "MethodNotAllowed", "message": "DELETE /sync/schema: Method Not Allowed"}, None),
        ("POST", "/healthz", 405,
         {"error": "MethodNotAllowed", "message": "POST /healthz: Method Not Allowed"}, None),
    ],
)
async def test_unknown_routes_and_wrong_methods_answer_json(client, method, path, status,
                                                            answer, allow):
    response = await client.request(method, path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json() == answer
    if allow is not None:
        assert response.headers["allow"] == allow


async def test_after_every_malformed_request_the_server_still_serves(small, db_path):
    await push(small, add("c0", 1, "kept"))
    before = (await pull(small))["cookie"]
    version = db_version(db_path)

    for route, cases in (("/sync/push", PUSH_CASES), ("/sync/pull", PULL_CASES)):
        for raw, _ in cases:
            status = (await small.post(route, content=raw)).status_code
            assert status == (413 if len(raw) > 4096 else 400), raw[:80]
    assert (await small.post("/sync/push", content=b"x" * 10_000)).status_code == 413
    assert (await small.get("/sync/pull", params={"cookie": "[[["})).status_code == 400
    assert (await small.get("/no/such/route")).status_code == 404
    assert (await small.get("/sync/push")).status_code == 405

    # Nothing they carried was applied, and the version did not move.
    assert db_version(db_path) == version
    assert query(db_path, "SELECT id FROM todos") == [("kept",)]
    assert last_mutation_ids(db_path) == {"c0": 1}
    assert query(db_path, "SELECT id FROM _plasma_client_groups") == [("cg1",)]

    # And a valid push still works.
    assert await push(small, add("c0", 2, "after")) == {}
    after = await pull(small, before)
    assert [op["key"] for op in after["patch"]] == ["todos/after"]
    assert after["lastMutationIDChanges"] == {"c0": 2}
