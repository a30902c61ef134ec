"""How much the reliability tests do, and the seeds that make a failure replayable.

- ``PLASMA_RELIABILITY``: ``short`` (the default, part of the test command) or ``long``
  (the counts docs/reliability.md reports);
- ``PLASMA_RELIABILITY_SCALE``: a factor on every count of the chosen mode (``0.1`` for a
  quick look at the long version, ``4`` for a soak);
- ``PLASMA_RELIABILITY_SEED``: the seed of the first run; each test prints the seed it
  used, and a failing run adds ``replay: PLASMA_RELIABILITY_SEED=...`` to its error.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

__all__ = ["LONG", "base_seed", "replayable", "scaled"]

_MODE = os.environ.get("PLASMA_RELIABILITY", "short") or "short"
if _MODE not in ("short", "long"):
    raise RuntimeError(f"PLASMA_RELIABILITY must be 'short' or 'long', got {_MODE!r}")
LONG = _MODE == "long"


def _scale() -> float:
    raw = os.environ.get("PLASMA_RELIABILITY_SCALE", "1") or "1"
    try:
        scale = float(raw)
    except ValueError:
        scale = -1.0
    if not scale > 0:
        raise RuntimeError(f"PLASMA_RELIABILITY_SCALE must be a positive number, got {raw!r}")
    return scale


_SCALE = _scale()


def scaled(short: int, long: int) -> int:
    """The count for this mode, times ``PLASMA_RELIABILITY_SCALE``, at least 1."""
    return max(1, round((long if LONG else short) * _SCALE))


def base_seed(label: str) -> int:
    """``PLASMA_RELIABILITY_SEED``, or a fresh one; printed either way."""
    raw = os.environ.get("PLASMA_RELIABILITY_SEED")
    if raw:
        try:
            seed = int(raw)
        except ValueError:
            raise RuntimeError(f"PLASMA_RELIABILITY_SEED must be an integer, got {raw!r}") from None
    else:
        seed = random.SystemRandom().randrange(2**32)
    print(f"{label}: {_MODE} version, seed {seed} (replay: PLASMA_RELIABILITY_SEED={seed})")
    return seed


@contextlib.contextmanager
def replayable(seed: int, what: str = "run") -> Iterator[None]:
    """Add the replay line to whatever fails inside."""
    try:
        yield
    except BaseException as exc:
        exc.add_note(f"{what} with seed {seed}; replay: PLASMA_RELIABILITY_SEED={seed}")
        raise
