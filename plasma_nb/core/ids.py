"""Time-ordered unique ids for rows, client groups and clients."""

from __future__ import annotations

import os
import threading
import time

__all__ = ["new_id"]

_lock = threading.Lock()
_last_ms = 0
_last_rand = 0


def new_id() -> str:
    """Return a new UUIDv7-style id: 48 bits of milliseconds, then 74 random bits.

    Ids sort by creation time as text. Within one millisecond the random part is
    incremented, so ids made by one process also sort in the order they were made.
    """
    global _last_ms, _last_rand
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            # Same millisecond, or the clock went back: keep the order we promised.
            ms = _last_ms
            rand = _last_rand + 1
            if rand >= 1 << 74:
                ms += 1
                rand = int.from_bytes(os.urandom(10), "big") >> 7
        else:
            # Leave headroom so the increments above rarely overflow.
            rand = int.from_bytes(os.urandom(10), "big") >> 7
        _last_ms, _last_rand = ms, rand
    rand_a = rand >> 62  # 12 bits
    rand_b = rand & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
