"""Read rules on the server: the SQL that keeps a pull to the rows its caller may read.

A full pull selects the rows that match the caller's rule. An incremental pull
from cookie C looks at each row changed since C:

- visible now: ``put``;
- not visible now (or deleted): ``del``, but only if the caller could read it at
  C (then the client has it); a row it never saw is not mentioned at all, so
  not even its key leaks.

"Could read it at C" needs the row as it was at C. Every write to a table with
a rule therefore records, in a shadow table ``_plasma_prior_<table>``, the row's
image *before* the write (or that it did not exist), once per version; the
image before the first write after C is the row at C. The triggers that keep
the change log write these images too, in plain SQL, so operator SQL is covered.
Compaction drops images as old as the compacted horizon: a cookie that old gets
a full snapshot anyway.

A client group remembers the fingerprint of its view (the rules and the
context values they read) and the version from which it holds: a cookie older
than that version, or a fingerprint that changed, gets ``clear`` and a full
snapshot.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..core.dialect import Dialect, quote
from ..core.mutators import Context
from ..core.rules import bind, fingerprint
from ..core.schema import ColumnType, Schema, Table

__all__ = ["ReadRules", "RuleSQL", "prior_table"]

#: Internal columns of a prior-image table (user columns never start with "_").
PK, VERSION, ABSENT = "_plasma_pk", "_plasma_version", "_plasma_absent"


def prior_table(table: Table) -> str:
    """The name of ``table``'s prior-image table (at most 63 characters, for Postgres)."""
    name = f"_plasma_prior_{table._name}"
    if len(name) > 63:
        digest = hashlib.sha1(table._name.encode()).hexdigest()[:16]
        name = f"_plasma_prior_{table._name[:30]}_{digest}"
    return name


@dataclass(frozen=True)
class RuleSQL:
    """One statement and its parameters."""

    sql: str
    params: list[object]


class ReadRules:
    """The schema's read rules on one backend (``flavor`` "sqlite" or "postgres")."""

    def __init__(self, schema: Schema, dialect: Dialect, flavor: str) -> None:
        self.schema = schema
        self.rules = schema.read_rules
        self.dialect = dialect
        self.flavor = flavor

    def __bool__(self) -> bool:
        return bool(self.rules)

    def ruled(self, table: Table) -> bool:
        return table._name in self.rules

    def fingerprint(self, ctx: Context) -> str | None:
        return fingerprint(self.rules, ctx)

    def _condition(self, table: Table, ctx: Context, first: int) -> tuple[str, list[object]]:
        compiled = self.dialect.compile_condition(
            bind(self.rules[table._name], ctx, table), first=first
        )
        return compiled.sql, compiled.params

    def snapshot(self, table: Table, ctx: Context) -> RuleSQL:
        """Every row of ``table`` that the caller may read."""
        cols = ", ".join(quote(c.name) for c in table)
        where, params = self._condition(table, ctx, 0)
        sql = f"SELECT {cols} FROM {quote(table._name)} WHERE {where}"
        if self.flavor == "postgres" and table._pk.type is ColumnType.INTEGER:
            sql += f" ORDER BY {quote(table._pk.name)}"  # as SQLite, where the key is the rowid
        return RuleSQL(sql, params)

    def changes(self, table: Table, ctx: Context, since: int) -> RuleSQL:
        """The rows of ``table`` changed since ``since``: the key, the deleted flag, the
        row if the caller may read it now (else NULLs), then whether the caller could
        read it at ``since``."""
        pk = quote(table._pk.name)
        cols = ", ".join(quote(c.name) for c in table)
        t_cols = ", ".join(f"t.{quote(c.name)}" for c in table)
        prior = quote(prior_table(table))
        if self.flavor == "postgres":
            where, rule_params = self._condition(table, ctx, 2)
            tbl, ver = "$1", "$2"
            key = "c.pk::bigint" if table._pk.type is ColumnType.INTEGER else "c.pk"
            absent = f"NOT p.{ABSENT}"
            params: list[object] = [table._name, since, *rule_params]
        else:
            where, rule_params = self._condition(table, ctx, 0)
            tbl = ver = "?"
            key = "c.pk"
            absent = f"p.{ABSENT} = 0"
            # SQLite numbers ? placeholders in the order they appear in the text.
            params = [since, since, *rule_params, *rule_params, table._name, since]
        was = (
            f"SELECT p.{PK} FROM {prior} p WHERE p.{VERSION} > {ver} AND {absent} "
            f"AND NOT EXISTS (SELECT 1 FROM {prior} q WHERE q.{PK} = p.{PK} "
            f"AND q.{VERSION} > {ver} AND q.{VERSION} < p.{VERSION}) AND {where}"
        )
        sql = (
            f"SELECT c.pk, c.deleted, {t_cols}, "
            f"(t.{pk} IS NULL AND c.pk IN ({was})) AS was_visible "
            f"FROM _plasma_changes c LEFT JOIN "
            f"(SELECT {cols} FROM {quote(table._name)} WHERE {where}) t ON t.{pk} = {key} "
            f"WHERE c.tbl = {tbl} AND c.version > {ver}"
        )
        if self.flavor == "postgres":
            sql += " ORDER BY c.version, c.pk"
        return RuleSQL(sql, params)

