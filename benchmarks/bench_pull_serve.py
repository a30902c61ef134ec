"""The server answering a 10k-change pull, vs reading the change log raw and encoding it.

The server runs on the embedded SQLite backend (a file in WAL mode). A client group pulled
once when the table held 2,000 rows; since then operator SQL (logged by the triggers like a
mutator's writes) updated 1,000 of them, deleted 1,000 and inserted 8,000: the group's next
pull carries 10,000 changes (9,000 puts and 1,000 deletes).

- subject: that pull through the whole ASGI app (gate middleware, route, body parsing,
  storage, encoding), called in process: the body's bytes as uvicorn would send them;
- anchor: plain ``sqlite3`` reading the same change-log join and ``json`` encoding the same
  response (the same JSON values: booleans, JSON columns decoded), compact, to bytes.

Both answers are checked to be the same JSON before timing.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.harness import Context, Details, benchmark, min_ratio
from benchmarks.items import COLUMNS, INSERT, row, schema
from plasma_nb import Mutators

BEFORE = 2_000
UPDATED, DELETED, INSERTED = 1_000, 1_000, 8_000
CHANGES = UPDATED + DELETED + INSERTED
GROUP = "bench-group"

mutators = Mutators(schema)


async def _asgi(app: Any, method: str, path: str, body: bytes) -> tuple[int, bytes]:
    """One HTTP request through an ASGI app, as a server would make it; (status, body)."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
        "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
    }
    sent = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


def _pull_body(cookie: int | None) -> bytes:
    return json.dumps({"pullVersion": 1, "clientGroupID": GROUP, "cookie": cookie,
                       "profileID": "bench", "schemaVersion": "1"}).encode()


class _RawPull:
    """The anchor: the change-log join and a compact json encoding, by hand."""

    SQL = (f"SELECT c.pk, c.deleted, {', '.join('t.' + c for c in COLUMNS)} "
           "FROM _plasma_changes c LEFT JOIN items t ON t.id = c.pk "
           "WHERE c.tbl = ? AND c.version > ?")

    def __init__(self, path: Path, cookie: int) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.cookie = cookie
        self.encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)

    def pull(self) -> bytes:
        conn = self.conn
        conn.execute("BEGIN")
        try:
            (version,) = conn.execute("SELECT version FROM _plasma_meta").fetchone()
            patch: list[dict[str, Any]] = []
            for pk, deleted, *values in conn.execute(self.SQL, ("items", self.cookie)):
                key = f"items/{pk}"
                if deleted or values[0] is None:
                    patch.append({"op": "del", "key": key})
                    continue
                row = dict(zip(COLUMNS, values, strict=True))
                row["done"] = bool(row["done"])
                if row["tags"] is not None:
                    row["tags"] = json.loads(row["tags"])
                patch.append({"op": "put", "key": key, "value": row})
            last = dict(conn.execute(
                "SELECT id, last_mutation_id FROM _plasma_clients "
                "WHERE client_group_id = ? AND version > ?", (GROUP, self.cookie)).fetchall())
        finally:
            conn.execute("COMMIT")
        answer = {"cookie": version, "lastMutationIDChanges": last, "patch": patch,
                  "mutationErrors": []}
        return self.encoder.encode(answer).encode("utf-8")


@benchmark(bar=min_ratio(0.40))
async def pull_serve_10k_changes() -> Context:
    """The server's answer to a 10k-change pull (ASGI app, SQLite) vs reading the change log
    with raw sqlite3 and json-encoding it."""
    from plasma_nb.server import Limits, create_app

    tmp = tempfile.TemporaryDirectory(prefix="plasma-bench-pull-")
    db = Path(tmp.name) / "server.db"
    app = create_app(schema, mutators, database=f"sqlite:///{db}", blobs=None,
                     limits=Limits(requests_per_second=None))
    raw: _RawPull | None = None
    try:
        conn = sqlite3.connect(db, isolation_level=None)
        status, _ = await _asgi(app, "GET", "/healthz", b"")  # opens: the tables exist now
        assert status == 200, status
        with conn:
            conn.execute("BEGIN")
            conn.executemany(INSERT, [row(i) for i in range(BEFORE)])
        status, first = await _asgi(app, "POST", "/sync/pull", _pull_body(None))
        assert status == 200, first[:300]
        cookie = json.loads(first)["cookie"]
        with conn:  # an operator's writes, one transaction; the triggers log every row
            conn.execute("BEGIN")
            conn.executemany("UPDATE items SET title = title || ' (edited)', priority = ? "
                             "WHERE id = ?", [(7, f"item-{i:06d}") for i in range(UPDATED)])
            conn.executemany("DELETE FROM items WHERE id = ?",
                             [(f"item-{i:06d}",) for i in range(UPDATED, UPDATED + DELETED)])
            conn.executemany(INSERT, [row(i) for i in range(BEFORE, BEFORE + INSERTED)])
        conn.close()
        raw = _RawPull(db, cookie)
        request = _pull_body(cookie)

        async def subject() -> None:
            status, body = await _asgi(app, "POST", "/sync/pull", request)
            if status != 200:
                raise AssertionError(f"pull answered {status}: {body[:300]!r}")

        served = json.loads((await _asgi(app, "POST", "/sync/pull", request))[1])
        by_hand = json.loads(raw.pull())
        if len(served["patch"]) != CHANGES or _canonical(served) != _canonical(by_hand):
            raise AssertionError("the server's pull and the raw one differ")
    except BaseException:
        if raw is not None:
            raw.conn.close()
        await app.state.plasma.close()
        tmp.cleanup()
        raise

    async def close() -> None:
        assert raw is not None
        raw.conn.close()
        await app.state.plasma.close()
        tmp.cleanup()

    def details() -> Details:
        ops = served["patch"]
        return Details(figures={
            "changes": len(ops),
            "puts": sum(op["op"] == "put" for op in ops),
            "deletes": sum(op["op"] == "del" for op in ops),
            "response bytes": len(raw.pull()) if raw is not None else None,
        })

    return Context(anchor=raw.pull, subject=subject, details=details, close=close)


def _canonical(answer: dict[str, Any]) -> dict[str, Any]:
    return {**answer, "patch": sorted(answer["patch"], key=lambda op: op["key"])}
