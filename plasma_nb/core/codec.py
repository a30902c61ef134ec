"""JSON on the wire: strict decoding of request bodies and compact encoding.

``loads_strict`` rejects NaN and infinities, nesting deeper than ``max_depth`` and invalid
UTF-8, and raises nothing but ``ProtocolError`` (field ``body``), whatever the input.
Standard library only, no I/O.
"""

from __future__ import annotations

import json
import math
import reprlib
from typing import NoReturn

from .errors import ProtocolError

__all__ = ["dumps", "loads_strict", "show"]

SHOW_MAX = 80
_REPR = reprlib.Repr()
_REPR.maxstring = 60
_REPR.maxother = 60
_REPR.maxlong = 40
_REPR.maxlist = _REPR.maxtuple = 6
_REPR.maxdict = 4
_REPR.maxlevel = 2


def show(value: object) -> str:
    """The value's repr for an error message, cut to about 80 characters."""
    try:
        text = _REPR.repr(value)
    except ValueError:  # an int with more digits than sys.get_int_max_str_digits() allows
        text = f"<{type(value).__name__} too large to show>"
    return text if len(text) <= SHOW_MAX else text[: SHOW_MAX - 3] + "..."



# --- bytes ----------------------------------------------------------------------------------


def _reject_constant(name: str) -> NoReturn:
    raise ProtocolError("body", f"{name} is not valid JSON: numbers must be finite")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):  # 1e400 overflows to inf
        raise ProtocolError("body", f"{show(text)} is too large: numbers must be finite")
    return number


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_ASCII_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)

# Every byte but brackets and quotes, to delete; then curly brackets become square ones.
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')
_SQUARE = bytes.maketrans(b"{}", b"[]")


def _too_deep(raw: bytes, max_depth: int) -> bool:
    """Whether the JSON text ``raw`` nests arrays and objects deeper than ``max_depth``.

    Without recursion and in a few C-speed passes, since this runs on every request. When the
    text is not valid JSON the answer may be either, but False then promises that the
    decoder recurses at most about ``2 * max_depth`` levels before it finds the error.
    """
    if len(raw) <= max_depth:
        return False
    # Drop what is inside strings. Escaped backslashes and quotes go first (left to right,
    # as the decoder pairs them); every quote left then opens or closes a string.
    if b"\\" in raw:
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    shape = raw.translate(_SQUARE, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in shape:  # some strings hold brackets: keep only what lies between strings
        shape = b"".join(shape.split(b'"')[::2])
    # Each pass removes the innermost level, so a balanced text is empty after `depth` passes.
    for _ in range(max_depth):
        reduced = shape.replace(b"[]", b"")
        if len(reduced) == len(shape):
            break
        shape = reduced
    if not shape:
        return False
    if b"[]" in shape:  # still a balanced part after max_depth passes
        return True
    # Unbalanced, so invalid: "]]][[[" is left, and the openers at its end are nested.
    return shape.count(b"[") > max_depth


def loads_strict(data: bytes | str, *, max_depth: int = 64) -> object:
    """Decode a JSON body, raising ``ProtocolError`` (field ``body``) and nothing else.

    Rejects invalid UTF-8 and invalid JSON (naming the position), ``NaN``, ``Infinity``,
    ``-Infinity`` and numbers too large for a float, and arrays or objects nested deeper
    than ``max_depth``.
    """
    if isinstance(data, str):
        text = data
        raw = data.encode("utf-8", "surrogatepass")
    else:
        raw = bytes(data)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(
                "body", f"invalid UTF-8 at byte {exc.start}: {exc.reason}"
            ) from None
    if _too_deep(raw, max_depth):
        raise ProtocolError("body", f"nesting too deep: more than {max_depth} levels")
    try:
        return _DECODER.decode(text)
    except ProtocolError:
        raise
    except json.JSONDecodeError as exc:
        raise ProtocolError(
            "body",
            f"invalid JSON at line {exc.lineno} column {exc.colno} (char {exc.pos}): {exc.msg}",
        ) from None
    except ValueError as exc:  # an integer longer than sys.get_int_max_str_digits()
        raise ProtocolError("body", f"invalid JSON: {exc}") from None
    except RecursionError:  # only with a max_depth above the interpreter's recursion limit
        raise ProtocolError("body", "nesting too deep for this interpreter") from None


def dumps(obj: object) -> bytes:
    """Compact UTF-8 JSON, as sent on the wire. NaN and infinities raise ``ProtocolError``."""
    try:
        text = _ENCODER.encode(obj)
    except ValueError as exc:
        raise ProtocolError("body", f"cannot encode as JSON: {exc}") from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate ("\ud800" is valid JSON and decodes to one) has no UTF-8 form:
        # escape everything beyond ASCII instead, which is the same JSON.
        return _ASCII_ENCODER.encode(obj).encode("ascii")
