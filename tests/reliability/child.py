"""A client process that kills itself right after ``await h``:
``python tests/reliability/child.py URL NAME PREFIX K``.

Deposits one unit with op ``PREFIX:i`` for i = 1, 2, ...; prints each op once ``await h``
resolved (the mutation is durable in the local database), and SIGKILLs itself right after
the K-th, while its sync loop may be pushing. The test checks that the next process on
the same local database pushes every printed op, and none twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import plasma_nb as plasma
from tests.reliability import bank


async def main(url: str, name: str, prefix: str, k: int) -> None:
    client = await plasma.connect(url, schema=bank.schema, mutators=bank.mutators, name=name,
                                  storage="sqlite", push_delay=0.0)
    for i in range(1, k + 1):
        h = client.mutate.deposit(op=f"{prefix}:{i}", actor=name, account="kill", amount=1)
        await h
        print(f"{prefix}:{i}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    url, name, prefix, k = sys.argv[1:]
    asyncio.run(main(url, name, prefix, int(k)))
