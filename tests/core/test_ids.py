"""``new_id()``: time-ordered UUIDv7-style text ids."""

from __future__ import annotations

import re
import threading
import time
import uuid
from types import SimpleNamespace

from plasma_nb import new_id
from plasma_nb.core import ids

UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\Z")


def test_shape():
    value = new_id()
    assert isinstance(value, str)
    assert len(value) == 36
    assert UUID_TEXT.match(value), value


def test_uuid_version_and_variant_bits():
    for _ in range(100):
        parsed = uuid.UUID(new_id())
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == parsed.urn.removeprefix("urn:uuid:")


def test_the_first_48_bits_are_the_time_in_milliseconds():
    before = time.time_ns() // 1_000_000
    value = new_id()
    after = time.time_ns() // 1_000_000
    ms = uuid.UUID(value).int >> 80
    # The counter may run ahead of the clock by a little after a burst, never behind.
    assert before <= ms <= after + 1000


def test_strictly_increasing_and_unique_in_one_process():
    made = [new_id() for _ in range(10_000)]
    assert all(a < b for a, b in zip(made, made[1:], strict=False))
    assert len(set(made)) == len(made)
    # Text order is numeric order.
    assert [uuid.UUID(v).int for v in made] == sorted(uuid.UUID(v).int for v in made)


def test_unique_across_threads():
    results: list[list[str]] = [[] for _ in range(4)]

    def work(out: list[str]) -> None:
        out.extend(new_id() for _ in range(2000))

    threads = [threading.Thread(target=work, args=(out,)) for out in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [v for out in results for v in out]
    assert len(set(everything)) == len(everything) == 8000
    for out in results:
        assert out == sorted(out)


def test_order_survives_a_clock_that_goes_back(monkeypatch):
    first = new_id()
    monkeypatch.setattr(ids, "time", SimpleNamespace(time_ns=lambda: 0))
    made = [first, *(new_id() for _ in range(50))]
    later = made[1:]
    assert all(a < b for a, b in zip(made, later, strict=False))
    assert {uuid.UUID(v).version for v in later} == {7}


def test_the_random_part_overflowing_moves_to_the_next_millisecond(monkeypatch):
    new_id()
    last_ms = ids._last_ms
    monkeypatch.setattr(ids, "_last_rand", (1 << 74) - 1)
    monkeypatch.setattr(ids, "time", SimpleNamespace(time_ns=lambda: last_ms * 1_000_000))
    value = new_id()
    assert uuid.UUID(value).int >> 80 == last_ms + 1
    assert uuid.UUID(value).version == 7
