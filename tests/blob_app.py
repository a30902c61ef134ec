"""A schema with blob columns, for the blob tests of the server, the client and the CLI
(``plasma-nb serve tests/blob_app.py``)."""

from __future__ import annotations

from plasma_nb import MutationError, Mutators, Schema, col, table

photos = table(
    "photos",
    id=col.id(),
    title=col.text(),
    photo=col.blob(nullable=True),
    thumb=col.blob(nullable=True),
)
schema = Schema([photos], version="1")
mutators = Mutators(schema)


@mutators.register
async def add_photo(tx, *, id: str, title: str, photo: str | None = None,
                    thumb: str | None = None):
    if not title.strip():
        raise MutationError("title must not be empty")
    await tx.insert(photos).values(id=id, title=title, photo=photo, thumb=thumb)


@mutators.register
async def set_photo(tx, *, id: str, photo: str | None):
    await tx.update(photos).set(photo=photo).where(photos.id == id)


@mutators.register
async def retitle(tx, *, id: str, title: str):
    await tx.update(photos).set(title=title).where(photos.id == id)


@mutators.register
async def add_photo_anyway(tx, *, id: str, photo: str):
    """Catches every error and writes a row without the photo: the server still stops the
    push when the photo is missing (a mutator cannot swallow that)."""
    try:
        await tx.insert(photos).values(id=id, title="with photo", photo=photo)
    except Exception:
        await tx.insert(photos).values(id=id, title="without photo")
