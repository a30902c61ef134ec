"""HTTP push end to end: 16 keep-alive clients pushing to a real uvicorn, vs a bare echo.

Two servers run as processes of their own, under uvicorn with the same settings
(``benchmarks.servers.UVICORN``: 127.0.0.1, h11, asyncio):

- the subject: the plasma_nb server on the embedded SQLite backend (a file in WAL mode);
  every request is a real push of one mutation that inserts a row, from 16 client groups
  (one client each) whose mutation ids go up across runs;
- the anchor: a bare Starlette endpoint that parses the same JSON body and echoes it back.

The load generator is ``benchmarks.loadgen`` (raw asyncio streams, keep-alive, no
pipelining) in the benchmark's process: httpx's async client would saturate first. A
timed unit is 16 x ``PER_CLIENT`` requests; the ratio is the anchor's time over the
subject's, which is the subject's throughput as a fraction of the anchor's. Every
request's latency is kept (timed runs only): the p99 of the subject must be at most twice
the anchor's.

The machines these run on have 2 cores: the load generator, the server and anything else
share them, which flatters neither side but squeezes the faster one (the anchor) more.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import Check, Context, Details, Side, benchmark, min_ratio
from benchmarks.loadgen import HTTPError, LoadGenerator, LoadRun, Response, percentile
from benchmarks.servers import UVICORN, ServerProcess, serve
from plasma_nb import Mutators, Schema, col, table

CLIENTS = 16
PER_CLIENT = 100
P99_LIMIT = 2.0
QUANTILES = 400  # points kept per latency distribution for the plot

items = table("items", id=col.id(), client=col.text(), n=col.integer(), note=col.text())
schema = Schema([items], version="1")
mutators = Mutators(schema)


@mutators.register
async def add_item(tx: Any, *, id: str, client: str, n: int, note: str) -> None:
    await tx.insert(items).values(id=id, client=client, n=n, note=note)


def _anchor_app() -> Any:
    """A bare Starlette echo: parse the JSON body, send it back."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def echo(request: Request) -> JSONResponse:
        return JSONResponse(json.loads(await request.body()))

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/sync/push", echo, methods=["POST"]),
                             Route("/healthz", healthz)])


def _plasma_app(database: str) -> Any:
    from plasma_nb.server import Limits, create_app

    # No rate limit: the load generator is every request's only caller, on one address.
    return create_app(schema, mutators, database=database, blobs=None,
                      limits=Limits(requests_per_second=None))


class _Pushes:
    """The request bodies: client i's n-th push overall, one mutation each."""

    def __init__(self) -> None:
        self.sent = [0] * CLIENTS

    def __call__(self, i: int, n: int) -> tuple[str, str, bytes]:
        self.sent[i] += 1
        m = self.sent[i]
        body = {"pushVersion": 1, "clientGroupID": f"bench-group-{i}", "profileID": "bench",
                "schemaVersion": "1", "mutations": [{
                    "clientID": f"bench-client-{i}", "id": m, "name": "add_item",
                    "args": {"id": f"c{i}-{m}", "client": f"bench-client-{i}", "n": m,
                             "note": "a row pushed by the HTTP benchmark"},
                    "timestamp": int(time.time() * 1000)}]}
        return "POST", "/sync/push", json.dumps(body).encode()

    @property
    def total(self) -> int:
        return sum(self.sent)


def _accepted(response: Response) -> None:
    if response.status != 200 or response.body.startswith(b'{"error"'):
        raise HTTPError(f"push answered {response.status}: {response.body[:300]!r}")
    if b"mutationErrors" in response.body:
        raise HTTPError(f"a mutation was rejected: {response.body[:300]!r}")


def _quantiles(values: list[float], points: int = QUANTILES) -> list[float]:
    ordered = sorted(values)
    if len(ordered) <= points:
        return ordered
    return [ordered[round(i * (len(ordered) - 1) / (points - 1))] for i in range(points)]


@benchmark(bar=min_ratio(0.55))
async def http_push_16_clients() -> Context:
    """16 keep-alive clients pushing one mutation a request to uvicorn (SQLite) vs a bare
    Starlette echo of the same bodies, same uvicorn settings; throughput ratio, p99 <= 2x."""
    tmp = tempfile.TemporaryDirectory(prefix="plasma-bench-http-")
    db = Path(tmp.name) / "server.db"
    servers = {"anchor": ServerProcess(__name__, "anchor"),
               "subject": ServerProcess(__name__, "plasma", f"sqlite:///{db}")}
    generators: dict[str, LoadGenerator] = {}
    try:
        for server in servers.values():
            await server.ready()
        generators = {
            "anchor": LoadGenerator("127.0.0.1", servers["anchor"].port, clients=CLIENTS),
            "subject": LoadGenerator("127.0.0.1", servers["subject"].port, clients=CLIENTS,
                                     check=_accepted),
        }
        for generator in generators.values():
            await generator.open()
    except BaseException:
        for server in servers.values():
            server.stop()
        tmp.cleanup()
        raise

    bodies = {"anchor": _Pushes(), "subject": _Pushes()}
    runs: dict[str, list[LoadRun]] = {"anchor": [], "subject": []}

    async def anchor() -> None:
        runs["anchor"].append(await generators["anchor"].run(PER_CLIENT, bodies["anchor"]))

    async def subject() -> None:
        runs["subject"].append(await generators["subject"].run(PER_CLIENT, bodies["subject"]))

    def after_run(side: Side) -> None:
        if side == "subject":
            # Every push committed its row: the server's database says so.
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                (count,) = conn.execute("SELECT count(*) FROM items").fetchone()
            finally:
                conn.close()
            if count != bodies["subject"].total:
                raise AssertionError(f"{bodies['subject'].total} pushes, {count} rows")

    def details() -> Details:
        timed = {side: side_runs[1:] for side, side_runs in runs.items()}  # not the warm-up
        latency = {side: [t for run in side_runs for t in run.latencies]
                   for side, side_runs in timed.items()}
        p99 = {side: percentile(values, 0.99) for side, values in latency.items()}
        p50 = {side: percentile(values, 0.50) for side, values in latency.items()}
        rate = {side: statistics.median(run.throughput for run in side_runs)
                for side, side_runs in timed.items()}
        reopened = sum(c.opened - 1 for g in generators.values() for c in g.connections)
        return Details(
            figures={
                "requests per timed run": CLIENTS * PER_CLIENT,
                "anchor requests/s (median)": round(rate["anchor"]),
                "subject requests/s (median)": round(rate["subject"]),
                "anchor p50 ms": round(p50["anchor"] * 1e3, 2),
                "subject p50 ms": round(p50["subject"] * 1e3, 2),
                "anchor p99 ms": round(p99["anchor"] * 1e3, 2),
                "subject p99 ms": round(p99["subject"] * 1e3, 2),
                "connections reopened": reopened,
                "uvicorn": ", ".join(f"{k}={v}" for k, v in UVICORN.items()),
            },
            checks=[Check("p99 latency slowdown", p99["subject"] / p99["anchor"], P99_LIMIT)],
            distributions={f"{side} latency": _quantiles(values)
                           for side, values in latency.items()},
            notes=[f"{CLIENTS} connections from one asyncio process on the same machine as "
                   "the server: on 2 cores the load generator takes CPU the server would "
                   "otherwise have."],
        )

    async def close() -> None:
        try:
            for generator in generators.values():
                await generator.close()
        finally:
            for server in servers.values():
                server.stop()
            tmp.cleanup()

    return Context(anchor=anchor, subject=subject, after_run=after_run, details=details,
                   close=close)


if __name__ == "__main__":  # a server process of this benchmark: KIND PORT [DATABASE]
    kind, port = sys.argv[1], int(sys.argv[2])
    serve(_anchor_app() if kind == "anchor" else _plasma_app(sys.argv[3]), port)
