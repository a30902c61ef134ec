"""Bytes a LiveTable sends per refresh for a 100k-row live query.

``python -m benchmarks.widget_bytes [--rows N] [--json PATH]``

A report, not a timed comparison: it counts what crosses the widget's comm (the
JSON of each message plus any binary buffers), through a recording comm instead of
a kernel. The table follows ``client.live(select(items).order_by(items.n))`` over
a local-only replica of N rows (default 100,000). Only the window may cross: the
report fails (exit 1) if any refresh sends more than a window's worth of rows.

Scenarios, each one refresh (one update message):

- open: the widget's first state (once per widget; also shown without the ESM/CSS);
- edit in view: one visible row changes;
- edit out of view: one row far below the window changes;
- insert at the top: a row that sorts first shifts the whole window;
- scroll: the browser asks for the window at row 50,000;
- sort: a click on a column header (the client keeps a sorted copy).

Writes JSON (default benchmarks/results/widget_bytes.json) and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_JSON = REPO / "benchmarks" / "results" / "widget_bytes.json"


class RecordingComm:
    kernel = "recording"

    def __init__(self, **kwargs: Any) -> None:
        self.comm_id = f"comm-{id(self):x}"
        self.opened = kwargs
        self.sent: list[tuple[Any, list[Any]]] = []
        self.handlers: list[Any] = []

    def on_msg(self, callback: Any) -> None:
        self.handlers.append(callback)

    def on_close(self, callback: Any) -> None:
        pass

    def send(self, data: Any = None, metadata: Any = None, buffers: Any = None) -> None:
        self.sent.append((data, list(buffers or [])))

    def close(self, *args: Any, **kwargs: Any) -> None:
        pass

    def deliver(self, state: dict[str, Any]) -> None:
        message = {"content": {"comm_id": self.comm_id, "data": {
            "method": "update", "state": state, "buffer_paths": []}}, "buffers": []}
        for handler in self.handlers:
            handler(message)


def size(data: Any, buffers: list[Any]) -> int:
    return len(json.dumps(data).encode()) + sum(len(bytes(b)) for b in buffers)


async def measure(rows: int) -> dict[str, Any]:
    import ipywidgets.comm

    import plasma_nb as plasma
    from plasma_nb import Mutators, Schema, col, select, table
    from plasma_nb.notebook.live_table import LiveTable

    items = table("items", id=col.id(), n=col.integer(), label=col.text(),
                  done=col.boolean(default=False))
    schema = Schema([items])
    mutators = Mutators(schema)

    @mutators.register
    async def add_items(tx: Any, *, start: int, count: int) -> None:
        for i in range(start, start + count):
            await tx.insert(items).values(id=f"i{i:07d}", n=i, label=f"item {i}")

    @mutators.register
    async def relabel(tx: Any, *, id: str, label: str) -> None:
        await tx.update(items).set(label=label).where(items.id == id)

    @mutators.register
    async def add_item(tx: Any, *, id: str, n: int, label: str) -> None:
        await tx.insert(items).values(id=id, n=n, label=label)

    comms: list[RecordingComm] = []

    def create_comm(**kwargs: Any) -> RecordingComm:
        comms.append(RecordingComm(**kwargs))
        return comms[-1]

    original = ipywidgets.comm.create_comm
    ipywidgets.comm.create_comm = create_comm  # type: ignore[assignment]
    client = await plasma.connect(None, schema=schema, mutators=mutators,
                                  name="widget-bytes", storage="memory")
    try:
        started = time.perf_counter()
        client.mutate.add_items(start=0, count=rows)
        filled = time.perf_counter() - started
        live = client.live(select(items).order_by(items.n))
        assert len(live) == rows
        table_widget = LiveTable(live, client=client)
        [comm] = [c for c in comms if c.comm_id == table_widget.comm.comm_id]
        page = table_widget.page_size
        state = comm.opened["data"]["state"]
        report: dict[str, Any] = {
            "rows": rows,
            "page_size": page,
            "columns": len(state["columns"]),
            "fill_seconds": round(filled, 2),
            "whole_result_bytes": len(json.dumps(
                [[r[c] for c in live.columns] for r in live.rows]).encode()),
            "scenarios": {},
        }
        without_code = {k: v for k, v in state.items() if k not in ("_esm", "_css")}
        report["scenarios"]["open"] = {
            "bytes": size(comm.opened["data"], []),
            "bytes_without_esm_css": size({"state": without_code}, []),
            "rows_sent": len(state["window"]),
        }

        async def refresh(name: str, action: Any) -> None:
            before = len(comm.sent)
            action()
            # A commit refreshes the table from the engine's thread; let it, then make
            # sure nothing is left to send.
            await asyncio.sleep(0.3)
            table_widget.refresh()
            messages = comm.sent[before:]
            updates = [(d, b) for d, b in messages if d.get("method") == "update"]
            sent_rows = sum(len(d["state"].get("window", ())) for d, _ in updates)
            report["scenarios"][name] = {
                "messages": len(updates),
                "bytes": sum(size(d, b) for d, b in updates),
                "rows_sent": sent_rows,
                "keys": sorted({k for d, _ in updates for k in d["state"]}),
            }

        await refresh("edit in view",
                      lambda: client.mutate.relabel(id="i0000003", label="changed"))
        await refresh("edit out of view",
                lambda: client.mutate.relabel(id=f"i{rows - 10:07d}", label="changed"))
        await refresh("insert at the top",
                lambda: client.mutate.add_item(id="first", n=-1, label="first"))
        await refresh("scroll", lambda: comm.deliver({"viewport": [rows // 2, page]}))
        await refresh("sort", lambda: comm.deliver({"sort": ["label", "desc"]}))
        table_widget.close()
        return report
    finally:
        ipywidgets.comm.create_comm = original  # type: ignore[assignment]
        await client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.widget_bytes",
                                     description=__doc__.partition("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    report = asyncio.run(measure(args.rows))
    print(f"LiveTable over {report['rows']:,} rows, {report['columns']} columns, "
          f"{report['page_size']} rows per window; the whole result as JSON would be "
          f"{report['whole_result_bytes']:,} bytes")
    print(f"{'scenario':<20}{'messages':>9}{'bytes':>10}{'rows':>6}  keys")
    ok = True
    for name, s in report["scenarios"].items():
        messages = s.get("messages", 1)
        extra = f" ({s['bytes_without_esm_css']:,} without ESM/CSS)" if name == "open" else ""
        print(f"{name:<20}{messages:>9}{s['bytes']:>10,}{s['rows_sent']:>6}  "
              f"{', '.join(s.get('keys', []))}{extra}")
        if s["rows_sent"] > report["page_size"] or messages > 1:
            ok = False
    report["passed"] = ok
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print("only the window crossed" if ok else "MORE THAN A WINDOW CROSSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
