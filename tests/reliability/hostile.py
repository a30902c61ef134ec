"""Hostile requests, built by hypothesis, for every route of the server: pushes and pulls
with fields of the wrong type or missing, unknown groups and clients, bad cookies, huge and
deeply nested JSON, bytes that are not JSON, blob paths that are not hashes and bodies that
do not match their hash, bad ``Authorization`` headers, unknown routes and methods.

Each request starts from a well-formed one (so that it gets past the earlier checks) and is
then corrupted, or is thrown away for something rawer. ``Hostile.db_may_change`` says which
refusals may still leave a trace: a push of several mutations keeps those before the one
that stopped it (DESIGN section 5); any other refusal must write nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from tests.reliability import bank
from tests.server.secure import TOKENS

__all__ = ["Hostile", "hostile_requests", "socket_attempts"]

GROUPS = ["g-alice", "g-bob", "g-unknown", "", "g/../x", "g\u00e9", "x" * 300]
CLIENTS = ["c-alice", "c-bob", "c-new", "", "c\u0000"]
MUTATORS = [*sorted(bank.mutators), "no_such_mutator", "", "__init__", "deposit "]
BLOB = b"a blob that the fuzz may upload"
BLOB_HASH = hashlib.sha256(BLOB).hexdigest()
BAD_HASHES = ["", "abc", BLOB_HASH.upper(), BLOB_HASH[:63], BLOB_HASH + "0", "..",
              "../../etc/passwd", "%2e%2e%2fetc", "a%2Fb", "g" * 64, BLOB_HASH + "/x",
              "\u00e9" * 64, "0" * 64]


@dataclass(frozen=True)
class Hostile:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes | None = None
    params: dict[str, str] | None = None

    @property
    def db_may_change(self) -> bool:
        """A refused push of two or more mutations may have applied the first ones."""
        if self.path != "/sync/push" or self.body is None:
            return False
        try:
            body = json.loads(self.body)
        except (ValueError, RecursionError):
            return False
        return (isinstance(body, dict) and isinstance(body.get("mutations"), list)
                and len(body["mutations"]) > 1)

    def __repr__(self) -> str:  # a failing example stays readable
        body = None if self.body is None else self.body[:300]
        return f"Hostile({self.method} {self.path} {self.params} {self.headers} {body!r})"


# -- JSON values ------------------------------------------------------------------------------

texts = st.one_of(st.text(max_size=20), st.sampled_from(["\ud800", "\x00", "null", "1", "[]"]))
# What a URL can carry (httpx refuses lone surrogates, and control characters in a path).
url_texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
path_texts = st.text(st.characters(exclude_categories=["Cs", "Cc"], exclude_characters="?#"),
                     max_size=70)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), texts,
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=8)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def raw_bodies(limit: int) -> st.SearchStrategy[bytes]:
    """Bodies that are not a well-formed request at all."""
    return st.one_of(
        st.binary(max_size=200),
        values.map(_dumps),
        st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n),  # deep, balanced
        st.integers(60, 5000).map(lambda n: b'{"a":' * n),  # deep, never closed
        st.integers(limit + 1, limit + 4096).map(lambda n: b'{"x": "' + b"y" * n + b'"}'),
        st.sampled_from([b"", b"{", b'{"pushVersion": NaN}', b'{"cookie": 1e999}',
                         b'{"a": "\xff"}', b"\xef\xbb\xbf{}", b"{}" * 3]),
    )


# -- well-formed requests, then corrupted -------------------------------------------------------


@st.composite
def mutations(draw: st.DrawFn) -> dict[str, Any]:
    name = draw(st.sampled_from(MUTATORS))
    args = draw(st.one_of(
        st.fixed_dictionaries({"op": texts, "actor": texts, "account": texts,
                               "amount": st.integers(-5, 5)}),
        st.fixed_dictionaries({"op": texts, "actor": texts, "note": texts, "title": texts,
                               "photo": st.sampled_from([None, BLOB_HASH, "0" * 64, "nope"])}),
        st.dictionaries(st.text(max_size=8), values, max_size=3),
    ))
    return {"clientID": draw(st.sampled_from(CLIENTS)),
            "id": draw(st.one_of(st.integers(1, 4), st.integers(-3, 2**60))),
            "name": name, "args": args,
            "timestamp": draw(st.one_of(st.integers(0, 2**45), st.floats(allow_nan=False)))}


@st.composite
def push_bodies(draw: st.DrawFn) -> dict[str, Any]:
    return {"pushVersion": draw(st.sampled_from([1, 1, 1, 0, 2])),
            "clientGroupID": draw(st.sampled_from(GROUPS)), "profileID": "p1",
            "schemaVersion": draw(st.sampled_from(["1", "1", "0", "2", ""])),
            "mutations": draw(st.lists(mutations(), max_size=3))}


@st.composite
def pull_bodies(draw: st.DrawFn) -> dict[str, Any]:
    return {"pullVersion": draw(st.sampled_from([1, 1, 1, 0])),
            "clientGroupID": draw(st.sampled_from(GROUPS)), "profileID": "p1",
            "schemaVersion": draw(st.sampled_from(["1", "1", "2"])),
            "cookie": draw(st.one_of(st.none(), st.integers(-5, 2**60), values))}


@st.composite
def corrupted(draw: st.DrawFn, body: dict[str, Any]) -> dict[str, Any]:
    """Replace or remove one field, at the top or inside a mutation."""
    target = body
    if body.get("mutations") and draw(st.booleans()):
        target = draw(st.sampled_from(body["mutations"]))
    key = draw(st.sampled_from(sorted(target)))
    if draw(st.booleans()):
        del target[key]
    else:
        target[key] = draw(values)
    return body


def json_bodies(base: st.SearchStrategy[dict[str, Any]], limit: int) -> st.SearchStrategy[bytes]:
    return st.one_of(
        base.map(_dumps),
        base.flatmap(corrupted).map(_dumps),
        raw_bodies(limit),
    )


def authorization() -> st.SearchStrategy[dict[str, str]]:
    good = [f"Bearer {token}" for token in TOKENS]
    bad = ["", "Bearer", "Bearer ", "Bearer wrong", "Basic dG9rLWFsaWNl", "bearer  tok-alice x"]
    valid = st.sampled_from(good).map(lambda v: {"authorization": v})
    invalid: st.SearchStrategy[dict[str, str]] = st.one_of(
        st.sampled_from(bad).map(lambda v: {"authorization": v}),
        st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(
            lambda v: {"authorization": v}),
        st.just({}),
    )
    # Mostly valid, so that most requests get past the gate to the route.
    return st.sampled_from([valid] * 4 + [invalid]).flatmap(lambda strategy: strategy)


def hostile_requests(limit: int) -> st.SearchStrategy[Hostile]:
    """Requests for every HTTP route; ``limit`` is the server's body limit."""
    query = st.dictionaries(st.sampled_from(["clientGroupID", "cookie", "schemaVersion",
                                             "profileID", "pullVersion", "x"]),
                            st.one_of(url_texts, st.sampled_from(GROUPS), st.just("null")),
                            max_size=5)

    def build(method: str, path: str, body: st.SearchStrategy[bytes | None] | None = None,
              params: st.SearchStrategy[dict[str, str] | None] | None = None,
              ) -> st.SearchStrategy[Hostile]:
        return st.builds(Hostile, st.just(method), st.just(path), authorization(),
                         st.none() if body is None else body,
                         st.none() if params is None else params)

    hashes = st.one_of(st.just(BLOB_HASH), st.sampled_from(BAD_HASHES), path_texts)
    pushes = build("POST", "/sync/push", json_bodies(push_bodies(), limit))
    pulls = build("POST", "/sync/pull", json_bodies(pull_bodies(), limit))
    routes = st.sampled_from([pushes] * 4 + [pulls] * 2 + [st.one_of(
        build("GET", "/sync/pull", params=query),
        build("GET", "/sync/schema", params=query),
        build("GET", "/healthz"),
        hashes.flatmap(lambda h: st.one_of(
            build("GET", f"/sync/blob/{h}"),
            build("HEAD", f"/sync/blob/{h}"),
            build("PUT", f"/sync/blob/{h}", st.one_of(st.just(BLOB), st.binary(max_size=64))),
        )),
        st.builds(Hostile, st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
                  st.sampled_from(["/", "/sync", "/sync/", "/sync/admin", "/sync/push/x",
                                   "/sync/ws", "/healthz/", "/%00", "/sync/blob"]),
                  authorization(), st.one_of(st.none(), raw_bodies(limit))),
    )] * 3)
    return routes.flatmap(lambda strategy: strategy)  # pushes and pulls more often


def socket_attempts() -> st.SearchStrategy[tuple[dict[str, str], str | None]]:
    """A poke socket's query parameters, and the first message it sends (if any)."""
    params = st.fixed_dictionaries(
        {"clientGroupID": st.one_of(st.sampled_from(GROUPS), url_texts)},
        optional={"token": st.sampled_from([*TOKENS, "", "wrong"])},
    )
    first = st.one_of(st.none(), st.sampled_from(["not json", "{}", "[]"]),
                      st.sampled_from([*TOKENS, "wrong"]).map(
                          lambda t: json.dumps({"type": "auth", "token": t})),
                      values.map(json.dumps))
    return st.tuples(params, first)
