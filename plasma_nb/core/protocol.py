"""The sync protocol's messages, as data (DESIGN.md section 5).

The shapes are Replicache's push/pull protocol version 1, so a JavaScript app using Replicache
can sync with the same server as the notebooks. Each message is a frozen dataclass with
snake_case attributes; camelCase exists only on the wire:

- ``Message.from_json(obj)`` validates a decoded JSON value. Every failure is a
  ``ProtocolError`` whose ``.field`` is the offending field's path on the wire
  (``mutations[3].args``, ``cookie``; ``body`` for the body itself).
- ``message.to_json()`` builds the wire dict; ``dumps`` turns it into bytes.

Decode bodies with ``loads_strict``: it rejects NaN and infinities, nesting deeper than
``max_depth`` and invalid UTF-8, and raises nothing but ``ProtocolError``, whatever the input.

Unknown extra fields are ignored (Replicache sends some); missing required ones are errors.

Standard library only, no I/O: both engines and Pyodide import this module.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Self, TypeAlias, TypeVar

from .codec import SHOW_MAX, dumps, loads_strict
from .codec import show as _show
from .errors import ClientStateNotFound, ProtocolError, SyncError, VersionNotSupported

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_SAFE_INTEGER",
    "PULL_VERSION",
    "PUSH_VERSION",
    "ClearOp",
    "DelOp",
    "ErrorName",
    "ErrorResponse",
    "Mutation",
    "MutationErrorInfo",
    "PatchOp",
    "Poke",
    "PullRequest",
    "PullResponse",
    "PushRequest",
    "PushResponse",
    "PutOp",
    "VersionType",
    "dumps",
    "loads_strict",
    "make_key",
    "parse_pull_response",
    "parse_push_response",
    "patch_op_from_json",
    "split_key",
]

# Protocol versions, one line each:
#   1: Replicache push/pull v1 (client groups), plus plasma's "mutationErrors" in responses.
PUSH_VERSION = 1
PULL_VERSION = 1

#: The longest client group id, client id, profile id, mutator name or schema version.
MAX_ID_LENGTH = 512

#: Mutation ids and cookies stay within 0..MAX_SAFE_INTEGER, exact as a JavaScript number.
MAX_SAFE_INTEGER = 2**53

VersionType: TypeAlias = Literal["push", "pull", "schema"]
ErrorName: TypeAlias = Literal["ClientStateNotFound", "VersionNotSupported", "BadRequest"]

_VERSION_TYPES: tuple[VersionType, ...] = ("push", "pull", "schema")
_ERROR_NAMES: tuple[ErrorName, ...] = ("ClientStateNotFound", "VersionNotSupported", "BadRequest")

_T = TypeVar("_T")


# --- checking values ------------------------------------------------------------------------

def _check_object(value: object, field: str) -> dict[str, object]:
    field = field or "body"
    if not isinstance(value, dict):
        raise ProtocolError(field, f"expected a JSON object, got {_show(value)}")
    for key in value:
        if not isinstance(key, str):
            raise ProtocolError(
                field, f"expected a JSON object (string keys), got key {_show(key)}"
            )
    return value


def _check_array(value: object, field: str) -> list[object]:
    if not isinstance(value, list):
        raise ProtocolError(field, f"expected a JSON array, got {_show(value)}")
    return value


def _check_string(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise ProtocolError(field, f"expected a string, got {_show(value)}")
    return value


def _check_short_string(value: object, field: str) -> str:
    """A string of at most MAX_ID_LENGTH characters, the empty one included (Replicache's
    default ``schemaVersion`` is "")."""
    text = _check_string(value, field)
    if len(text) > MAX_ID_LENGTH:
        raise ProtocolError(
            field,
            f"expected at most {MAX_ID_LENGTH} characters, got {len(text)}: {_show(text)}",
        )
    return text


def _check_id(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise ProtocolError(field, f"expected a non-empty string, got {_show(value)}")
    return _check_short_string(value, field)


def _check_int(value: object, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(field, f"expected an integer, got {_show(value)}")
    return value


def _check_range(value: object, field: str, low: int, high: int) -> int:
    number = _check_int(value, field)
    if not low <= number <= high:
        raise ProtocolError(field, f"expected an integer from {low} to {high}, got {_show(value)}")
    return number


def _check_mutation_id(value: object, field: str) -> int:
    return _check_range(value, field, 1, MAX_SAFE_INTEGER)


def _check_cookie(value: object, field: str) -> int:
    return _check_range(value, field, 0, MAX_SAFE_INTEGER)


def _check_nullable_cookie(value: object, field: str) -> int | None:
    return None if value is None else _check_cookie(value, field)


def _check_timestamp(value: object, field: str) -> float:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, float) or not math.isfinite(value):
        raise ProtocolError(field, f"expected a finite number, got {_show(value)}")
    return value


def _check_choice(value: object, field: str, choices: tuple[_T, ...]) -> _T:
    for choice in choices:
        if isinstance(value, type(choice)) and value == choice:
            return choice
    expected = ", ".join(repr(choice) for choice in choices)
    raise ProtocolError(field, f"expected one of {expected}, got {_show(value)}")


class _Fields:
    """One JSON object under validation, with its path on the wire ("" for the body)."""

    __slots__ = ("_obj", "_path")

    def __init__(self, obj: object, path: str) -> None:
        self._obj = _check_object(obj, path)
        self._path = path

    def field(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def has(self, key: str) -> bool:
        return key in self._obj

    def take(self, key: str, check: Callable[[object, str], _T]) -> _T:
        if key not in self._obj:
            raise ProtocolError(self.field(key), "required field is missing")
        return check(self._obj[key], self.field(key))

    def take_list(
        self, key: str, parse: Callable[[object, str], _T], *, required: bool = True
    ) -> tuple[_T, ...]:
        """The array at ``key``, each item parsed with ``parse(item, "key[i]")``; an absent
        optional array is empty."""
        if not required and key not in self._obj:
            return ()
        items = self.take(key, _check_array)
        field = self.field(key)
        return tuple(parse(item, f"{field}[{i}]") for i, item in enumerate(items))


# --- push -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mutation:
    """One call of a mutator, as the client queued it.

    Wire: ``{"clientID", "id", "name", "args", "timestamp"}``; ``timestamp`` is in
    milliseconds since the epoch.
    """

    client_id: str
    id: int
    name: str
    args: dict[str, object]
    timestamp: float

    @classmethod
    def from_json(cls, obj: object, *, path: str = "") -> Self:
        # Pushes carry many mutations: accept the common, valid shape at once, and let the
        # checks below (which accept a superset) find and name whatever is wrong.
        if type(obj) is dict:
            client_id, number, name = obj.get("clientID"), obj.get("id"), obj.get("name")
            args, timestamp = obj.get("args"), obj.get("timestamp")
            if (
                type(client_id) is str
                and 0 < len(client_id) <= MAX_ID_LENGTH
                and type(number) is int
                and 1 <= number <= MAX_SAFE_INTEGER
                and type(name) is str
                and 0 < len(name) <= MAX_ID_LENGTH
                and type(args) is dict
                and all(type(key) is str for key in args)
                and (
                    type(timestamp) is int
                    or (type(timestamp) is float and math.isfinite(timestamp))
                )
            ):
                return cls(client_id, number, name, args, timestamp)
        fields = _Fields(obj, path)
        return cls(
            client_id=fields.take("clientID", _check_id),
            id=fields.take("id", _check_mutation_id),
            name=fields.take("name", _check_id),
            args=fields.take("args", _check_object),
            timestamp=fields.take("timestamp", _check_timestamp),
        )

    def to_json(self) -> dict[str, object]:
        return {
            "clientID": self.client_id,
            "id": self.id,
            "name": self.name,
            "args": self.args,
            "timestamp": self.timestamp,
        }


def _parse_mutation(obj: object, path: str) -> Mutation:
    return Mutation.from_json(obj, path=path)


@dataclass(frozen=True, slots=True)
class PushRequest:
    """The body of ``POST /sync/push``.

    ``from_json`` accepts any integer ``pushVersion``: when it is not ``PUSH_VERSION`` and the
    rest does not parse (another version may have another shape), only the version is kept and
    the other fields are empty. The server checks ``push_version`` first and answers
    ``VersionNotSupported``.
    """

    push_version: int
    client_group_id: str
    profile_id: str
    schema_version: str
    mutations: tuple[Mutation, ...]

    @classmethod
    def from_json(cls, obj: object, *, path: str = "") -> Self:
        fields = _Fields(obj, path)
        version = fields.take("pushVersion", _check_int)
        try:
            return cls(
                push_version=version,
                client_group_id=fields.take("clientGroupID", _check_id),
                profile_id=fields.take("profileID", _check_id),
                schema_version=fields.take("schemaVersion", _check_short_string),
                mutations=fields.take_list("mutations", _parse_mutation),
            )
        except ProtocolError:
            if version == PUSH_VERSION:
                raise
            return cls(version, "", "", "", ())

    def to_json(self) -> dict[str, object]:
        return {
            "pushVersion": self.push_version,
            "clientGroupID": self.client_group_id,
            "profileID": self.profile_id,
            "schemaVersion": self.schema_version,
            "mutations": [mutation.to_json() for mutation in self.mutations],
        }


@dataclass(frozen=True, slots=True)
class MutationErrorInfo:
    """A mutation the server rejected, with the error's message.

    Wire: ``{"clientID", "id", "name", "message"}``.
    """

    client_id: str
    id: int
    name: str
    message: str

    @classmethod
    def from_json(cls, obj: object, *, path: str = "") -> Self:
        fields = _Fields(obj, path)
        return cls(
            client_id=fields.take("clientID", _check_id),
            id=fields.take("id", _check_mutation_id),
            name=fields.take("name", _check_id),
            message=fields.take("message", _check_string),
        )

    def to_json(self) -> dict[str, object]:
        return {
            "clientID": self.client_id,
            "id": self.id,
            "name": self.name,
            "message": self.message,
        }


def _parse_mutation_error(obj: object, path: str) -> MutationErrorInfo:
    return MutationErrorInfo.from_json(obj, path=path)


@dataclass(frozen=True, slots=True)
class PushResponse:
    """The body of a successful push: ``{}``, or ``{"mutationErrors": [...]}`` when this push
    held rejected mutations."""

    mutation_errors: tuple[MutationErrorInfo, ...] = ()

    @classmethod
    def from_json(cls, obj: object, *, path: str = "") -> Self:
        fields = _Fields(obj, path)
        return cls(fields.take_list("mutationErrors", _parse_mutation_error, required=False))

    def to_json(self) -> dict[str, object]:
        if not self.mutation_errors:
            return {}
        return {"mutationErrors": [error.to_json() for error in self.mutation_errors]}


# --- pull -----------------------------------------------------------------------------------


_QUERY_INT = re.compile(r"-?(?:0|[1-9][0-9]{0,19})")


def _query_int(text: str, field: str, *, nullable: bool) -> int | None:
    if nullable and text == "null":
        return None
    if not _QUERY_INT.fullmatch(text):
        expected = "a JSON-encoded integer or null" if nullable else "a decimal integer"
        raise ProtocolError(field, f"expected {expected}, got {_show(text)}")
    return int(text)


@dataclass(frozen=True, slots=True)
class PullRequest:
    """The body of ``POST /sync/pull``, or the query of ``GET /sync/pull``.

    ``cookie`` is None to pull from nothing. As for ``PushRequest``, any integer
    ``pullVersion`` parses; the server answers ``VersionNotSupported`` for the wrong one.
    """

    pull_version: int
    client_group_id: str
    cookie: int | None
    profile_id: str
    schema_version: str

    @classmethod
    def from_json(cls, obj: object, *, path: str = "") -> Self:
        fields = _Fields(obj, path)
        version = fields.take("pullVersion", _check_int)
        try:
            return cls(
                pull_version=version,
                client_group_id=fields.take("clientGroupID", _check_id),
                cookie=fields.take("cookie", _check_nullable_cookie),
                profile_id=fields.take("profileID", _check_id),
                schema_version=fields.take("schemaVersion", _check_short_string),
            )
        except ProtocolError:
            if version == PULL_VERSION:
                raise
            return cls(version, "", None, "", "")

    @classmethod
    def from_query(cls, params: Mapping[str, str]) -> Self:
        """Parse ``GET /sync/pull?clientGroupID=..&cookie=..&schemaVersion=..&profileID=..``.

        The cookie is JSON-encoded (``null`` or ``42``); an absent cookie means None and an
        absent ``pullVersion`` means ``PULL_VERSION``.
        """
        obj: dict[str, object] = {
            key: params[key]
            for key in ("clientGroupID", "profileID", "schemaVersion")
            if key in params
        }
        version = params.get("pullVersion")
        obj["pullVersion"] = (
            PULL_VERSION if version is None else _query_int(version, "pullVersion", nullable=False)
        )
        cookie = params.get("cookie")
        obj["cookie"] = None if cookie is None else _query_int(cookie, "cookie", nullable=True)
        return cls.from_json(obj)

    def to_json(self) -> dict[str, object]:
        return {
            "pullVersion": self.pull_version,
            "clientGroupID": self.client_group_id,
            "cookie": self.cookie,
            "profileID": self.profile_id,
            "schemaVersion": self.schema_version,
        }


def split_key(key: str, *, field: str = "key") -> tuple[str, str]:
    """Split ``"<table>/<primary key as text>"`` at the first ``/``: ``("todos", "t1")``."""
    table, slash, pk = key.partition("/")
    if not slash or not table:
        raise ProtocolError(field, f"expected '<table>/<primary key>', got {_show(key)}")
    return table, pk


def make_key(table: str, pk: object) -> str:
    """The patch key of a row: ``make_key("todos", "t1") == "todos/t1"``; integer keys are
    written in decimal."""
    if not isinstance(table, str) or not table or "/" in table:
        raise ProtocolError("key", f"expected a table name without '/', got {_show(table)}")
    if isinstance(pk, bool) or not isinstance(pk, str | int):
        raise ProtocolError("key", f"expected a string or integer primary key, got {_show(pk)}")
    return f"{table}/{pk}"


@dataclass(frozen=True, slots=True)
class PutOp:
    """Put the whole row ``value`` at ``key``: ``{"op": "put", "key": ..., "value": {...}}``."""

    key: str
    value: dict[str, object]

    def to_json(self) -> dict[str, object]:
        return {"op": "put", "key": self.key, "value": self.value}


@dataclass(frozen=True, slots=True)
class DelOp:
    """Delete the row at ``key``: ``{"op": "del", "key": ...}``."""

    key: str

    def to_json(self) -> dict[str, object]:
        return {"op": "del", "key": self.key}


@dataclass(frozen=True, slots=True)
class ClearOp:
    """Delete every row: ``{"op": "clear"}``. A patch from nothing starts with it."""

    def to_json(self) -> dict[str, object]:
        return {"op": "clear"}


PatchOp: TypeAlias = PutOp | DelOp | ClearOp


def _check_key(value: object, field: str) -> str:
    key = _check_string(value, field)
    split_key(key, field=field)
    return key


def patch_op_from_json(obj: object, field: str = "") -> PatchOp:
    """Validate one patch operation; ``field`` is its path on the wire (``patch[2]``)."""
    # A snapshot holds a put per row: accept the common, valid shapes at once, and let the
    # checks below (which accept a superset) find and name whatever is wrong.
    if type(obj) is dict:
        op, key = obj.get("op"), obj.get("key")
        if type(key) is str and key.find("/") > 0:
            value = obj.get("value")
            if op == "put" and type(value) is dict and all(type(k) is str for k in value):
                return PutOp(key, value)
            if op == "del":
                return DelOp(key)
    fields = _Fields(obj, field)
    op = fields.take("op", lambda value, at: _check_choice(value, at, ("put", "del", "clear")))
    if op == "clear":
        return ClearOp()
    key = fields.take("key", _check_key)
    if op == "del":
        return DelOp(key)
    return PutOp(key, fields.take("value", _check_object))


# Key sets of put values already seen to be all strings: a snapshot's rows share a handful.
_STRING_KEYS: set[tuple[object, ...]] = set()


def _parse_patch(value: object, field: str) -> tuple[PatchOp, ...]:
    """The ``patch`` array: ``patch_op_from_json`` for each item, in one tight loop.

    A snapshot is thousands of puts, so the common valid shapes are recognised inline;
    anything else goes through ``patch_op_from_json``, which accepts the same values and
    names the same field in its errors, so the result never differs from the plain loop.
    """
    items = _check_array(value, field)
    ops: list[PatchOp] = []
    append = ops.append
    known = _STRING_KEYS
    for i, obj in enumerate(items):
        if type(obj) is dict:
            key = obj.get("key")
            if type(key) is str and key.find("/") > 0:
                op = obj.get("op")
                if op == "put":
                    row = obj.get("value")
                    if type(row) is dict:
                        names = tuple(row)
                        if names in known or all(type(k) is str for k in names):
                            if len(known) < 256:
                                known.add(names)
                            append(PutOp(key, row))
                            continue
                elif op == "del":
                    append(DelOp(key))
                    continue
        append(patch_op_from_json(obj, f"{field}[{i}]"))
    return tuple(ops)


def _check_mutation_ids(value: object, field: str) -> dict[str, int]:
    changes: dict[str, int] = {}
    for client_id, mutation_id in _check_object(value, field).items():
        # The client id is a key here: name it the way JavaScript would index it.
        shown = client_id if len(client_id) <= SHOW_MAX else client_id[: SHOW_MAX - 3] + "..."
        at = f"{field}[{json.dumps(shown, ensure_ascii=False)}]"
        changes[_check_id(client_id, at)] = _check_cookie(mutation_id, at)
    return changes


@dataclass(frozen=True, slots=True)
class PullResponse:
    """The body of a successful pull.

    Wire: ``{"cookie", "lastMutationIDChanges", "patch", "mutationErrors"}``; ``to_json``
    always writes ``mutationErrors``, ``from_json`` also accepts a response without it (a
    Replicache server's).
    """

    cookie: int
    last_mutation_id_changes: dict[str, int]
    patch: tuple[PatchOp, ...]
    mutation_errors: tuple[MutationErrorInfo, ...] = ()

    @classmethod
    def from_json(cls, obj: object, *, path: str = "") -> Self:
        fields = _Fields(obj, path)
        return cls(
            cookie=fields.take("cookie", _check_cookie),
            last_mutation_id_changes=fields.take("lastMutationIDChanges", _check_mutation_ids),
            patch=fields.take("patch", _parse_patch),
            mutation_errors=fields.take_list(
                "mutationErrors", _parse_mutation_error, required=False
            ),
        )

    def to_json(self) -> dict[str, object]:
        return {
            "cookie": self.cookie,
            "lastMutationIDChanges": self.last_mutation_id_changes,
            "patch": [op.to_json() for op in self.patch],
            "mutationErrors": [error.to_json() for error in self.mutation_errors],
        }


# --- errors and pokes -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """An error body: ``{"error": "ClientStateNotFound"}`` and ``{"error":
    "VersionNotSupported", "versionType": ...}`` (both with HTTP 200, as Replicache expects),
    or ``{"error": "BadRequest", "message": ...}`` (HTTP 400).

    Build them with ``client_state_not_found()``, ``version_not_supported(version_type)`` and
    ``bad_request(message)``.
    """

    error: ErrorName
    version_type: VersionType | None = None
    message: str | None = None

    @classmethod
    def client_state_not_found(cls) -> Self:
        return cls("ClientStateNotFound")

    @classmethod
    def version_not_supported(cls, version_type: VersionType) -> Self:
        return cls("VersionNotSupported", version_type=version_type)

    @classmethod
    def bad_request(cls, message: str) -> Self:
        return cls("BadRequest", message=message)

    @classmethod
    def from_json(cls, obj: object, *, path: str = "") -> Self:
        fields = _Fields(obj, path)
        version_type: VersionType | None = None
        if fields.has("versionType"):
            version_type = fields.take(
                "versionType", lambda value, at: _check_choice(value, at, _VERSION_TYPES)
            )
        return cls(
            error=fields.take("error", lambda value, at: _check_choice(value, at, _ERROR_NAMES)),
            version_type=version_type,
            message=fields.take("message", _check_string) if fields.has("message") else None,
        )

    def to_json(self) -> dict[str, object]:
        body: dict[str, object] = {"error": self.error}
        if self.version_type is not None:
            body["versionType"] = self.version_type
        if self.message is not None:
            body["message"] = self.message
        return body

    def to_exception(self, version_type: VersionType) -> SyncError:
        """The error a client raises for this answer; ``version_type`` is used when a
        VersionNotSupported answer does not say which version (``versionType`` is optional
        in Replicache)."""
        if self.error == "ClientStateNotFound":
            return ClientStateNotFound("the server does not know this client group or client")
        if self.error == "VersionNotSupported":
            return VersionNotSupported(self.version_type or version_type)
        return SyncError(f"the server rejected the request: {self.message or '(no message)'}")


def _raise_if_error(obj: object, version_type: VersionType) -> None:
    if isinstance(obj, dict) and "error" in obj:
        raise ErrorResponse.from_json(obj).to_exception(version_type)


def parse_push_response(obj: object) -> PushResponse:
    """Turn a decoded push response body into a ``PushResponse``.

    Raises ``ClientStateNotFound`` or ``VersionNotSupported`` for those answers, ``SyncError``
    for a ``BadRequest`` one and ``ProtocolError`` for anything malformed.
    """
    _raise_if_error(obj, "push")
    return PushResponse.from_json(obj)


def parse_pull_response(obj: object) -> PullResponse:
    """Turn a decoded pull response body into a ``PullResponse``; raises as
    ``parse_push_response`` does."""
    _raise_if_error(obj, "pull")
    return PullResponse.from_json(obj)


@dataclass(frozen=True, slots=True)
class Poke:
    """The WebSocket message ``{"type": "poke", "cookie": 42}``: the server's version moved
    on, so pull."""

    cookie: int

    @classmethod
    def from_json(cls, obj: object, *, path: str = "") -> Self:
        fields = _Fields(obj, path)
        fields.take("type", lambda value, at: _check_choice(value, at, ("poke",)))
        return cls(fields.take("cookie", _check_cookie))

    def to_json(self) -> dict[str, object]:
        return {"type": "poke", "cookie": self.cookie}
