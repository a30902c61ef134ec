"""The SQL text of the Postgres backend: DDL, change-log triggers, URL options, literals.

Everything here is plain SQL and plpgsql, so that ``psql`` sessions (operators)
write the change log exactly as the server does. Names of the internal objects
are qualified with the backend's schema (Postgres namespace): a trigger fires
in whatever session writes the row, whatever that session's ``search_path``.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ...core.dialect import PostgresDialect, quote
from ...core.errors import ConfigError
from ...core.schema import MISSING, Column, ColumnType, Table
from ..rules import ABSENT, PK, VERSION, prior_table

__all__ = [
    "poke_channel",
    "begin_push_sql",
    "push_state_sql",
    "prior_ddl",
    "column_def",
    "internal_ddl",
    "literal",
    "load_state_sql",
    "split_url",
    "trigger_ddl",
    "version_setting",
]

DEFAULT_SCHEMA = "public"
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}\Z")


def split_url(url: str) -> tuple[str, str]:
    """``postgresql://...?schema=NAME`` -> (the URL for asyncpg, NAME).

    ``schema`` selects the Postgres namespace holding the tables (default
    ``public``; created if missing). Other query parameters go to asyncpg, which
    passes unknown ones on as server settings (``application_name=...``).
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for key, value in query if key == "schema"]
    if len(schemas) > 1:
        raise ConfigError(f"database URL {url!r} names more than one schema")
    schema = schemas[0] if schemas else DEFAULT_SCHEMA
    if not _SCHEMA_NAME.match(schema):
        raise ConfigError(
            f"schema {schema!r} in the database URL must be an identifier: a letter or "
            "underscore, then letters, digits or underscores (at most 63)"
        )
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema


def literal(value: str | int | None) -> str:
    """An SQL literal, for the few statements sent as one simple-query script.

    Safe because every session runs with ``standard_conforming_strings = on``
    (set at connect): backslashes are ordinary characters in '' strings.
    """
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        raise TypeError("booleans are not written as literals here")
    if isinstance(value, int):
        return str(value)
    if "\x00" in value:
        raise ValueError("Postgres text cannot hold NUL characters")
    return "'" + value.replace("'", "''") + "'"


def version_setting(schema: str) -> str:
    """The transaction-local setting that caches this transaction's version.

    ``plasma.version`` for the default schema; other schemas get their own, so one
    operator transaction writing to two plasma schemas gets a version from each.
    """
    return "plasma.version" if schema == DEFAULT_SCHEMA else f"plasma.version.{schema}"


def poke_channel(schema: str) -> str:
    """The NOTIFY channel of commits in ``schema``: ``plasma_poke`` for the default
    schema; apps in other schemas of the same database do not poke each other."""
    if schema == DEFAULT_SCHEMA:
        return "plasma_poke"
    channel = f"plasma_poke_{schema}"
    if len(channel) > 63:  # channel names are identifiers: keep long ones distinct
        channel = f"plasma_poke_{hashlib.sha1(schema.encode()).hexdigest()[:32]}"
    return channel


def _internal(schema: str) -> str:
    s = quote(schema)
    return f"""
CREATE TABLE IF NOT EXISTS {s}._plasma_meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL,
    min_version BIGINT NOT NULL,
    schema_version TEXT
);
CREATE TABLE IF NOT EXISTS {s}._plasma_client_groups (
    id TEXT COLLATE "C" PRIMARY KEY,
    owner TEXT COLLATE "C",
    created_version BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}._plasma_clients (
    id TEXT COLLATE "C" PRIMARY KEY,
    client_group_id TEXT COLLATE "C" NOT NULL,
    last_mutation_id BIGINT NOT NULL,
    version BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS _plasma_clients_group ON {s}._plasma_clients (client_group_id);
CREATE TABLE IF NOT EXISTS {s}._plasma_changes (
    tbl TEXT COLLATE "C" NOT NULL,
    pk TEXT COLLATE "C" NOT NULL,
    version BIGINT NOT NULL,
    deleted BOOLEAN NOT NULL,
    PRIMARY KEY (tbl, pk)
);
CREATE INDEX IF NOT EXISTS _plasma_changes_version ON {s}._plasma_changes (tbl, version);
CREATE TABLE IF NOT EXISTS {s}._plasma_mutation_errors (
    client_id TEXT COLLATE "C" NOT NULL,
    mutation_id BIGINT NOT NULL,
    client_group_id TEXT COLLATE "C" NOT NULL,
    name TEXT NOT NULL,
    message TEXT NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (client_id, mutation_id)
);
CREATE INDEX IF NOT EXISTS _plasma_mutation_errors_group
    ON {s}._plasma_mutation_errors (client_group_id, version);
CREATE TABLE IF NOT EXISTS {s}._plasma_checkpoints (
    at_ms BIGINT PRIMARY KEY,
    version BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}._plasma_blobs (
    hash TEXT COLLATE "C" PRIMARY KEY,
    size BIGINT NOT NULL,
    created BIGINT NOT NULL
);
"""


def internal_ddl(schema: str) -> str:
    """The ``_plasma_`` tables of ``schema`` (without the counter's row)."""
    return _internal(schema)


def _bump(schema: str) -> str:
    """One statement: advance the counter (taking its row lock until commit) and cache
    the new version for the rest of this transaction."""
    setting = literal(version_setting(schema))
    return (
        f"WITH bumped AS (UPDATE {quote(schema)}._plasma_meta SET version = version + 1 "
        f"RETURNING version) SELECT set_config({setting}, version::text, true) FROM bumped"
    )


def begin_push_sql(schema: str, lock_timeout_ms: int) -> str:
    """The first round trip of a push: BEGIN, a bounded wait for the counter's lock,
    and the push's version. Taking the lock first serializes pushes, so the state a
    push loads next is the latest committed one."""
    return (
        f"BEGIN; SET LOCAL lock_timeout = {int(lock_timeout_ms)}; {_bump(schema)}"
    )


def push_state_sql(schema: str) -> str:
    """A push's first statement, in a transaction already begun: the version bump and
    the push's state, as rows ``(kind, client id, group or owner, number)``: kind 0 the
    new version (number) and, as group, the version this statement's snapshot saw;
    kind 1 the group and its owner; kind 2 each known client, its group and last
    mutation id. ``$1`` is the group, ``$2`` the client ids.

    The statement reads in a snapshot taken before it waited for the counter's lock: its
    clients are the latest committed ones only if the new version is the one the snapshot
    saw plus one (every transaction that moves a client takes a version). Otherwise the
    caller loads the state again with ``load_state_sql``. (A group created meanwhile
    without a version makes the push's own INSERT of the group fail instead.)"""
    s = quote(schema)
    setting = literal(version_setting(schema))
    return (
        f"WITH seen AS (SELECT version FROM {s}._plasma_meta), "
        f"bumped AS (UPDATE {s}._plasma_meta SET version = version + 1 RETURNING version), "
        f"cached AS (SELECT set_config({setting}, version::text, true)::bigint AS v "
        "FROM bumped) "
        "SELECT 0, NULL::text, seen.version::text, cached.v FROM cached, seen "
        f"UNION ALL SELECT 1, NULL, owner, NULL FROM {s}._plasma_client_groups WHERE id = $1 "
        f"UNION ALL SELECT 2, id, client_group_id, last_mutation_id FROM {s}._plasma_clients "
        "WHERE id = ANY($2::text[])"
    )


def load_state_sql(schema: str) -> str:
    """The push's state again, in a fresh snapshot (the counter's lock held): rows as
    ``push_state_sql``'s, kind 0 carrying the transaction's version."""
    s = quote(schema)
    setting = literal(version_setting(schema))
    return (
        f"SELECT 0, NULL::text, NULL::text, current_setting({setting})::bigint "
        f"UNION ALL SELECT 1, NULL, owner, NULL FROM {s}._plasma_client_groups WHERE id = $1 "
        f"UNION ALL SELECT 2, id, client_group_id, last_mutation_id FROM {s}._plasma_clients "
        "WHERE id = ANY($2::text[])"
    )


def _function_name(table: Table) -> str:
    name = f"_plasma_log_{table._name}"
    if len(name) > 63:  # Postgres truncates identifiers: keep long names distinct
        digest = hashlib.sha1(table._name.encode()).hexdigest()[:16]
        name = f"_plasma_log_{table._name[:30]}_{digest}"
    return name


#: Columns added to internal tables after their first release: (table, column, definition).
#: Added only when missing: ALTER TABLE locks the table even when it changes nothing, and
#: another instance may be serving pushes while this one starts.
INTERNAL_COLUMNS = (
    ("_plasma_client_groups", "view", "TEXT"),
    ("_plasma_client_groups", "view_version", "BIGINT NOT NULL DEFAULT 0"),
)


def prior_ddl(table: Table, schema: str) -> list[str]:
    """The statements creating ``table``'s prior-image table (server/rules.py), without
    its user columns (added by the caller, as the table has them)."""
    s = quote(schema)
    prior = f"{s}.{quote(prior_table(table))}"
    return [
        f"CREATE TABLE IF NOT EXISTS {prior} ({PK} TEXT COLLATE \"C\" NOT NULL, "
        f"{VERSION} BIGINT NOT NULL, {ABSENT} BOOLEAN NOT NULL, "
        f"PRIMARY KEY ({PK}, {VERSION}))",
        f"CREATE INDEX IF NOT EXISTS {quote(prior_table(table)[:55] + '_version')} "
        f"ON {prior} ({VERSION})",
    ]


def _prior_statements(table: Table, schema: str) -> tuple[str, str, str, str]:
    """plpgsql statements recording (OLD's image, NEW's absence, a changed key's
    absence, a truncated table's images) in the prior-image table."""
    prior = f"{quote(schema)}.{quote(prior_table(table))}"
    pk = quote(table._pk.name)
    names = ", ".join(quote(c.name) for c in table)
    image = ", ".join(f"OLD.{quote(c.name)}" for c in table)
    head = f"INSERT INTO {prior} ({PK}, {VERSION}, {ABSENT}"
    old = f"{head}, {names}) VALUES (OLD.{pk}::text, v, false, {image}) ON CONFLICT DO NOTHING;"
    new = f"{head}) VALUES (NEW.{pk}::text, v, true) ON CONFLICT DO NOTHING;"
    moved = f"IF OLD.{pk} IS DISTINCT FROM NEW.{pk} THEN {new} END IF;"
    truncated = (
        f"{head}, {names}) SELECT {pk}::text, v, false, {names} "
        f"FROM {quote(schema)}.{quote(table._name)} ON CONFLICT DO NOTHING;"
    )
    return old, new, moved, truncated


def trigger_ddl(table: Table, schema: str, *, prior: bool = False) -> tuple[str, str]:
    """(the trigger function of ``table``, the statements creating its triggers).

    Outside a push (operator SQL), the first writing statement of a transaction
    advances the counter, takes its row lock until commit, caches the version and
    notifies listeners; every later write of that transaction reuses the version.
    Inside a push the version was cached before any write, so the triggers only log.

    The version is taken by a BEFORE ... FOR EACH STATEMENT trigger, before the
    statement locks any row: every writer (pushes too) takes the counter's lock
    before row locks, so an operator's UPDATE and a push never deadlock.
    """
    s = quote(schema)
    pk = quote(table._pk.name)
    name = literal(table._name)
    setting = literal(version_setting(schema))
    fn = f"{s}.{quote(_function_name(table))}"
    upsert = (
        f"INSERT INTO {s}._plasma_changes (tbl, pk, version, deleted) "
        "VALUES ({name}, {ref}.{pk}::text, v, {deleted}) ON CONFLICT (tbl, pk) "
        "DO UPDATE SET version = excluded.version, deleted = excluded.deleted;"
    )
    log_new = upsert.format(name=name, ref="NEW", pk=pk, deleted="false")
    log_old = upsert.format(name=name, ref="OLD", pk=pk, deleted="true")
    prior_old = prior_new = prior_moved = prior_truncated = ""
    if prior:
        prior_old, prior_new, prior_moved, prior_truncated = _prior_statements(table, schema)
        prior_truncated = f"IF TG_OP = 'TRUNCATE' THEN {prior_truncated} END IF;"
    function = f"""
CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $plasma$
DECLARE
    cached text := current_setting({setting}, true);
    v bigint;
BEGIN
    IF cached IS NULL OR cached = '' THEN
        UPDATE {s}._plasma_meta SET version = version + 1 RETURNING version INTO v;
        PERFORM set_config({setting}, v::text, true);
        PERFORM pg_notify({literal(poke_channel(schema))}, v::text);
    ELSE
        v := cached::bigint;
    END IF;
    IF TG_WHEN = 'BEFORE' THEN
        {prior_truncated}
        RETURN NULL;
    END IF;
    IF TG_OP = 'TRUNCATE' THEN
        UPDATE {s}._plasma_changes SET version = v, deleted = true
            WHERE tbl = {name} AND NOT deleted;
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        {log_old}
        {prior_old}
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        {prior_old}
        {prior_moved}
        IF OLD.{pk} IS DISTINCT FROM NEW.{pk} THEN
            {log_old}
        END IF;
    ELSE
        {prior_new}
    END IF;
    {log_new}
    RETURN NULL;
END
$plasma$
"""
    qt = f"{s}.{quote(table._name)}"
    triggers = (
        f"CREATE TRIGGER _plasma_version BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE "
        f"ON {qt} FOR EACH STATEMENT EXECUTE FUNCTION {fn}();\n"
        f"CREATE TRIGGER _plasma_log AFTER INSERT OR UPDATE OR DELETE ON {qt} "
        f"FOR EACH ROW EXECUTE FUNCTION {fn}();\n"
        f"CREATE TRIGGER _plasma_log_truncate AFTER TRUNCATE ON {qt} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {fn}();"
    )
    return function, triggers


def column_def(dialect: PostgresDialect, column: Column) -> str:
    """A column's definition, as ``CREATE TABLE`` and ``ADD COLUMN`` write it."""
    parts = [quote(column.name), dialect.sql_type(column)]
    if not column.nullable:
        parts.append("NOT NULL")
    if column.primary_key:
        parts.append("PRIMARY KEY")
    if column.default is not MISSING and column.default is not None:
        parts.append("DEFAULT " + dialect.literal_sql(column.type, column.default))
    return " ".join(parts)


def declared_type(type_name: str, collation: str | None) -> str:
    """A column's type as the catalog describes it, spelled like ``sql_type``."""
    declared = type_name.upper()
    if collation is not None and collation != "default":
        declared += f' COLLATE "{collation}"'
    return declared


COLUMNS_SQL = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), co.collname
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_collation co ON co.oid = a.attcollation
WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')
  AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

TRIGGERS_SQL = """
SELECT t.tgname FROM pg_trigger t
JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2 AND NOT t.tgisinternal
"""


def pull_sql(table: Table) -> tuple[str, str]:
    """(changes since a version joined with the current rows, the whole table)."""
    cols = ", ".join(f"t.{quote(c.name)}" for c in table)
    pk = quote(table._pk.name)
    key = "c.pk::bigint" if table._pk.type is ColumnType.INTEGER else "c.pk"
    changes = (
        f"SELECT c.pk, c.deleted, {cols} FROM _plasma_changes c "
        f"LEFT JOIN {quote(table._name)} t ON t.{pk} = {key} "
        "WHERE c.tbl = $1 AND c.version > $2 ORDER BY c.version, c.pk"
    )
    snapshot = f"SELECT {', '.join(quote(c.name) for c in table)} FROM {quote(table._name)}"
    if table._pk.type is ColumnType.INTEGER:
        snapshot += f" ORDER BY {pk}"  # as SQLite, where an integer key is the rowid
    return changes, snapshot
