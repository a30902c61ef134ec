"""Pokes: fan-out to 50 WebSocket clients, and a push reaching another client's replica.

Servers run as their own processes (``python -m benchmarks.bench_pokes plasma|anchor PORT``)
under uvicorn with the same settings (127.0.0.1, websockets-sansio); the clients run in the
benchmark's process, on loopback.

- ``poke_fanout_50``: a trigger request, then the time until the last of 50 listeners has
  its poke. The anchor is a bare Starlette app whose ``POST /poke`` sends a message to every
  socket in a loop; the subject is the plasma_nb server on Postgres, triggered by a push of
  one mutation (its commit, then the poke of every listener). The harness's median is the
  p50; a distribution of 100 more rounds per side gives the p99 too (printed, and written to
  ``benchmarks/results/poke_fanout_50_distribution.json``).
- ``push_to_replica_p50`` (report): client A mutates, until client B's replica has the row
  (B is told by a subscription). The subject is two plasma_nb clients (``push_delay=0``; the
  default 50 ms debounce would add to it); the anchor speaks the protocol by hand with httpx
  and websockets against the same server: push, poke, pull.

The database is ``PLASMA_BENCH_POSTGRES``, else ``PLASMA_TEST_POSTGRES``, else the local
server; each run uses a fresh Postgres schema, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from benchmarks.bench_postgres import database_url, namespaced
from benchmarks.harness import Context, benchmark, max_slowdown
from benchmarks.servers import ServerProcess
from plasma_nb import Mutators, Schema, col, table

LISTENERS = 50
DISTRIBUTION_ROUNDS = 100
ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"

items = table("items", id=col.id(), n=col.integer())
schema = Schema([items], version="1")
mutators = Mutators(schema)


@mutators.register
async def add_item(tx: Any, *, id: str, n: int) -> None:
    await tx.insert(items).values(id=id, n=n)


# -- the servers, each in a process of its own ---------------------------------------------


def _anchor_app() -> Any:
    """A bare Starlette broadcast loop: sockets register, ``POST /poke`` sends to each."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    sockets: set[WebSocket] = set()
    counter = [0]

    async def listen(ws: WebSocket) -> None:
        await ws.accept()
        sockets.add(ws)
        try:
            await ws.send_text(json.dumps({"type": "poke", "cookie": counter[0]}))
            while (await ws.receive())["type"] != "websocket.disconnect":
                pass
        except WebSocketDisconnect:
            pass
        finally:
            sockets.discard(ws)

    async def poke(request: Request) -> JSONResponse:
        counter[0] += 1
        message = json.dumps({"type": "poke", "cookie": counter[0]})
        for ws in list(sockets):
            await ws.send_text(message)
        return JSONResponse({"cookie": counter[0]})

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(routes=[
        Route("/poke", poke, methods=["POST"]),
        Route("/healthz", healthz),
        WebSocketRoute("/sync/ws", listen),
    ])


def _serve(kind: str, port: int, database: str | None) -> None:
    import uvicorn

    if kind == "anchor":
        app = _anchor_app()
    else:
        from plasma_nb.server import Limits, create_app

        assert database is not None
        # No rate limit here: the benchmark is every request's only caller.
        app = create_app(schema, mutators, database=database, blobs=None,
                         limits=_unlimited(Limits))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning",
                ws="websockets-sansio", lifespan="on")


def _unlimited(limits: Any) -> Any:
    fields = getattr(limits, "__dataclass_fields__", {})
    options: dict[str, Any] = {}
    if "requests_per_second" in fields:
        options["requests_per_second"] = None
    if "max_websockets_per_user" in fields:
        options["max_websockets_per_user"] = None
    return limits(**options)


def _ws_url(server: ServerProcess) -> str:
    return f"ws://127.0.0.1:{server.port}/sync/ws"


@contextlib.asynccontextmanager
async def _fresh_schema() -> AsyncIterator[str]:
    url = database_url()
    namespace = f"plasma_bench_{uuid.uuid4().hex[:12]}"
    try:
        yield namespaced(url, namespace)
    finally:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{namespace}" CASCADE')
        finally:
            await conn.close()


# -- poke fan-out ---------------------------------------------------------------------------


class _Listeners:
    """N WebSocket clients of one server; ``round()`` returns when every one has a poke
    newer than the newest it had before."""

    def __init__(self, ws_url: str) -> None:
        self.ws_url = ws_url
        self.sockets: list[Any] = []
        self.cookies: list[int] = []
        self._threshold = 0
        self._waiting = 0
        self._done = asyncio.Event()
        self._readers: list[asyncio.Task[None]] = []

    async def open(self, count: int) -> None:
        from websockets.asyncio.client import connect

        for i in range(count):
            ws = await connect(f"{self.ws_url}?clientGroupID=fanout-{i}", max_size=2**20)
            first = json.loads(await ws.recv())
            self.sockets.append(ws)
            self.cookies.append(int(first["cookie"]))
        for i, ws in enumerate(self.sockets):
            self._readers.append(asyncio.create_task(self._read(i, ws)))

    async def _read(self, i: int, ws: Any) -> None:
        with contextlib.suppress(Exception):
            async for raw in ws:
                cookie = int(json.loads(raw)["cookie"])
                fresh = self.cookies[i] <= self._threshold < cookie
                self.cookies[i] = max(self.cookies[i], cookie)
                if fresh:
                    self._waiting -= 1
                    if self._waiting == 0:
                        self._done.set()

    async def round(self, trigger: Callable[[], Awaitable[Any]]) -> None:
        self._threshold = max(self.cookies)
        self._waiting = len(self.sockets)
        self._done.clear()
        await asyncio.gather(trigger(), self._done.wait())

    async def close(self) -> None:
        for task in self._readers:
            task.cancel()
        for ws in self.sockets:
            with contextlib.suppress(Exception):
                await ws.close()


class _Pusher:
    def __init__(self, http: httpx.AsyncClient, group: str) -> None:
        self.http = http
        self.group = group
        self.n = 0

    async def push(self) -> None:
        self.n += 1
        body = {"pushVersion": 1, "clientGroupID": self.group, "profileID": "bench",
                "schemaVersion": "1", "mutations": [{
                    "clientID": f"{self.group}-c", "id": self.n, "name": "add_item",
                    "args": {"id": f"{self.group}-{self.n}", "n": self.n},
                    "timestamp": int(time.time() * 1000)}]}
        r = await self.http.post("/sync/push", json=body)
        if r.status_code != 200:
            raise RuntimeError(f"push answered {r.status_code}: {r.text}")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@benchmark(bar=max_slowdown(2))
async def poke_fanout_50() -> Context:
    """A push pokes 50 WebSocket clients, until the last has it, vs a bare Starlette loop.

    plasma_nb on Postgres against a broadcast loop, both under uvicorn."""
    schema_cm = _fresh_schema()
    database = await schema_cm.__aenter__()
    servers = [ServerProcess(__name__, "anchor"), ServerProcess(__name__, "plasma", database)]
    listeners: list[_Listeners] = []
    clients: list[httpx.AsyncClient] = []
    try:
        for server in servers:
            await server.ready()
        anchor_server, plasma_server = servers
        for server in servers:
            group = _Listeners(_ws_url(server))
            listeners.append(group)
            await group.open(LISTENERS)
            clients.append(httpx.AsyncClient(base_url=server.url, timeout=30))
    except BaseException:
        for server in servers:
            server.stop()
        await schema_cm.__aexit__(None, None, None)
        raise
    anchor_listeners, plasma_listeners = listeners
    anchor_http, plasma_http = clients
    pusher = _Pusher(plasma_http, "fanout-pusher")

    async def anchor_poke() -> None:
        (await anchor_http.post("/poke")).raise_for_status()

    async def anchor() -> None:
        await anchor_listeners.round(anchor_poke)

    async def subject() -> None:
        await plasma_listeners.round(pusher.push)

    async def close() -> None:
        try:
            await _distribution(anchor, subject)
        finally:
            for group in listeners:
                await group.close()
            for http in clients:
                await http.aclose()
            for server in servers:
                server.stop()
            await schema_cm.__aexit__(None, None, None)

    return Context(anchor=anchor, subject=subject, close=close)


async def _distribution(anchor: Callable[[], Awaitable[None]],
                        subject: Callable[[], Awaitable[None]]) -> None:
    """p50 and p99 over more rounds than the harness times, alternating the sides."""
    times: dict[str, list[float]] = {"anchor": [], "subject": []}
    for i in range(DISTRIBUTION_ROUNDS):
        order = [("anchor", anchor), ("subject", subject)]
        for name, fn in order if i % 2 == 0 else reversed(order):
            start = time.perf_counter()
            await fn()
            times[name].append(time.perf_counter() - start)
    summary: dict[str, Any] = {"rounds": DISTRIBUTION_ROUNDS, "listeners": LISTENERS}
    for name, values in times.items():
        summary[name] = {"p50": statistics.median(values), "p99": _percentile(values, 0.99),
                         "min": min(values), "max": max(values)}
    summary["p50_slowdown"] = summary["subject"]["p50"] / summary["anchor"]["p50"]
    summary["p99_slowdown"] = summary["subject"]["p99"] / summary["anchor"]["p99"]
    a, s = summary["anchor"], summary["subject"]
    print(f"  distribution over {DISTRIBUTION_ROUNDS} rounds: anchor p50 {a['p50'] * 1e3:.2f}ms "
          f"p99 {a['p99'] * 1e3:.2f}ms; subject p50 {s['p50'] * 1e3:.2f}ms "
          f"p99 {s['p99'] * 1e3:.2f}ms; slowdown p50 {summary['p50_slowdown']:.2f}x "
          f"p99 {summary['p99_slowdown']:.2f}x", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "poke_fanout_50_distribution.json").write_text(
        json.dumps(summary, indent=2) + "\n", encoding="utf-8")


# -- push to another client's replica ------------------------------------------------------


@benchmark(bar=max_slowdown(4))
async def push_to_replica_p50() -> Context:
    """Client A's mutation until client B's replica has it, vs push/poke/pull by hand.

    Two plasma_nb clients against the protocol spoken with httpx and websockets, on
    loopback, against the same server."""
    from websockets.asyncio.client import connect

    import plasma_nb as plasma

    schema_cm = _fresh_schema()
    database = await schema_cm.__aenter__()
    server = ServerProcess(__name__, "plasma", database)
    try:
        await server.ready()
    except BaseException:
        server.stop()
        await schema_cm.__aexit__(None, None, None)
        raise

    # The anchor: raw pushes by A; B listens, pulls on each poke and keeps the rows.
    http = httpx.AsyncClient(base_url=server.url, timeout=30)
    raw_a = _Pusher(http, "raw-a")
    raw_b_rows: dict[str, Any] = {}
    raw_b_cookie: list[int | None] = [None]
    raw_b_seen = asyncio.Event()
    raw_b_wanted: list[str] = [""]
    raw_ws = await connect(f"{_ws_url(server)}?clientGroupID=raw-b")

    async def raw_b_pull() -> None:
        body = {"pullVersion": 1, "clientGroupID": "raw-b", "cookie": raw_b_cookie[0],
                "profileID": "bench", "schemaVersion": "1"}
        answer = (await http.post("/sync/pull", json=body)).json()
        for op in answer["patch"]:
            if op["op"] == "put":
                raw_b_rows[op["key"]] = op["value"]
            elif op["op"] == "del":
                raw_b_rows.pop(op["key"], None)
            elif op["op"] == "clear":
                raw_b_rows.clear()
        raw_b_cookie[0] = answer["cookie"]
        if raw_b_wanted[0] in raw_b_rows:
            raw_b_seen.set()

    async def raw_b_listen() -> None:
        with contextlib.suppress(Exception):
            async for _ in raw_ws:
                await raw_b_pull()

    raw_listener = asyncio.create_task(raw_b_listen())

    async def anchor() -> None:
        raw_b_seen.clear()
        raw_b_wanted[0] = f"items/raw-a-{raw_a.n + 1}"
        await raw_a.push()
        await raw_b_seen.wait()

    # The subject: two plasma_nb clients, in this loop.
    a = await plasma.connect(server.url, schema=schema, mutators=mutators, name="bench-a",
                             storage="memory", thread=False, push_delay=0.0)
    b = await plasma.connect(server.url, schema=schema, mutators=mutators, name="bench-b",
                             storage="memory", thread=False, push_delay=0.0)
    for client in (a, b):
        await client.sync()
    for _ in range(1000):  # until B listens for pokes (a few ms)
        if b.status().pokes == "connected":
            break
        await asyncio.sleep(0.01)
    b_seen = asyncio.Event()
    wanted: list[str] = [""]

    def heard(change: Any) -> None:
        if any(row["id"] == wanted[0] for row in change.added.get("items", [])):
            b_seen.set()

    b.subscribe(items, heard)
    counter = [0]

    async def subject() -> None:
        counter[0] += 1
        wanted[0] = f"client-{counter[0]}"
        b_seen.clear()
        a.mutate.add_item(id=wanted[0], n=counter[0])
        await b_seen.wait()

    async def close() -> None:
        try:
            raw_listener.cancel()
            await raw_ws.close()
            await http.aclose()
            await a.close()
            await b.close()
        finally:
            server.stop()
            await schema_cm.__aexit__(None, None, None)

    return Context(anchor=anchor, subject=subject, close=close)


if __name__ == "__main__":  # a server process of these benchmarks
    _serve(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None)
