"""A client process for the real-process tests: ``python tests/client/child.py MODE ...``.

Modes:
- ``durable URL NAME``: queue one mutation without reaching the server, print
  ``durable`` once ``await h`` resolved, then wait to be killed;
- ``work URL NAME PREFIX N``: make N mutations, sync until every one is confirmed,
  print a JSON summary and exit;
- ``commands URL NAME``: read JSON commands from stdin, one a line (``{"mutate": NAME,
  "args": {...}}`` applies and awaits durability, ``{"sync": true}`` syncs), answer
  ``ok`` after each, exit at end of input.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys

import plasma_nb as plasma
from tests.client.app import mutators, schema


async def durable(url: str, name: str) -> None:
    client = await plasma.connect(url, schema=schema, mutators=mutators, name=name,
                                  storage="sqlite")
    client.offline()
    h = client.mutate.add_todo(id=f"{name}-killed", title="written just before SIGKILL")
    await h
    print("durable", flush=True)
    await asyncio.sleep(3600)


async def work(url: str, name: str, prefix: str, count: int) -> None:
    client = await plasma.connect(url, schema=schema, mutators=mutators, name=name,
                                  storage="sqlite", pull_interval=0.2)
    handles = []
    for i in range(count):
        handles.append(client.mutate.add_todo(id=f"{prefix}-{i}", title=f"{prefix} {i}"))
        handles.append(client.mutate.bump(id="shared"))
        await asyncio.sleep(random.random() * 0.01)
    for h in handles:
        await asyncio.wait_for(h.confirmed, 60)
    summary = {"confirmed": len(handles), "client_id": client.status().client_id}
    await client.close()
    print(json.dumps(summary), flush=True)


async def commands(url: str, name: str) -> None:
    client = await plasma.connect(url, schema=schema, mutators=mutators, name=name,
                                  storage="sqlite", pull_interval=3600, pokes=False)
    try:
        while line := await asyncio.to_thread(sys.stdin.readline):
            command = json.loads(line)
            if "mutate" in command:
                await client.mutate(command["mutate"], **command["args"])
            elif command.get("sync"):
                await client.sync()
            print("ok", flush=True)
    finally:
        await client.close()


def main() -> None:
    mode, *args = sys.argv[1:]
    if mode == "durable":
        asyncio.run(durable(*args))
    elif mode == "work":
        asyncio.run(work(args[0], args[1], args[2], int(args[3])))
    elif mode == "commands":
        asyncio.run(commands(*args))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
