"""The SQLite backend's SQL: internal tables, change-log triggers, read-rule prior images.

Plain SQL only, so that writes from the ``sqlite3`` shell reach clients too.
"""

from __future__ import annotations

import sqlite3

from ...core.dialect import SQLiteDialect, quote
from ...core.schema import Table
from ..rules import ABSENT, PK, VERSION, prior_table

__all__ = [
    "INTERNAL_COLUMNS",
    "INTERNAL_DDL",
    "internal_ddl",
    "prior_ddl",
    "run_script",
    "trigger_ddl",
    "trigger_names",
]

INTERNAL_DDL = """
CREATE TABLE IF NOT EXISTS _plasma_meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL,
    pushing INTEGER NOT NULL DEFAULT 0,
    min_version INTEGER NOT NULL,
    schema_version TEXT
);
CREATE TABLE IF NOT EXISTS _plasma_client_groups (
    id TEXT PRIMARY KEY,
    owner TEXT,
    created_version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS _plasma_clients (
    id TEXT PRIMARY KEY,
    client_group_id TEXT NOT NULL,
    last_mutation_id INTEGER NOT NULL,
    version INTEGER NOT NULL
);
-- Not on version: a push updates it, and a group has few clients to filter.
CREATE INDEX IF NOT EXISTS _plasma_clients_group ON _plasma_clients (client_group_id);
CREATE TABLE IF NOT EXISTS _plasma_changes (
    tbl TEXT NOT NULL,
    pk TEXT NOT NULL,
    version INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    PRIMARY KEY (tbl, pk)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS _plasma_changes_version ON _plasma_changes (tbl, version);
CREATE TABLE IF NOT EXISTS _plasma_mutation_errors (
    client_id TEXT NOT NULL,
    mutation_id INTEGER NOT NULL,
    client_group_id TEXT NOT NULL,
    name TEXT NOT NULL,
    message TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (client_id, mutation_id)
);
CREATE INDEX IF NOT EXISTS _plasma_mutation_errors_group
    ON _plasma_mutation_errors (client_group_id, version);
-- The blobs the blob store holds (blobs.py); created in milliseconds since the epoch.
CREATE TABLE IF NOT EXISTS _plasma_blobs (
    hash TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    created INTEGER NOT NULL
) WITHOUT ROWID;
-- The version at given times: compaction turns its horizon (a duration) into a version.
CREATE TABLE IF NOT EXISTS _plasma_checkpoints (
    at_ms INTEGER PRIMARY KEY,
    version INTEGER NOT NULL
);
"""

# Columns added to internal tables after their first release: (table, column, definition).
INTERNAL_COLUMNS = (
    ("_plasma_client_groups", "view", "TEXT"),
    ("_plasma_client_groups", "view_version", "INTEGER NOT NULL DEFAULT 0"),
)


def internal_ddl() -> str:
    """The ``_plasma_`` tables (without their first row)."""
    return INTERNAL_DDL


def prior_ddl(table: Table, dialect: SQLiteDialect) -> str:
    """The prior-image table of a table with a read rule (server/rules.py)."""
    cols = "".join(f"    {quote(c.name)} {dialect.sql_type(c)},\n" for c in table)
    prior = quote(prior_table(table))
    return (
        f"CREATE TABLE IF NOT EXISTS {prior} (\n"
        f"    {PK} TEXT NOT NULL,\n    {VERSION} INTEGER NOT NULL,\n"
        f"    {ABSENT} INTEGER NOT NULL,\n{cols}"
        f"    PRIMARY KEY ({PK}, {VERSION})\n) WITHOUT ROWID;\n"
        f'CREATE INDEX IF NOT EXISTS "{prior_table(table)}_version" ON {prior} ({VERSION});\n'
    )


def _prior_sql(table: Table, ref: str, *, absent: bool, when: str = "") -> str:
    """Record ``ref``'s row before this version's first write to it, or its absence."""
    prior = quote(prior_table(table))
    pk = f"CAST({ref}.{quote(table._pk.name)} AS TEXT)"
    version = "(SELECT version FROM _plasma_meta)"
    # A WHERE clause, always: it keeps SQLite's parser from reading ON CONFLICT as a join.
    where = f" WHERE {when or 1}"
    if absent:
        return (f"INSERT INTO {prior} ({PK}, {VERSION}, {ABSENT}) "
                f"SELECT {pk}, {version}, 1{where} ON CONFLICT DO NOTHING;")
    names = ", ".join(quote(c.name) for c in table)
    values = ", ".join(f"{ref}.{quote(c.name)}" for c in table)
    return (f"INSERT INTO {prior} ({PK}, {VERSION}, {ABSENT}, {names}) "
            f"SELECT {pk}, {version}, 0, {values}{where} ON CONFLICT DO NOTHING;")


def trigger_names(table: Table) -> list[str]:
    return [f"_plasma_{table._name}_{op}" for op in ("insert", "update", "delete")]


def trigger_ddl(table: Table, *, prior: bool = False) -> str:
    """The change-log triggers of one table, in plain SQL.

    Inside a push, the push has already advanced the version and set
    ``pushing``; outside one (operator SQL), each row's write advances it.
    With ``prior`` (the table has a read rule), each write also records the
    row's image before it (server/rules.py).
    """
    name = table._name
    pk = quote(table._pk.name)
    log = (
        "INSERT INTO _plasma_changes (tbl, pk, version, deleted) "
        "VALUES ('{t}', CAST({ref}.{pk} AS TEXT), (SELECT version FROM _plasma_meta), {d}) "
        "ON CONFLICT (tbl, pk) DO UPDATE SET version = excluded.version, "
        "deleted = excluded.deleted;"
    )
    bump = "UPDATE _plasma_meta SET version = version + 1 WHERE pushing = 0;"
    ins = log.format(t=name, ref="NEW", pk=pk, d=0)
    dele = log.format(t=name, ref="OLD", pk=pk, d=1)
    qn = quote(name)
    prior_ins = prior_upd = prior_del = ""
    if prior:
        prior_ins = _prior_sql(table, "NEW", absent=True)
        prior_del = _prior_sql(table, "OLD", absent=False)
        # A changed key (operator SQL only): the old key's image, and the new key's absence.
        prior_upd = prior_del + "\n    " + _prior_sql(
            table, "NEW", absent=True, when=f"OLD.{pk} IS NOT NEW.{pk}"
        )
    return f"""
CREATE TRIGGER IF NOT EXISTS "_plasma_{name}_insert" AFTER INSERT ON {qn} BEGIN
    {bump}
    {ins}
    {prior_ins}
END;
CREATE TRIGGER IF NOT EXISTS "_plasma_{name}_update" AFTER UPDATE ON {qn} BEGIN
    {bump}
    INSERT INTO _plasma_changes (tbl, pk, version, deleted)
        SELECT '{name}', CAST(OLD.{pk} AS TEXT), (SELECT version FROM _plasma_meta), 1
        WHERE OLD.{pk} IS NOT NEW.{pk}
        ON CONFLICT (tbl, pk) DO UPDATE SET version = excluded.version, deleted = 1;
    {ins}
    {prior_upd}
END;
CREATE TRIGGER IF NOT EXISTS "_plasma_{name}_delete" AFTER DELETE ON {qn} BEGIN
    {bump}
    {dele}
    {prior_del}
END;
"""


def run_script(conn: sqlite3.Connection, script: str) -> None:
    """Run statements one by one: ``executescript`` would commit our transaction."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            conn.execute(pending)
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete SQL statement: {pending!r}")


