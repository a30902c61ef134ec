"""The example app: a shared todo list.

One file, imported by both engines: the notebook kernel (client) and
``plasma-nb serve notebooks/todos.py`` (server).
"""

from plasma_nb import MutationError, Mutators, Schema, col, table

todos = table(
    "todos",
    id=col.id(),  # clients make ids with plasma_nb.new_id()
    title=col.text(),
    done=col.boolean(default=False),
    owner=col.text(nullable=True),
    photo=col.blob(nullable=True),  # the sha256 hex of a blob
)
schema = Schema([todos], version="1")
mutators = Mutators(schema)


@mutators.register
async def add_todo(tx, *, id: str, title: str):
    if not title.strip():
        raise MutationError("title must not be empty")
    await tx.insert(todos).values(id=id, title=title, owner=tx.ctx.user)


@mutators.register
async def mark_done(tx, *, id: str):
    await tx.update(todos).set(done=True).where(todos.id == id)


@mutators.register
async def rename(tx, *, id: str, title: str):
    if not title.strip():
        raise MutationError("title must not be empty")
    if await tx.get(todos, id) is None:
        raise MutationError(f"no todo with id {id!r}")
    await tx.update(todos).set(title=title).where(todos.id == id)


@mutators.register
async def delete_todo(tx, *, id: str):
    await tx.delete(todos).where(todos.id == id)
