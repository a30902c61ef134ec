"""The wire protocol's messages (DESIGN.md section 5): shapes, validation, and strict JSON."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plasma_nb.core.errors import (
    ClientStateNotFound,
    ProtocolError,
    SyncError,
    VersionNotSupported,
)
from plasma_nb.core.protocol import (
    MAX_ID_LENGTH,
    MAX_SAFE_INTEGER,
    PULL_VERSION,
    PUSH_VERSION,
    ClearOp,
    DelOp,
    ErrorResponse,
    Mutation,
    MutationErrorInfo,
    Poke,
    PullRequest,
    PullResponse,
    PushRequest,
    PushResponse,
    PutOp,
    dumps,
    loads_strict,
    make_key,
    parse_pull_response,
    parse_push_response,
    patch_op_from_json,
    split_key,
)

# The examples of DESIGN.md section 5 (two long lines broken).
PUSH_BODY = """
{"pushVersion": 1, "clientGroupID": "cg1", "profileID": "p1", "schemaVersion": "1",
 "mutations": [{"clientID": "c1", "id": 1, "name": "add_todo",
                "args": {"id": "t1", "title": "Buy milk"}, "timestamp": 1732590000000}]}
"""
PULL_BODY = """
{"pullVersion": 1, "clientGroupID": "cg1", "cookie": 41, "profileID": "p1", "schemaVersion": "1"}
"""
PULL_RESPONSE_BODY = """
{"cookie": 42, "lastMutationIDChanges": {"c1": 7},
 "patch": [{"op": "put", "key": "todos/t1",
            "value": {"id": "t1", "title": "Buy milk", "done": false}},
           {"op": "del", "key": "todos/t2"}],
 "mutationErrors": [{"clientID": "c1", "id": 6, "name": "add_todo",
                     "message": "title must not be empty"}]}
"""


@contextmanager
def protocol_error(field: str, match: str) -> Iterator[None]:
    """Expect a ProtocolError at ``field`` whose message matches ``match``."""
    with pytest.raises(ProtocolError, match=match) as info:
        yield
    assert info.value.field == field


def changed(body: dict[str, Any], path: tuple[str | int, ...], value: object) -> dict[str, Any]:
    """A deep copy of ``body`` with the field at ``path`` set to ``value`` (or removed, for
    ``MISSING``)."""
    body = copy.deepcopy(body)
    parent: Any = body
    for step in path[:-1]:
        parent = parent[step]
    if value is MISSING:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return body


MISSING = object()


def push_body() -> dict[str, Any]:
    mutation = {"clientID": "c1", "id": 1, "name": "add_todo", "args": {}, "timestamp": 1}
    return {
        "pushVersion": 1,
        "clientGroupID": "cg1",
        "profileID": "p1",
        "schemaVersion": "1",
        "mutations": [dict(mutation, id=i) for i in range(1, 5)],
    }


def pull_body() -> dict[str, Any]:
    return json.loads(PULL_BODY)  # type: ignore[no-any-return]


def pull_response_body() -> dict[str, Any]:
    return json.loads(PULL_RESPONSE_BODY)  # type: ignore[no-any-return]


# --- the design's examples ------------------------------------------------------------------


def test_push_example_round_trips() -> None:
    obj = loads_strict(PUSH_BODY)
    request = PushRequest.from_json(obj)
    assert request == PushRequest(
        push_version=PUSH_VERSION,
        client_group_id="cg1",
        profile_id="p1",
        schema_version="1",
        mutations=(
            Mutation(
                client_id="c1",
                id=1,
                name="add_todo",
                args={"id": "t1", "title": "Buy milk"},
                timestamp=1732590000000,
            ),
        ),
    )
    assert request.to_json() == obj
    assert loads_strict(dumps(request.to_json())) == obj


def test_pull_example_round_trips() -> None:
    obj = loads_strict(PULL_BODY)
    request = PullRequest.from_json(obj)
    assert request == PullRequest(
        pull_version=PULL_VERSION,
        client_group_id="cg1",
        cookie=41,
        profile_id="p1",
        schema_version="1",
    )
    assert request.to_json() == obj


def test_pull_response_example_round_trips() -> None:
    obj = loads_strict(PULL_RESPONSE_BODY)
    response = PullResponse.from_json(obj)
    assert response == PullResponse(
        cookie=42,
        last_mutation_id_changes={"c1": 7},
        patch=(
            PutOp("todos/t1", {"id": "t1", "title": "Buy milk", "done": False}),
            DelOp("todos/t2"),
        ),
        mutation_errors=(MutationErrorInfo("c1", 6, "add_todo", "title must not be empty"),),
    )
    assert response.to_json() == obj
    assert parse_pull_response(obj) == response


# --- round trips ----------------------------------------------------------------------------


def test_pull_request_from_nothing_round_trips() -> None:
    request = PullRequest(1, "cg1", None, "p1", "")
    assert request.to_json()["cookie"] is None
    assert PullRequest.from_json(request.to_json()) == request


def test_mutation_round_trips_with_a_float_timestamp() -> None:
    mutation = Mutation("c1", MAX_SAFE_INTEGER, "f", {"x": [1, {"y": None}]}, 1.5)
    assert Mutation.from_json(mutation.to_json()) == mutation


@pytest.mark.parametrize(
    ("op", "wire"),
    [
        (PutOp("todos/t1", {"id": "t1"}), {"op": "put", "key": "todos/t1", "value": {"id": "t1"}}),
        (DelOp("todos/t1"), {"op": "del", "key": "todos/t1"}),
        (ClearOp(), {"op": "clear"}),
    ],
)
def test_patch_ops_round_trip(op: PutOp | DelOp | ClearOp, wire: dict[str, object]) -> None:
    assert op.to_json() == wire
    assert patch_op_from_json(wire, "patch[0]") == op


def test_patch_ops_round_trip_on_the_checked_path() -> None:
    # Subclasses of str and dict skip the fast path; they are still accepted.
    class Text(str):
        pass

    wire = {"op": Text("put"), "key": Text("t/1"), "value": {"a": 1}}
    assert patch_op_from_json(wire) == PutOp("t/1", {"a": 1})
    assert patch_op_from_json({"op": "del", "key": Text("t/1")}) == DelOp("t/1")


@pytest.mark.parametrize("timestamp", [1732590000000, 1.5])
def test_mutation_round_trips_on_the_checked_path(timestamp: float) -> None:
    # A subclass of str skips the fast path; it is still accepted.
    class Text(str):
        pass

    wire = {"clientID": Text("c1"), "id": 1, "name": "f", "args": {}, "timestamp": timestamp}
    assert Mutation.from_json(wire) == Mutation("c1", 1, "f", {}, timestamp)


def test_mutation_error_info_round_trips() -> None:
    info = MutationErrorInfo("c1", 6, "add_todo", "")
    assert info.to_json() == {"clientID": "c1", "id": 6, "name": "add_todo", "message": ""}
    assert MutationErrorInfo.from_json(info.to_json()) == info


def test_push_response_is_empty_without_errors() -> None:
    assert PushResponse().to_json() == {}
    assert PushResponse.from_json({}) == PushResponse()
    assert parse_push_response({}) == PushResponse()


def test_push_response_with_errors_round_trips() -> None:
    response = PushResponse((MutationErrorInfo("c1", 2, "add_todo", "no"),))
    wire = response.to_json()
    assert wire == {
        "mutationErrors": [{"clientID": "c1", "id": 2, "name": "add_todo", "message": "no"}]
    }
    assert parse_push_response(wire) == response


def test_pull_response_always_writes_mutation_errors() -> None:
    response = PullResponse(cookie=0, last_mutation_id_changes={}, patch=(ClearOp(),))
    assert response.to_json() == {
        "cookie": 0,
        "lastMutationIDChanges": {},
        "patch": [{"op": "clear"}],
        "mutationErrors": [],
    }


def test_pull_response_without_mutation_errors_parses() -> None:
    # A Replicache server does not send them.
    body = changed(pull_response_body(), ("mutationErrors",), MISSING)
    assert PullResponse.from_json(body).mutation_errors == ()


def test_poke_round_trips() -> None:
    assert Poke(42).to_json() == {"type": "poke", "cookie": 42}
    assert Poke.from_json({"type": "poke", "cookie": 42}) == Poke(42)


@pytest.mark.parametrize(
    ("response", "wire"),
    [
        (ErrorResponse.client_state_not_found(), {"error": "ClientStateNotFound"}),
        (
            ErrorResponse.version_not_supported("schema"),
            {"error": "VersionNotSupported", "versionType": "schema"},
        ),
        (
            ErrorResponse.bad_request("cookie: expected an integer, got '4'"),
            {"error": "BadRequest", "message": "cookie: expected an integer, got '4'"},
        ),
    ],
)
def test_error_responses_round_trip(response: ErrorResponse, wire: dict[str, object]) -> None:
    assert response.to_json() == wire
    assert ErrorResponse.from_json(wire) == response


def test_messages_are_frozen_and_slotted() -> None:
    mutation = Mutation("c1", 1, "f", {}, 0)
    with pytest.raises(AttributeError):
        mutation.id = 2  # type: ignore[misc]
    assert not hasattr(mutation, "__dict__")


def test_extra_fields_are_ignored() -> None:
    body = push_body()
    body["requestID"] = "r1"
    body["mutations"][0]["extra"] = True
    assert PushRequest.from_json(body) == PushRequest.from_json(push_body())


# --- push validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value", "field", "match"),
    [
        (("clientGroupID",), MISSING, "clientGroupID", "required field is missing"),
        (("clientGroupID",), 42, "clientGroupID", "expected a non-empty string, got 42"),
        (("clientGroupID",), "", "clientGroupID", "expected a non-empty string, got ''"),
        (("clientGroupID",), "x" * 513, "clientGroupID", "at most 512 characters, got 513"),
        (("profileID",), MISSING, "profileID", "required field is missing"),
        (("profileID",), None, "profileID", "expected a non-empty string, got None"),
        (("schemaVersion",), MISSING, "schemaVersion", "required field is missing"),
        (("schemaVersion",), 1, "schemaVersion", "expected a string, got 1"),
        (("schemaVersion",), "v" * 513, "schemaVersion", "at most 512 characters"),
        (("pushVersion",), MISSING, "pushVersion", "required field is missing"),
        (("pushVersion",), "1", "pushVersion", "expected an integer, got '1'"),
        (("pushVersion",), True, "pushVersion", "expected an integer, got True"),
        (("pushVersion",), 1.0, "pushVersion", r"expected an integer, got 1\.0"),
        (("mutations",), MISSING, "mutations", "required field is missing"),
        (("mutations",), {}, "mutations", r"expected a JSON array, got \{\}"),
        (("mutations", 1), "m", "mutations[1]", "expected a JSON object, got 'm'"),
        (("mutations", 3, "args"), [1], "mutations[3].args", r"expected a JSON object, got \[1\]"),
        (("mutations", 3, "args"), None, "mutations[3].args", "expected a JSON object, got None"),
        (("mutations", 3, "args"), MISSING, "mutations[3].args", "required field is missing"),
        (("mutations", 0, "clientID"), "", "mutations[0].clientID", "non-empty string"),
        (("mutations", 0, "clientID"), 7, "mutations[0].clientID", "non-empty string, got 7"),
        (("mutations", 0, "name"), MISSING, "mutations[0].name", "required field is missing"),
        (("mutations", 0, "name"), "n" * 513, "mutations[0].name", "at most 512 characters"),
        (("mutations", 0, "id"), 0, "mutations[0].id", "from 1 to 9007199254740992, got 0"),
        (("mutations", 0, "id"), -5, "mutations[0].id", "from 1 to 9007199254740992, got -5"),
        (("mutations", 0, "id"), 2**53 + 1, "mutations[0].id", "got 9007199254740993"),
        (("mutations", 0, "id"), True, "mutations[0].id", "expected an integer, got True"),
        (("mutations", 0, "id"), 1.0, "mutations[0].id", r"expected an integer, got 1\.0"),
        (("mutations", 0, "id"), "1", "mutations[0].id", "expected an integer, got '1'"),
        (("mutations", 2, "timestamp"), True, "mutations[2].timestamp", "finite number, got True"),
        (("mutations", 2, "timestamp"), "1", "mutations[2].timestamp", "finite number, got '1'"),
        (("mutations", 2, "timestamp"), None, "mutations[2].timestamp", "finite number, got None"),
        (("mutations", 2, "timestamp"), float("nan"), "mutations[2].timestamp", "got nan"),
        (("mutations", 2, "timestamp"), float("-inf"), "mutations[2].timestamp", "got -inf"),
    ],
)
def test_push_request_validation(
    path: tuple[str | int, ...], value: object, field: str, match: str
) -> None:
    with protocol_error(field, match):
        PushRequest.from_json(changed(push_body(), path, value))


def test_push_request_accepts_the_edges() -> None:
    body = push_body()
    body["schemaVersion"] = ""  # Replicache's default
    body["clientGroupID"] = "g" * MAX_ID_LENGTH
    body["mutations"][0]["id"] = MAX_SAFE_INTEGER
    body["mutations"][0]["timestamp"] = -1.5
    body["mutations"] = body["mutations"][:1]
    request = PushRequest.from_json(body)
    assert request.schema_version == ""
    assert request.mutations[0].id == MAX_SAFE_INTEGER
    assert PushRequest.from_json(changed(body, ("mutations",), [])).mutations == ()


@pytest.mark.parametrize("body", [[], "x", None, 1])
def test_push_body_must_be_an_object(body: object) -> None:
    with protocol_error("body", "expected a JSON object, got"):
        PushRequest.from_json(body)


def test_args_keys_must_be_strings() -> None:
    body = changed(push_body(), ("mutations", 2, "args"), {1: "x"})
    with protocol_error("mutations[2].args", "string keys"):
        PushRequest.from_json(body)


def test_a_mutation_alone_names_its_own_fields() -> None:
    with protocol_error("args", "expected a JSON object"):
        Mutation.from_json({"clientID": "c1", "id": 1, "name": "f", "args": [], "timestamp": 0})


def test_another_push_version_does_not_raise() -> None:
    # The server answers VersionNotSupported for it, not 400.
    request = PushRequest.from_json(changed(push_body(), ("pushVersion",), 2))
    assert request.push_version == 2
    assert request.client_group_id == "cg1"
    assert len(request.mutations) == 4


def test_another_push_version_with_another_shape_keeps_the_version() -> None:
    # Replicache's push v0 names the client, not the group.
    v0 = {"pushVersion": 0, "clientID": "c1", "mutations": [{"id": 1}], "schemaVersion": ""}
    assert PushRequest.from_json(v0) == PushRequest(0, "", "", "", ())


def test_long_values_are_cut_in_messages() -> None:
    with pytest.raises(ProtocolError) as info:
        PushRequest.from_json(changed(push_body(), ("clientGroupID",), ["x" * 10_000] * 100))
    assert info.value.field == "clientGroupID"
    assert len(str(info.value)) < 150
    assert "..." in str(info.value)


def test_huge_integers_are_reported_not_printed() -> None:
    with pytest.raises(ProtocolError, match="expected an integer from 0 to") as info:
        PullRequest.from_json(changed(pull_body(), ("cookie",), 10**5000))
    assert info.value.field == "cookie"
    assert len(str(info.value)) < 150


# --- pull validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value", "field", "match"),
    [
        (("cookie",), MISSING, "cookie", "required field is missing"),
        (("cookie",), "41", "cookie", "expected an integer, got '41'"),
        (("cookie",), True, "cookie", "expected an integer, got True"),
        (("cookie",), 41.0, "cookie", r"expected an integer, got 41\.0"),
        (("cookie",), -1, "cookie", "expected an integer from 0 to 9007199254740992, got -1"),
        (("cookie",), 2**53 + 1, "cookie", "got 9007199254740993"),
        (("clientGroupID",), "", "clientGroupID", "expected a non-empty string, got ''"),
        (("clientGroupID",), MISSING, "clientGroupID", "required field is missing"),
        (("profileID",), 1, "profileID", "expected a non-empty string, got 1"),
        (("schemaVersion",), None, "schemaVersion", "expected a string, got None"),
        (("pullVersion",), MISSING, "pullVersion", "required field is missing"),
        (("pullVersion",), "1", "pullVersion", "expected an integer, got '1'"),
    ],
)
def test_pull_request_validation(
    path: tuple[str | int, ...], value: object, field: str, match: str
) -> None:
    with protocol_error(field, match):
        PullRequest.from_json(changed(pull_body(), path, value))


def test_pull_request_cookie_edges() -> None:
    assert PullRequest.from_json(changed(pull_body(), ("cookie",), 0)).cookie == 0
    assert PullRequest.from_json(changed(pull_body(), ("cookie",), 2**53)).cookie == 2**53
    assert PullRequest.from_json(changed(pull_body(), ("cookie",), None)).cookie is None


def test_another_pull_version_does_not_raise() -> None:
    assert PullRequest.from_json(changed(pull_body(), ("pullVersion",), 0)).pull_version == 0
    odd = {"pullVersion": 7, "cookie": "opaque"}
    assert PullRequest.from_json(odd) == PullRequest(7, "", None, "", "")


@pytest.mark.parametrize("body", [["x"], "{}", 3.5])
def test_pull_body_must_be_an_object(body: object) -> None:
    with protocol_error("body", "expected a JSON object"):
        PullRequest.from_json(body)


# --- GET /sync/pull -------------------------------------------------------------------------


def query(text: str) -> dict[str, str]:
    return dict(parse_qsl(text, keep_blank_values=True))


def test_query_parses() -> None:
    request = PullRequest.from_query(
        query("clientGroupID=cg1&cookie=42&schemaVersion=1&profileID=p1")
    )
    assert request == PullRequest(1, "cg1", 42, "p1", "1")


@pytest.mark.parametrize("text", ["cookie=null&", ""])
def test_query_cookie_null_or_absent_is_none(text: str) -> None:
    params = query(f"{text}clientGroupID=cg1&schemaVersion=&profileID=p1")
    assert PullRequest.from_query(params) == PullRequest(1, "cg1", None, "p1", "")


def test_query_pull_version() -> None:
    base = "clientGroupID=cg1&schemaVersion=1&profileID=p1"
    assert PullRequest.from_query(query(f"{base}&pullVersion=1")).pull_version == 1
    assert PullRequest.from_query(query(f"{base}&pullVersion=2")).pull_version == 2


@pytest.mark.parametrize(
    ("text", "field", "match"),
    [
        ("cookie=4x", "cookie", "expected a JSON-encoded integer or null, got '4x'"),
        ("cookie=42.0", "cookie", r"JSON-encoded integer or null, got '42\.0'"),
        ("cookie=", "cookie", "JSON-encoded integer or null, got ''"),
        ("cookie=%2042", "cookie", "JSON-encoded integer or null, got ' 42'"),
        ("cookie=1" + "0" * 30, "cookie", "JSON-encoded integer or null"),
        ("cookie=-1", "cookie", "expected an integer from 0 to 9007199254740992, got -1"),
        ("cookie=9007199254740993", "cookie", "got 9007199254740993"),
        ("pullVersion=one", "pullVersion", "expected a decimal integer, got 'one'"),
        ("pullVersion=null", "pullVersion", "expected a decimal integer, got 'null'"),
        ("clientGroupID=", "clientGroupID", "expected a non-empty string, got ''"),
    ],
)
def test_query_validation(text: str, field: str, match: str) -> None:
    params = query("clientGroupID=cg1&schemaVersion=1&profileID=p1")
    params.update(query(text))
    with protocol_error(field, match):
        PullRequest.from_query(params)


@pytest.mark.parametrize("missing", ["clientGroupID", "profileID", "schemaVersion"])
def test_query_missing_parameters(missing: str) -> None:
    params = query("clientGroupID=cg1&schemaVersion=1&profileID=p1&cookie=1")
    del params[missing]
    with protocol_error(missing, "required field is missing"):
        PullRequest.from_query(params)


# --- pull response validation ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value", "field", "match"),
    [
        (("cookie",), None, "cookie", "expected an integer, got None"),
        (("cookie",), MISSING, "cookie", "required field is missing"),
        (("lastMutationIDChanges",), [], "lastMutationIDChanges", "expected a JSON object"),
        (
            ("lastMutationIDChanges", "c1"),
            "7",
            'lastMutationIDChanges["c1"]',
            "expected an integer, got '7'",
        ),
        (
            ("lastMutationIDChanges", "c1"),
            -1,
            'lastMutationIDChanges["c1"]',
            "expected an integer from 0 to",
        ),
        (
            ("lastMutationIDChanges", ""),
            3,
            'lastMutationIDChanges[""]',
            "expected a non-empty string, got ''",
        ),
        (("patch",), MISSING, "patch", "required field is missing"),
        (("patch",), {}, "patch", "expected a JSON array"),
        (("patch", 1), "del", "patch[1]", "expected a JSON object, got 'del'"),
        (("patch", 1, "op"), "upsert", "patch[1].op", "one of 'put', 'del', 'clear', got 'upsert'"),
        (("patch", 1, "op"), MISSING, "patch[1].op", "required field is missing"),
        (("patch", 0, "key"), "todos", "patch[0].key", "expected '<table>/<primary key>'"),
        (("patch", 0, "key"), "/t1", "patch[0].key", "expected '<table>/<primary key>', got '/t1'"),
        (("patch", 0, "key"), 5, "patch[0].key", "expected a string, got 5"),
        (("patch", 1, "key"), MISSING, "patch[1].key", "required field is missing"),
        (("patch", 0, "value"), [1], "patch[0].value", r"expected a JSON object, got \[1\]"),
        (("patch", 0, "value"), MISSING, "patch[0].value", "required field is missing"),
        (("mutationErrors",), {}, "mutationErrors", "expected a JSON array"),
        (("mutationErrors", 0), 1, "mutationErrors[0]", "expected a JSON object"),
        (("mutationErrors", 0, "message"), 5, "mutationErrors[0].message", "string, got 5"),
        (("mutationErrors", 0, "id"), 0, "mutationErrors[0].id", "from 1 to"),
        (("mutationErrors", 0, "clientID"), "", "mutationErrors[0].clientID", "non-empty"),
        (("mutationErrors", 0, "name"), MISSING, "mutationErrors[0].name", "missing"),
    ],
)
def test_pull_response_validation(
    path: tuple[str | int, ...], value: object, field: str, match: str
) -> None:
    body = changed(pull_response_body(), path, value)
    with protocol_error(field, match):
        PullResponse.from_json(body)
    with protocol_error(field, match):
        parse_pull_response(body)


def test_long_client_ids_are_cut_in_field_names() -> None:
    body = changed(pull_response_body(), ("lastMutationIDChanges",), {"c" * 600: 1})
    with pytest.raises(ProtocolError, match="at most 512 characters") as info:
        PullResponse.from_json(body)
    assert info.value.field == 'lastMutationIDChanges["' + "c" * 77 + '..."]'


def test_clear_patch_op_needs_no_key() -> None:
    assert patch_op_from_json({"op": "clear", "key": 5}) == ClearOp()


def test_a_patch_op_alone_names_its_own_fields() -> None:
    with protocol_error("body", "expected a JSON object"):
        patch_op_from_json(None)
    with protocol_error("key", "expected '<table>/<primary key>'"):
        patch_op_from_json({"op": "del", "key": "t"})


@pytest.mark.parametrize(
    ("body", "field", "match"),
    [
        ({"mutationErrors": "x"}, "mutationErrors", "expected a JSON array"),
        ({"mutationErrors": [{"clientID": "c1"}]}, "mutationErrors[0].id", "missing"),
        ([], "body", "expected a JSON object"),
    ],
)
def test_push_response_validation(body: object, field: str, match: str) -> None:
    with protocol_error(field, match):
        parse_push_response(body)


@pytest.mark.parametrize(
    ("body", "field", "match"),
    [
        ({"type": "pong", "cookie": 1}, "type", "expected one of 'poke', got 'pong'"),
        ({"cookie": 1}, "type", "required field is missing"),
        ({"type": "poke"}, "cookie", "required field is missing"),
        ({"type": "poke", "cookie": "1"}, "cookie", "expected an integer, got '1'"),
        ({"type": "poke", "cookie": -1}, "cookie", "from 0 to"),
        ("poke", "body", "expected a JSON object, got 'poke'"),
    ],
)
def test_poke_validation(body: object, field: str, match: str) -> None:
    with protocol_error(field, match):
        Poke.from_json(body)


# --- error responses ------------------------------------------------------------------------


@pytest.mark.parametrize("parse", [parse_push_response, parse_pull_response])
def test_client_state_not_found_raises(parse: Callable[[object], object]) -> None:
    with pytest.raises(ClientStateNotFound):
        parse({"error": "ClientStateNotFound"})


@pytest.mark.parametrize(
    ("parse", "body", "version_type"),
    [
        (parse_push_response, {"error": "VersionNotSupported", "versionType": "push"}, "push"),
        (parse_pull_response, {"error": "VersionNotSupported", "versionType": "schema"}, "schema"),
        # versionType is optional in Replicache: the request's own kind then.
        (parse_push_response, {"error": "VersionNotSupported"}, "push"),
        (parse_pull_response, {"error": "VersionNotSupported"}, "pull"),
    ],
)
def test_version_not_supported_raises(
    parse: Callable[[object], object], body: object, version_type: str
) -> None:
    with pytest.raises(VersionNotSupported) as info:
        parse(body)
    assert info.value.version_type == version_type


@pytest.mark.parametrize("parse", [parse_push_response, parse_pull_response])
def test_bad_request_raises_a_sync_error_with_its_message(
    parse: Callable[[object], object],
) -> None:
    with pytest.raises(SyncError, match="cookie: expected an integer") as info:
        parse({"error": "BadRequest", "message": "cookie: expected an integer"})
    assert type(info.value) is SyncError
    with pytest.raises(SyncError, match="no message"):
        parse({"error": "BadRequest"})


@pytest.mark.parametrize(
    ("body", "field", "match"),
    [
        ({"error": "Teapot"}, "error", "expected one of 'ClientStateNotFound', .*got 'Teapot'"),
        ({"error": None}, "error", "got None"),
        (
            {"error": "VersionNotSupported", "versionType": "sync"},
            "versionType",
            "expected one of 'push', 'pull', 'schema', got 'sync'",
        ),
        ({"error": "BadRequest", "message": 400}, "message", "expected a string, got 400"),
    ],
)
def test_error_response_validation(body: object, field: str, match: str) -> None:
    with protocol_error(field, match):
        ErrorResponse.from_json(body)
    with protocol_error(field, match):
        parse_pull_response(body)


# --- keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "parts"),
    [
        ("todos/t1", ("todos", "t1")),
        ("todos/a/b", ("todos", "a/b")),
        ("todos/", ("todos", "")),
        ("todos/42", ("todos", "42")),
    ],
)
def test_split_key(key: str, parts: tuple[str, str]) -> None:
    assert split_key(key) == parts


@pytest.mark.parametrize("key", ["todos", "", "/t1"])
def test_split_key_rejects(key: str) -> None:
    with protocol_error("key", "expected '<table>/<primary key>'"):
        split_key(key)


def test_make_key() -> None:
    assert make_key("todos", "t1") == "todos/t1"
    assert make_key("todos", 42) == "todos/42"
    assert make_key("todos", -7) == "todos/-7"
    assert make_key("todos", "a/b") == "todos/a/b"
    assert split_key(make_key("todos", "a/b")) == ("todos", "a/b")


@pytest.mark.parametrize(
    ("table", "pk", "match"),
    [
        ("todos", True, "string or integer primary key, got True"),
        ("todos", 1.5, r"string or integer primary key, got 1\.5"),
        ("todos", None, "string or integer primary key, got None"),
        ("", "t1", "table name without '/', got ''"),
        ("a/b", "t1", "table name without '/', got 'a/b'"),
    ],
)
def test_make_key_rejects(table: str, pk: object, match: str) -> None:
    with protocol_error("key", match):
        make_key(table, pk)


# --- loads_strict and dumps -----------------------------------------------------------------


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_loads_rejects_non_finite_constants(constant: str) -> None:
    with protocol_error("body", f"{constant} is not valid JSON"):
        loads_strict(f'{{"args": {{"x": [1, {constant}]}}}}')


def test_loads_rejects_numbers_that_overflow() -> None:
    with protocol_error("body", "'1e400' is too large"):
        loads_strict(b"[1e400]")
    assert loads_strict(b"[1e300, 1E-400]") == [1e300, 0.0]


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000,
        "[" * 100_000 + "]" * 100_000,
        '{"a":' * 100_000 + "1" + "}" * 100_000,
        "[{" * 50_000,
        "]" * 100_000 + "[" * 100_000,
        '["' + "[" * 100_000,  # an unterminated string
    ],
)
def test_loads_rejects_deep_nesting_without_recursion(text: str) -> None:
    with pytest.raises(ProtocolError) as info:
        loads_strict(text)
    assert info.value.field == "body"
    if not text.startswith('["'):
        assert "nesting too deep" in info.value.message


def test_loads_rejects_deep_nesting_from_bytes() -> None:
    with protocol_error("body", "nesting too deep: more than 64 levels"):
        loads_strict(b"[" * 100_000)


def test_loads_depth_limit_is_exact() -> None:
    assert loads_strict("[" * 64 + "]" * 64) is not None
    with protocol_error("body", "nesting too deep"):
        loads_strict("[" * 65 + "]" * 65)
    nested = '{"a":[' * 5 + "1" + "]}" * 5  # 10 levels
    assert loads_strict(nested, max_depth=10) == json.loads(nested)
    with protocol_error("body", "more than 9 levels"):
        loads_strict(nested, max_depth=9)
    with protocol_error("body", "nesting too deep"):
        loads_strict("[1]", max_depth=0)
    assert loads_strict("1", max_depth=0) == 1


def test_loads_ignores_brackets_inside_strings() -> None:
    text = json.dumps(["[" * 1000, {"k]": "}" * 1000}, '\\"[[[', "\\"])
    assert loads_strict(text, max_depth=2) == json.loads(text)
    # Three levels, though the brackets outside strings alone look like one.
    tricky = '["]",["]",["]","["],"["],"["]'
    assert loads_strict(tricky, max_depth=3) == json.loads(tricky)
    with protocol_error("body", "nesting too deep"):
        loads_strict(tricky, max_depth=2)


def test_loads_recursion_error_becomes_a_protocol_error() -> None:
    # Only reachable with a max_depth beyond what the interpreter can recurse.
    with protocol_error("body", "nesting too deep for this interpreter"):
        loads_strict("[" * 100_000 + "]" * 100_000, max_depth=10**6)


def test_loads_rejects_invalid_utf8() -> None:
    with protocol_error("body", "invalid UTF-8 at byte 7"):
        loads_strict(b'{"a": "\xff"}')
    with protocol_error("body", "invalid UTF-8 at byte 1"):
        loads_strict(b'"\xed\xa0\x80"')  # an encoded surrogate


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b'{"a": }', r"invalid JSON at line 1 column 7 \(char 6\): Expecting value"),
        (b'{"a": [1, 2', r"invalid JSON at line 1 column 12 \(char 11\)"),
        (b"", r"invalid JSON at line 1 column 1 \(char 0\)"),
        (b"{} x", r"invalid JSON at line 1 column 4 \(char 3\): Extra data"),
        (b'\n\n  {"a" 1}', r"invalid JSON at line 3 column 8 \(char 9\): Expecting ':'"),
        (b"\xef\xbb\xbf{}", "invalid JSON at line 1 column 1"),
        (b"[1,]", "invalid JSON"),
        (b"{'a': 1}", "invalid JSON"),
        (b'"\\x"', "invalid JSON"),
        (b"1" * 5000, "invalid JSON: Exceeds the limit"),
    ],
)
def test_loads_rejects_invalid_json(data: bytes, match: str) -> None:
    with protocol_error("body", match):
        loads_strict(data)


def test_loads_takes_text_and_bytes() -> None:
    assert loads_strict('{"a": "é"}') == {"a": "é"}
    assert loads_strict('{"a": "é"}'.encode()) == {"a": "é"}
    assert loads_strict('"\\ud800"') == "\ud800"
    assert loads_strict('"\ud800"') == "\ud800"


def test_dumps_is_compact_utf8() -> None:
    assert dumps({"a": [1, "é", None, True]}) == '{"a":[1,"é",null,true]}'.encode()


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_dumps_rejects_non_finite_numbers(number: float) -> None:
    with protocol_error("body", "cannot encode as JSON"):
        dumps({"x": number})


def test_dumps_escapes_lone_surrogates() -> None:
    data = dumps({"a": "\ud800é"})
    assert data == b'{"a":"\\ud800\\u00e9"}'
    assert loads_strict(data) == {"a": "\ud800é"}


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.text(alphabet='[]{}"\\,:01 ae-.Nn', max_size=200)))
def test_loads_raises_only_protocol_errors(data: bytes | str) -> None:
    try:
        value = loads_strict(data, max_depth=4)
    except ProtocolError as exc:
        assert exc.field == "body"
    else:
        assert value == json.loads(data)
        assert depth(value) <= 4


def depth(value: object) -> int:
    """How deeply arrays and objects nest in ``value``, found without recursion."""
    deepest = 0
    stack = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, list | dict):
            level += 1
            deepest = max(deepest, level)
            stack.extend(
                (child, level) for child in (item.values() if isinstance(item, dict) else item)
            )
    return deepest


# --- property tests -------------------------------------------------------------------------

# Strings with the characters that matter to the depth scan and to escaping.
texts = st.text(st.characters(codec="utf-8") | st.sampled_from('[]{}"\\/'), max_size=12)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=12,
)
ids = st.text(min_size=1, max_size=20)
mutation_ids = st.integers(1, MAX_SAFE_INTEGER)
cookies = st.integers(0, MAX_SAFE_INTEGER)

mutations = st.builds(
    Mutation,
    client_id=ids,
    id=mutation_ids,
    name=ids,
    args=st.dictionaries(texts, json_values, max_size=4),
    timestamp=st.integers(0, 2**53) | st.floats(allow_nan=False, allow_infinity=False),
)
push_requests = st.builds(
    PushRequest,
    push_version=st.just(PUSH_VERSION),
    client_group_id=ids,
    profile_id=ids,
    schema_version=st.text(max_size=10),
    mutations=st.lists(mutations, max_size=5).map(tuple),
)
keys = st.builds(lambda table, pk: f"{table}/{pk}", ids.filter(lambda t: "/" not in t), texts)
patch_ops = st.one_of(
    st.builds(PutOp, key=keys, value=st.dictionaries(texts, json_values, max_size=4)),
    st.builds(DelOp, key=keys),
    st.just(ClearOp()),
)
mutation_errors = st.builds(
    MutationErrorInfo, client_id=ids, id=mutation_ids, name=ids, message=st.text(max_size=30)
)
pull_responses = st.builds(
    PullResponse,
    cookie=cookies,
    last_mutation_id_changes=st.dictionaries(ids, st.integers(0, MAX_SAFE_INTEGER), max_size=4),
    patch=st.lists(patch_ops, max_size=6).map(tuple),
    mutation_errors=st.lists(mutation_errors, max_size=3).map(tuple),
)


@settings(deadline=None)
@given(push_requests)
def test_push_requests_round_trip(push: PushRequest) -> None:
    assert PushRequest.from_json(push.to_json()) == push
    assert PushRequest.from_json(loads_strict(dumps(push.to_json()))) == push


@settings(deadline=None)
@given(pull_responses)
def test_pull_responses_round_trip(response: PullResponse) -> None:
    assert PullResponse.from_json(response.to_json()) == response
    assert parse_pull_response(loads_strict(dumps(response.to_json()))) == response


@settings(deadline=None)
@given(json_values, st.integers(0, 8))
def test_loads_depth_check_matches_the_real_depth(value: object, max_depth: int) -> None:
    text = json.dumps(value)
    if depth(value) <= max_depth:
        assert loads_strict(text, max_depth=max_depth) == value
    else:
        with protocol_error("body", "nesting too deep"):
            loads_strict(text, max_depth=max_depth)
