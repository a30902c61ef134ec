"""Blob stores: content-addressed bytes on local disk or in S3-compatible storage.

Both go through obstore: ``file:DIR`` is its local store, ``s3://BUCKET[/PREFIX]
?endpoint=URL&region=R`` its S3 store (AWS, Cloudflare R2, MinIO), with credentials
from the usual AWS variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``, ``AWS_REGION``).

A blob lives under its sha256 hex at the root of the store. A write streams to a
temporary key under ``.plasma-tmp/`` while it is hashed, and is renamed to the
final key only once the hash checked out: whatever happens on the way (a wrong
hash, a body over the limit, a dropped connection, a crash), nothing partial or
wrong is ever visible under a hash. Memory stays bounded: a body is never held
whole, only obstore's upload parts (``PART_SIZE`` times a few).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import re
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ..core.errors import BadRequest, ConfigError, MissingDependency, PayloadTooLarge

if TYPE_CHECKING:
    from obstore import GetOptions
    from obstore.store import ObjectStore

__all__ = [
    "HASH_PATTERN",
    "TMP_PREFIX",
    "BlobInfo",
    "BlobRead",
    "BlobStore",
    "HashMismatch",
    "is_hash",
    "open_blob_store",
]

HASH_PATTERN = re.compile(r"[0-9a-f]{64}\Z")
#: Where writes wait until their hash is checked (gc removes stale ones).
TMP_PREFIX = ".plasma-tmp"
#: Bodies up to this size are stored with one plain PUT; larger ones in parts.
SMALL_BODY = 1024 * 1024
#: The size of an upload part (S3 wants at least 5 MiB for all parts but the last).
PART_SIZE = 8 * 1024 * 1024
#: Parts in flight at once: with PART_SIZE, what bounds a write's memory.
PART_CONCURRENCY = 2
#: Reads are streamed in chunks of about this size.
READ_CHUNK = 1024 * 1024


def is_hash(value: str) -> bool:
    """True for 64 lowercase hex characters (a sha256 hex digest), nothing else."""
    return bool(HASH_PATTERN.match(value))


class HashMismatch(BadRequest):
    """The bytes uploaded under a hash do not hash to it."""

    error = "HashMismatch"

    def __init__(self, expected: str, actual: str, size: int) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"the body's sha256 is {actual} ({size} bytes), not {expected}: nothing was stored"
        )


@dataclass(frozen=True)
class BlobInfo:
    """One object in the store: a blob (``key`` is its hash) or a temporary write."""

    key: str
    size: int
    modified: _dt.datetime

    @property
    def is_blob(self) -> bool:
        return is_hash(self.key)


@dataclass
class BlobRead:
    """An open read of ``[start, end)`` of a blob of ``size`` bytes."""

    size: int
    start: int
    end: int
    modified: _dt.datetime
    chunks: AsyncIterator[bytes]


class BlobStore:
    """Content-addressed blobs in one obstore store (see the module docstring)."""

    def __init__(self, url: str, factory: Callable[[bool], ObjectStore | None], *,
                 kind: str, location: str) -> None:
        self.url = url
        self.kind = kind  # "file" or "s3"
        self.location = location  # the directory, or the bucket and prefix, for messages
        self._factory = factory
        self._store: ObjectStore | None = None

    def _get_store(self, *, create: bool) -> ObjectStore | None:
        # Built on first use: a default local store creates no directory until a blob
        # is written, and a server without blob traffic never touches the store.
        if self._store is None:
            self._store = self._factory(create)
        return self._store

    def __repr__(self) -> str:
        return f"<BlobStore {self.kind} {self.location}>"

    # -- reads -----------------------------------------------------------------------

    async def head(self, hash: str) -> BlobInfo | None:
        """The blob's size and time, or None if the store does not have it."""
        import obstore

        _checked(hash)
        store = self._get_store(create=False)
        if store is None:
            return None
        try:
            meta = await obstore.head_async(store, hash)
        except FileNotFoundError:
            return None
        return BlobInfo(meta["path"], meta["size"], meta["last_modified"])

    async def read(self, hash: str, start: int = 0, end: int | None = None) -> BlobRead | None:
        """Stream bytes ``[start, end)`` of a blob (``end`` None: to its end); None if the
        store does not have it. The range must lie within the blob (the caller checks it
        against ``head``)."""
        import obstore

        _checked(hash)
        store = self._get_store(create=False)
        if store is None:
            return None
        options: GetOptions | None = None
        if start or end is not None:
            options = {"range": (start, end) if end is not None else {"offset": start}}
        try:
            result = await obstore.get_async(store, hash, options=options)
        except FileNotFoundError:
            return None
        meta = result.meta
        first, last = result.range
        return BlobRead(meta["size"], first, last, meta["last_modified"],
                        _chunks(result.stream(min_chunk_size=READ_CHUNK)))

    async def list(self) -> list[BlobInfo]:
        """Every object in the store: blobs and temporary writes."""
        import obstore

        store = self._get_store(create=False)
        if store is None:
            return []
        found: list[BlobInfo] = []
        stream = obstore.list(store)
        try:
            async for batch in stream:
                found.extend(BlobInfo(m["path"], m["size"], m["last_modified"]) for m in batch)
        finally:
            # Drop the stream here: one left for interpreter shutdown aborts the process.
            del stream
        return found

    # -- writes ----------------------------------------------------------------------

    async def write(self, hash: str, body: AsyncIterable[bytes], *, max_bytes: int) -> int:
        """Store ``body`` under ``hash`` if it hashes to it; return its size.

        Raises ``HashMismatch`` or ``PayloadTooLarge`` (past ``max_bytes``), and lets the
        body's own errors (a dropped connection) through; in every such case nothing is
        left behind. Writing a blob the store already has replaces it with the same bytes.
        """
        import obstore

        _checked(hash)
        store = self._get_store(create=True)
        assert store is not None
        reader = _HashingReader(body, max_bytes)
        tmp = f"{TMP_PREFIX}/{uuid.uuid4().hex}"
        try:
            head = await reader.read_up_to(SMALL_BODY)
            if reader.finished:
                await obstore.put_async(store, tmp, head, use_multipart=False)
            else:
                await obstore.put_async(store, tmp, reader.rest(head), chunk_size=PART_SIZE,
                                        max_concurrency=PART_CONCURRENCY)
            actual = reader.hexdigest()
            if actual != hash:
                raise HashMismatch(hash, actual, reader.size)
            await obstore.rename_async(store, tmp, hash, overwrite=True)
        except BaseException:
            # obstore aborts an unfinished multipart upload itself; a finished temporary
            # object (wrong hash, failed rename) is ours to remove.
            await self._discard(tmp)
            raise
        return reader.size

    async def delete(self, key: str) -> None:
        """Delete a blob or a temporary object; a missing one is no error."""
        import obstore

        if not (is_hash(key) or key.startswith(TMP_PREFIX + "/")):
            raise ValueError(f"not a blob or temporary key: {key!r}")
        store = self._get_store(create=False)
        if store is None:
            return
        try:
            await obstore.delete_async(store, key)
        except FileNotFoundError:
            pass

    async def _discard(self, key: str) -> None:
        try:
            await self.delete(key)
        except Exception:  # the original failure matters more; gc removes leftovers
            pass


def _checked(hash: str) -> str:
    if not isinstance(hash, str) or not is_hash(hash):
        raise BadRequest(f"a blob is named by its sha256: 64 lowercase hex characters, "
                         f"got {hash!r}")
    return hash


async def _chunks(stream: Any) -> AsyncIterator[bytes]:
    try:
        async for chunk in stream:
            yield bytes(chunk)
    finally:
        del stream


class _HashingReader:
    """Reads a body once, hashing and counting it, and refusing it past ``max_bytes``."""

    def __init__(self, body: AsyncIterable[bytes], max_bytes: int) -> None:
        self._body = body.__aiter__()
        self._max = max_bytes
        self._digest = hashlib.sha256()
        self.size = 0
        self.finished = False

    async def _next(self) -> bytes | None:
        try:
            chunk = await self._body.__anext__()
        except StopAsyncIteration:
            self.finished = True
            return None
        self.size += len(chunk)
        if self.size > self._max:
            raise PayloadTooLarge(f"the blob is over the limit of {self._max} bytes")
        self._digest.update(chunk)
        return chunk

    async def read_up_to(self, limit: int) -> bytes:
        """At least ``limit`` bytes, or all of a shorter body."""
        parts: list[bytes] = []
        got = 0
        while got < limit:
            chunk = await self._next()
            if chunk is None:
                break
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    async def rest(self, head: bytes) -> AsyncIterator[bytes]:
        if head:
            yield head
        while (chunk := await self._next()) is not None:
            if chunk:
                yield chunk

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


# -- URLs ---------------------------------------------------------------------------------


def open_blob_store(url: str) -> BlobStore:
    """The store a ``blobs=`` URL names: ``file:DIR`` or ``s3://BUCKET[/PREFIX]?endpoint=
    URL&region=R``. Nothing is created or contacted until the store is first used."""
    if not isinstance(url, str):
        raise ConfigError(f"blobs must be a URL string, got {url!r}")
    if url.startswith("file:"):
        return _local(url)
    if url.startswith("s3://"):
        return _s3(url)
    raise ConfigError(
        f"unsupported blob store URL {url!r}: expected file:DIR or "
        "s3://BUCKET?endpoint=URL&region=R"
    )


def _obstore_store() -> Any:
    try:
        from obstore import store
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise MissingDependency(
            "obstore", "blob storage", "it comes with the server extra: "
            "pip install 'plasma-nb[server]'"
        ) from exc
    return store


def _local(url: str) -> BlobStore:
    rest = url[len("file:"):]
    if rest.startswith("//"):
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"blob store URL {url!r} names a host; use file:DIR or "
                              "file:///absolute/dir")
        rest = unquote(parts.path)
    if not rest:
        raise ConfigError(f"blob store URL {url!r} has no directory: use file:DIR")
    # Resolved now: relative to the working directory the server started in.
    root = Path(rest).expanduser().resolve()
    store_module = _obstore_store()

    def factory(create: bool) -> ObjectStore | None:
        if not root.is_dir():
            if not create:
                return None
            root.mkdir(parents=True, exist_ok=True)
        return store_module.LocalStore(root)  # type: ignore[no-any-return]

    return BlobStore(url, factory, kind="file", location=str(root))


_S3_OPTIONS = ("endpoint", "region")


def _s3(url: str) -> BlobStore:
    parts = urlsplit(url)
    bucket = parts.netloc
    if not bucket:
        raise ConfigError(f"blob store URL {url!r} has no bucket: use s3://BUCKET?...")
    options: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in _S3_OPTIONS:
            raise ConfigError(
                f"blob store URL {url!r}: unknown option {key!r} (known: "
                f"{', '.join(_S3_OPTIONS)}; credentials come from the AWS variables)"
            )
        if key in options:
            raise ConfigError(f"blob store URL {url!r} gives {key!r} twice")
        options[key] = value
    endpoint = options.get("endpoint")
    if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
        raise ConfigError(f"blob store URL {url!r}: endpoint must be an http(s) URL, "
                          f"got {endpoint!r}")
    prefix = parts.path.strip("/") or None
    store_module = _obstore_store()
    config: dict[str, Any] = {k: v for k, v in options.items()}
    client_options = {"allow_http": True} if endpoint and endpoint.startswith("http:") else None

    def factory(create: bool) -> ObjectStore | None:
        return store_module.S3Store(  # type: ignore[no-any-return]
            bucket, prefix=prefix, client_options=client_options, **config
        )

    where = f"s3://{bucket}" + (f"/{prefix}" if prefix else "")
    if endpoint:
        where += f" at {endpoint}"
    return BlobStore(url, factory, kind="s3", location=where)
