"""Declarations: tables, their columns (the ``col`` namespace) and the schema.

A schema file is imported by both engines, so everything here is plain data that
the SQL dialects, the protocol and the mutators read.
"""

from __future__ import annotations

import datetime as _dt
import enum
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .errors import MutationError, SchemaError
from .expr import ColumnRef

if TYPE_CHECKING:
    from .expr import Expr

__all__ = ["Column", "ColumnType", "Schema", "Table", "col", "table"]

MAX_SAFE_INTEGER = 2**53
_IDENT = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")


class _Missing(enum.Enum):
    MISSING = "MISSING"


MISSING = _Missing.MISSING


class ColumnType(enum.Enum):
    TEXT = "text"
    INTEGER = "integer"
    REAL = "real"
    BOOLEAN = "boolean"
    JSON = "json"
    BLOB = "blob"  # the sha256 hex of a blob, as text
    TIMESTAMP = "timestamp"  # UTC; ISO 8601 text ending in Z on the wire


def _check_text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("text")
    return value


def _check_integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("an integer")
    if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        raise TypeError("an integer within ±2**53")
    return value


def _check_real(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("a real number")
    try:
        value = float(value)
    except OverflowError:  # an int beyond float's range
        raise TypeError("a finite real number") from None
    if not math.isfinite(value):
        raise TypeError("a finite real number")
    return value


def _check_boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError("a boolean")
    return value


def _check_json(value: object) -> object:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise TypeError("a JSON-serializable value") from None
    return value


def _check_blob(value: object) -> str:
    if not isinstance(value, str) or not _HEX64.match(value):
        raise TypeError("a blob hash (64 lowercase hex characters)")
    return value


def format_timestamp(value: _dt.datetime) -> str:
    """Canonical text of a timestamp: fixed width, so text order is time order."""
    if value.tzinfo is None:
        raise TypeError("a timezone-aware datetime")
    value = value.astimezone(_dt.UTC).replace(tzinfo=None)
    # isoformat, not strftime: glibc's %Y does not zero-pad years before 1000.
    return value.isoformat(timespec="microseconds") + "Z"


def parse_timestamp(text: str) -> _dt.datetime:
    if not text.endswith("Z"):
        raise TypeError("an ISO 8601 UTC timestamp ending in 'Z'")
    try:
        value = _dt.datetime.fromisoformat(text[:-1] + "+00:00")
    except ValueError:
        raise TypeError("an ISO 8601 UTC timestamp ending in 'Z'") from None
    return value


def _check_timestamp(value: object) -> _dt.datetime:
    if isinstance(value, str):
        return parse_timestamp(value)
    if not isinstance(value, _dt.datetime):
        raise TypeError("a timezone-aware datetime or an ISO 8601 string ending in 'Z'")
    if value.tzinfo is None:
        raise TypeError("a timezone-aware datetime (naive datetimes are ambiguous)")
    try:
        return value.astimezone(_dt.UTC)
    except OverflowError:  # e.g. 0001-01-01 00:00 at +01:00 is before year 1 in UTC
        raise TypeError("a timestamp within years 1 to 9999 in UTC") from None


_CHECKS = {
    ColumnType.TEXT: _check_text,
    ColumnType.INTEGER: _check_integer,
    ColumnType.REAL: _check_real,
    ColumnType.BOOLEAN: _check_boolean,
    ColumnType.JSON: _check_json,
    ColumnType.BLOB: _check_blob,
    ColumnType.TIMESTAMP: _check_timestamp,
}


_PLAIN: dict[ColumnType, type] = {ColumnType.TEXT: str, ColumnType.BOOLEAN: bool}


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class Column(ColumnRef):
    """A column of a table; also an expression (``todos.done == False``)."""

    __slots__ = ("_check", "_plain", "default", "nullable", "primary_key", "type")

    def __init__(
        self,
        type: ColumnType,
        *,
        nullable: bool = False,
        default: object = MISSING,
        primary_key: bool = False,
    ) -> None:
        super().__init__()
        self.type = type
        self._check = _CHECKS[type]
        # The Python type whose values this column stores unchanged (None: no such type).
        self._plain = _PLAIN.get(type)
        self.nullable = nullable
        self.primary_key = primary_key
        if primary_key and nullable:
            raise SchemaError("a primary key column cannot be nullable")
        if primary_key and type not in (ColumnType.TEXT, ColumnType.INTEGER):
            raise SchemaError(f"a primary key must be text or integer, not {type.value}")
        if default is not MISSING and default is not None:
            try:
                default = _CHECKS[type](default)
            except TypeError as exc:
                raise SchemaError(
                    f"default {_short(default)} is not {exc.args[0]} ({type.value} column)"
                ) from None
        if default is None and not nullable:
            raise SchemaError("default=None needs nullable=True")
        self.default = default

    @property
    def has_default(self) -> bool:
        return self.default is not MISSING or self.nullable

    def check(self, value: object) -> object:
        """Validate a Python value for this column; return its canonical form."""
        if value is None:
            if self.nullable:
                return None
            raise MutationError(f"{self.qualname} must not be null")
        try:
            return self._check(value)
        except TypeError as exc:
            raise MutationError(
                f"{self.qualname}: expected {exc.args[0]}, got {_short(value)}"
            ) from None

    def to_wire(self, value: object) -> object:
        """A checked Python value as it travels in JSON."""
        if value is None:
            return None
        if self.type is ColumnType.TIMESTAMP:
            assert isinstance(value, _dt.datetime)
            return format_timestamp(value)
        return value

    def from_wire(self, value: object) -> object:
        """A JSON value from the wire, checked; raises MutationError naming the column."""
        return self.check(value)

    def __repr__(self) -> str:
        if self._table is None:
            return f"<unbound {self.type.value} column>"
        return f"<Column {self.qualname} {self.type.value}>"


class _ColNamespace:
    """Column constructors: ``col.text()``, ``col.integer(primary_key=True)``, ...

    A namespace rather than module-level functions so that a schema file shadows
    neither ``id`` nor ``json``.
    """

    @staticmethod
    def id() -> Column:
        """The usual key: text, made by clients with ``plasma_nb.new_id()``."""
        return Column(ColumnType.TEXT, primary_key=True)

    @staticmethod
    def text(
        *, nullable: bool = False, default: object = MISSING, primary_key: bool = False
    ) -> Column:
        return Column(ColumnType.TEXT, nullable=nullable, default=default, primary_key=primary_key)

    @staticmethod
    def integer(
        *, nullable: bool = False, default: object = MISSING, primary_key: bool = False
    ) -> Column:
        return Column(
            ColumnType.INTEGER, nullable=nullable, default=default, primary_key=primary_key
        )

    @staticmethod
    def real(*, nullable: bool = False, default: object = MISSING) -> Column:
        return Column(ColumnType.REAL, nullable=nullable, default=default)

    @staticmethod
    def boolean(*, nullable: bool = False, default: object = MISSING) -> Column:
        return Column(ColumnType.BOOLEAN, nullable=nullable, default=default)

    @staticmethod
    def json(*, nullable: bool = False, default: object = MISSING) -> Column:
        return Column(ColumnType.JSON, nullable=nullable, default=default)

    @staticmethod
    def blob(*, nullable: bool = False, default: object = MISSING) -> Column:
        return Column(ColumnType.BLOB, nullable=nullable, default=default)

    @staticmethod
    def timestamp(*, nullable: bool = False, default: object = MISSING) -> Column:
        return Column(ColumnType.TIMESTAMP, nullable=nullable, default=default)


col = _ColNamespace()


class Table:
    """A declared table. Columns are attributes; metadata lives under ``_`` names."""

    _name: str
    _columns: dict[str, Column]
    _pk: Column
    _read_rule: Expr | None

    def __init__(self, name: str, columns: Mapping[str, Column]) -> None:
        if not isinstance(name, str) or not _IDENT.match(name):
            raise SchemaError(
                f"table name {name!r} must be an identifier: a letter, then letters, "
                "digits or underscores"
            )
        if not columns:
            raise SchemaError(f"table {name!r} has no columns")
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_columns", {})
        object.__setattr__(self, "_read_rule", None)
        keys = []
        for cname, column in columns.items():
            if not isinstance(column, Column):
                raise SchemaError(
                    f"{name}.{cname}: expected a column from the col namespace "
                    f"(col.text(), ...), got {_short(column)}"
                )
            if not _IDENT.match(cname):
                raise SchemaError(
                    f"column name {name}.{cname} must be an identifier that does not start "
                    "with '_'"
                )
            if column._table is not None:
                raise SchemaError(
                    f"{name}.{cname}: this column object already belongs to {column.qualname}"
                )
            column._bind(self, cname)
            self._columns[cname] = column
            object.__setattr__(self, cname, column)
            if column.primary_key:
                keys.append(cname)
        if len(keys) != 1:
            found = ", ".join(keys) or "none"
            raise SchemaError(
                f"table {name!r} needs exactly one primary key (col.id() or "
                f"primary_key=True), found {found}"
            )
        object.__setattr__(self, "_pk", self._columns[keys[0]])

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"table {self._name!r} is read-only")

    def __getattr__(self, name: str) -> Any:
        # Only reached for names that are not columns.
        if name.startswith("_"):
            raise AttributeError(name)
        raise AttributeError(
            f"table {self._name!r} has no column {name!r}; "
            f"columns: {', '.join(self._columns)}"
        )

    def __iter__(self) -> Iterator[Column]:
        return iter(self._columns.values())

    def __repr__(self) -> str:
        return f"<Table {self._name} ({', '.join(self._columns)})>"

    def _column(self, name: str) -> Column:
        try:
            return self._columns[name]
        except KeyError:
            raise MutationError(
                f"table {self._name!r} has no column {name!r}; "
                f"columns: {', '.join(self._columns)}"
            ) from None

    def _check_row(self, row: Mapping[str, object], *, partial: bool = False) -> dict[str, object]:
        """Validate values to write; a full row needs every column without a default."""
        columns = self._columns
        checked: dict[str, object] = {}
        for name, value in row.items():
            column = columns.get(name)
            if column is None:
                column = self._column(name)  # raises, naming the columns
            # Text and booleans need no conversion: skip the general check, which every
            # mutation's every value would otherwise pay for.
            if type(value) is column._plain:
                checked[name] = value
            else:
                checked[name] = column.check(value)
        if not partial:
            missing = [
                c.name for c in self if c.name not in checked and not c.has_default
            ]
            if missing:
                raise MutationError(
                    f"{self._name}: missing value for {', '.join(missing)}"
                )
        return checked

    def _row_to_wire(self, row: Mapping[str, object]) -> dict[str, object]:
        return {name: self._columns[name].to_wire(value) for name, value in row.items()}

    def _row_from_wire(self, value: Mapping[str, object]) -> dict[str, object]:
        return {name: self._column(name).from_wire(v) for name, v in value.items()}

    def _pk_from_text(self, text: str) -> object:
        """The key as a Python value, from the text after ``table/`` in a sync key."""
        if self._pk.type is ColumnType.INTEGER:
            try:
                return int(text)
            except ValueError:
                raise MutationError(f"{self._name}: key {text!r} is not an integer") from None
        return text


def table(name: str, /, **columns: Column) -> Table:
    """Declare a table: ``table("todos", id=col.id(), title=col.text())``."""
    return Table(name, columns)


class Schema:
    """The tables of one app, with the version clients and server agree on.

    ``read_rules`` maps tables (or their names) to the condition a row must meet for
    a caller to receive it: ``{todos: todos.owner == ctx.user}`` (see ``core/rules.py``
    and docs/security.md). Tables without a rule are readable by every caller.
    """

    def __init__(
        self, tables: Iterable[Table], version: str = "1", compatible: Iterable[str] = (),
        *, read_rules: Mapping[Any, Expr] | None = None,
    ) -> None:
        if not isinstance(version, str) or not version:
            raise SchemaError(f"Schema version must be a non-empty string, got {version!r}")
        self.version = version
        if isinstance(compatible, str):
            raise SchemaError(
                f"compatible must be a list of versions, got the string {compatible!r}"
            )
        self.compatible = tuple(compatible)
        for v in self.compatible:
            if not isinstance(v, str):
                raise SchemaError(f"compatible versions must be strings, got {v!r}")
        self.tables: dict[str, Table] = {}
        for t in tables:
            if not isinstance(t, Table):
                raise SchemaError(f"Schema takes tables made by table(), got {_short(t)}")
            if t._name in self.tables:
                raise SchemaError(f"two tables are named {t._name!r}")
            if t._name.lower().startswith("sqlite_"):
                raise SchemaError(f"table name {t._name!r} is reserved")
            self.tables[t._name] = t
        if not self.tables:
            raise SchemaError("a Schema needs at least one table")
        from .rules import normalize_rules

        #: Read rules by table name (tables without one are not in it).
        self.read_rules: dict[str, Expr] = normalize_rules(self.tables, read_rules)

    def accepts(self, version: str) -> bool:
        return version == self.version or version in self.compatible

    def table(self, name: str) -> Table:
        try:
            return self.tables[name]
        except KeyError:
            raise SchemaError(
                f"no table named {name!r}; tables: {', '.join(self.tables)}"
            ) from None

    def __iter__(self) -> Iterator[Table]:
        return iter(self.tables.values())

    def __repr__(self) -> str:
        return f"<Schema v{self.version} ({', '.join(self.tables)})>"

    def describe(self) -> dict[str, object]:
        """The schema as JSON, as ``GET /sync/schema`` publishes it."""
        return {
            "version": self.version,
            "compatible": list(self.compatible),
            "tables": {
                t._name: {
                    "primaryKey": t._pk.name,
                    "columns": {
                        c.name: {
                            "type": c.type.value,
                            "nullable": c.nullable,
                            **({"default": c.to_wire(c.default)}
                               if c.default is not MISSING else {}),
                        }
                        for c in t
                    },
                }
                for t in self
            },
        }
