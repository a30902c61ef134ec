"""The blob routes: ``PUT``, ``GET`` and ``HEAD /sync/blob/<sha256 hex>`` (DESIGN section 5).

- The path must be 64 lowercase hex characters; anything else (another length,
  upper case, ``..``, an encoded slash) is refused with 400 before the store or
  the database is touched.
- ``PUT`` streams the body into the blob store while hashing it (blob_store.py):
  a wrong hash is 400, a body past ``Limits.max_blob_bytes`` 413, and in both
  cases, as after a dropped connection, nothing is stored. Success is 201 with
  ``{"hash", "size"}``, or 200 when the server already had the blob. The blob is
  then recorded in the database's known blobs (``_plasma_blobs``), which pushes
  check (push.py): a mutation may store a hash only once the blob is here.
- ``GET`` and ``HEAD`` answer the bytes with a strong ``ETag`` (the hash), one
  ``Range`` (206, or 416 when it lies outside the blob), ``If-None-Match`` (304) and
  an immutable cache header: a blob never changes under its hash (``private``
  when the server has auth, so that shared caches never serve it without a token).

With auth, any authenticated user may fetch any blob whose hash they know: the
hash is the capability (docs/blobs.md).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse

from ..core.errors import BadRequest, PayloadTooLarge, ServerError
from ..core.protocol import dumps
from .blob_store import BlobStore, is_hash
from .storage.base import Storage

__all__ = [
    "CACHE_CONTROL",
    "PRIVATE_CACHE_CONTROL",
    "BlobNotFound",
    "BlobRoutes",
    "parse_range",
]

CACHE_CONTROL = "public, max-age=31536000, immutable"
# With auth, a shared cache (a CDN) must not hand a blob to callers without a token:
# the browser's own cache may still keep it for good.
PRIVATE_CACHE_CONTROL = "private, max-age=31536000, immutable"


class BlobNotFound(ServerError):
    status = 404
    error = "NotFound"


def _json(body: dict[str, Any], status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(body), status, headers, media_type="application/json")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``[start, end)`` of a single ``bytes=`` range within ``size`` bytes; None to send
    the whole blob (no header, or one this server ignores: another unit, several ranges,
    bad syntax). Raises ``ValueError`` when the range is valid but lies outside the blob
    (416)."""
    if header is None:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    if not dash or not (first.isdigit() or first == "") or not (last.isdigit() or last == ""):
        return None
    if first == "":
        if last == "":
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise ValueError("an empty suffix range")
        return max(0, size - suffix), size
    start = int(first)
    if last != "" and int(last) < start:
        return None  # invalid: ignored, as RFC 9110 allows
    if start >= size:
        raise ValueError(f"the range starts at {start}, past the blob's {size} bytes")
    end = size if last == "" else min(size, int(last) + 1)
    return start, end


class BlobRoutes:
    """The handler behind ``/sync/blob/{hash}`` for one blob store and database."""

    def __init__(self, store: BlobStore, storage: Storage, *, max_bytes: int,
                 ready: Callable[[], Awaitable[None]], private: bool = False) -> None:
        self.store = store
        self.cache_control = PRIVATE_CACHE_CONTROL if private else CACHE_CONTROL
        self.storage = storage
        self.max_bytes = max_bytes
        self._ready = ready  # opens the database (for the known-blobs table)

    async def handle(self, request: Request) -> Response:
        hash = request.path_params.get("hash", "")
        if not is_hash(hash):
            raise BadRequest(
                f"path: a blob is named by its sha256, 64 lowercase hex characters; got "
                f"{hash[:80]!r}"
            )
        if request.method == "PUT":
            return await self.put(request, hash)
        return await self.get(request, hash, head=request.method == "HEAD")

    async def put(self, request: Request, hash: str) -> Response:
        length = request.headers.get("content-length")
        if length is not None:
            if not length.strip().isdigit():
                raise BadRequest(f"content-length: expected a number of bytes, got {length!r}")
            if int(length) > self.max_bytes:
                raise PayloadTooLarge(
                    f"the blob is {int(length)} bytes; the limit is {self.max_bytes}"
                )
        await self._ready()
        existed = await self.store.head(hash) is not None
        try:
            size = await self.store.write(hash, request.stream(), max_bytes=self.max_bytes)
        except ClientDisconnect:
            # The client is gone and nothing was stored; this answer reaches nobody.
            return Response(status_code=400)
        await self.storage.record_blob(hash, size)
        return _json({"hash": hash, "size": size}, 200 if existed else 201)

    async def get(self, request: Request, hash: str, *, head: bool) -> Response:
        etag = f'"{hash}"'
        headers = {
            "etag": etag,
            "cache-control": self.cache_control,
            "accept-ranges": "bytes",
        }
        wanted = request.headers.get("range")
        if_range = request.headers.get("if-range")
        if if_range is not None and if_range.strip() != etag:
            wanted = None  # a validator of some other content: send it all
        info = None
        if head or wanted is not None or _matches(request.headers.get("if-none-match"), etag):
            info = await self.store.head(hash)
            if info is None:
                raise BlobNotFound(f"no blob {hash} on this server")
        if info is not None and _matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        span: tuple[int, int] | None = None
        if info is not None:
            try:
                span = parse_range(wanted, info.size)
            except ValueError as exc:
                return _json(
                    {"error": "RangeNotSatisfiable", "message": f"range {wanted!r}: {exc}"},
                    416, {**headers, "content-range": f"bytes */{info.size}"},
                )
        if head:
            assert info is not None
            start, end = span or (0, info.size)
            headers["content-length"] = str(end - start)
            headers["content-type"] = "application/octet-stream"
            if span is not None:
                headers["content-range"] = f"bytes {start}-{end - 1}/{info.size}"
            return Response(status_code=206 if span else 200, headers=headers)
        read = await self.store.read(hash, *(span or (0, None)))
        if read is None:
            raise BlobNotFound(f"no blob {hash} on this server")
        headers["content-length"] = str(read.end - read.start)
        if span is not None:
            headers["content-range"] = f"bytes {read.start}-{read.end - 1}/{read.size}"
        return StreamingResponse(read.chunks, 206 if span else 200, headers,
                                 media_type="application/octet-stream")


def _matches(header: str | None, etag: str) -> bool:
    if header is None:
        return False
    tags = [t.strip() for t in header.split(",")]
    return "*" in tags or etag in tags or f"W/{etag}" in tags
