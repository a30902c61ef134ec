"""The ``%plasma`` commands: their arguments, their help, and parsing a line.

Each command has an argparse parser whose errors raise ``CommandError`` (shown
as one line, never a traceback). ``%plasma?`` and ``%plasma help`` are generated
from these parsers, and the docs test checks that docs/magics.md mentions every
command and option here.

``sql`` is parsed by hand (``parse_sql``): only its leading options are options,
the rest of the line is SQL, where ``-`` and ``--`` mean SQL things.
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass
from typing import Any, NoReturn

__all__ = [
    "COMMANDS",
    "CommandError",
    "SqlArgs",
    "help_text",
    "parse",
    "parse_sql",
    "usage",
]


class CommandError(Exception):
    """A mistake in a ``%plasma`` line: reported in one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise CommandError(f"{self.prog}: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise CommandError(message or f"{self.prog}: exited")


def _parser(name: str, summary: str, description: str = "", usage: str | None = None) -> _Parser:
    parser = _Parser(prog=f"%plasma {name}", description=description or summary,
                     add_help=False, allow_abbrev=False, usage=usage)
    parser.summary = summary  # type: ignore[attr-defined]
    return parser


def _name_option(parser: argparse.ArgumentParser, what: str = "use") -> None:
    parser.add_argument("--name", metavar="N", default=None,
                        help=f"the connection to {what} (default: the last one connected)")


def _build() -> dict[str, _Parser]:
    commands: dict[str, _Parser] = {}

    p = commands["connect"] = _parser(
        "connect", "open a local replica and start syncing it with a server",
        "Open the local database N (a replica of the server's data) and sync it with the "
        "server at URL. Without URL: in JupyterLite served by `plasma-nb serve --site`, "
        "the page's own origin; elsewhere a local-only database (also `local`).",
        usage="%(prog)s [URL] --schema FILE [--name N] [--token-env VAR] "
              "[--storage {sqlite,memory,indexeddb}]",
    )
    p.add_argument("url", nargs="?", metavar="URL", default=None,
                   help="the server, e.g. http://127.0.0.1:8000; `local`: local only; "
                        "nothing: the page's origin in JupyterLite, else local only")
    p.add_argument("--schema", metavar="FILE", required=True,
                   help="a .py file (or module name) defining `schema` and `mutators`")
    p.add_argument("--name", metavar="N", default=None,
                   help="the local database's name (default: PlasmaMagics.default_name, "
                        "else the schema file's name)")
    p.add_argument("--token-env", metavar="VAR", default=None,
                   help="read the bearer token from environment variable VAR")
    p.add_argument("--storage", choices=["sqlite", "memory", "indexeddb"], default=None,
                   help="where the replica lives (default: a SQLite file in CPython, "
                        "IndexedDB in the browser)")

    p = commands["status"] = _parser("status", "show the sync status (a live widget)")
    _name_option(p)

    p = commands["sync"] = _parser("sync", "push, then pull, now (waits until done)")
    _name_option(p)

    p = commands["offline"] = _parser("offline", "stop syncing; mutations queue locally")
    _name_option(p)

    p = commands["online"] = _parser("online", "resume syncing: push what queued up, then pull")
    _name_option(p)

    p = commands["tables"] = _parser("tables", "the schema's tables, their columns and row counts")
    _name_option(p)

    p = commands["mutators"] = _parser("mutators", "the schema's mutators and their arguments")
    _name_option(p)

    p = commands["mutate"] = _parser(
        "mutate", "run a mutator: applied locally at once, pushed to the server",
        "Run mutator NAME with key=value arguments. A value is parsed as JSON where it "
        "parses (3, true, null, \"text\", [1, 2], {\"a\": 1}), else taken as text; "
        "key=:var takes the value of the notebook variable var.",
    )
    _name_option(p)
    p.add_argument("mutator", metavar="NAME", help="the mutator to run")
    p.add_argument("args", nargs="*", metavar="key=value", help="its arguments")

    p = commands["sql"] = _parser(
        "sql", "run SQL on the local replica (SQLite) or in DuckDB",
        "%%plasma sql [options] [VAR <<] then SQL in the cell (or on the line). "
        "`:name` is bound from the notebook variable `name`. The result is a pandas "
        "DataFrame; with --live, a live query shown as a table that keeps itself current. "
        "`VAR << SQL` stores the result in VAR and shows nothing; `VAR= << SQL` stores "
        "and shows it.",
    )
    p.add_argument("--live", action="store_true",
                   help="a live query: re-run when the tables it reads change")
    p.add_argument("--engine", choices=["sqlite", "duckdb"], default=None,
                   help="sqlite (the replica, default) or duckdb (analytics over the replica)")
    p.add_argument("-o", "--out", metavar="VAR", default=None,
                   help="also store the result in VAR")
    _name_option(p)

    p = commands["outbox"] = _parser(
        "outbox", "the pending mutations (not yet confirmed by the server), as a DataFrame")
    _name_option(p)

    p = commands["log"] = _parser(
        "log", "recent row changes this client saw (local mutations, pulls), as a DataFrame")
    p.add_argument("-n", "--limit", type=int, default=20, metavar="N",
                   help="how many changes, newest last (default 20; 0 for all kept)")
    _name_option(p)

    p = commands["reset"] = _parser(
        "reset", "drop the local replica and pull everything again (needs --yes)",
        "Drop this connection's local database (its rows, outbox and sync state) and "
        "reconnect, pulling a fresh copy. Keeps the server's data, the schema file and "
        "other connections. Pending mutations that never reached the server are lost.",
    )
    p.add_argument("--yes", action="store_true", help="really do it")
    _name_option(p, "reset")

    p = commands["client"] = _parser(
        "client", "the connected Client object, for the Python API (client.live(...))")
    _name_option(p)

    p = commands["blob"] = _parser(
        "blob", "put a file into the blob store, or get a blob by its hash",
        "`put PATH` caches the file, queues its upload (the sync loop uploads it before "
        "any mutation that stores its hash) and answers its hash, for a blob column. "
        "`get HASH [PATH]` fetches the blob (from the local cache, else the server, checked "
        "against the hash) and writes it to PATH, or answers its bytes. See docs/blobs.md.",
        usage="%(prog)s put PATH | get HASH [PATH] [--name N]",
    )
    p.add_argument("action", choices=["put", "get"], metavar="put|get",
                   help="put a file, or get a blob")
    p.add_argument("target", metavar="PATH|HASH", help="put: the file; get: the blob's hash")
    p.add_argument("path", nargs="?", default=None, metavar="PATH",
                   help="get: write the blob to this file (default: answer its bytes)")
    _name_option(p)

    p = commands["help"] = _parser("help", "this help, or one command's")
    p.add_argument("command", nargs="?", metavar="COMMAND", help="a command")
    return commands


COMMANDS = _build()

#: Commands that wait for the network: the input transformer awaits them.
AWAITED = frozenset({"connect", "sync", "reset", "blob"})


def usage(name: str) -> str:
    parser = COMMANDS[name]
    if name == "sql":
        return ("%%plasma sql [--live] [--engine {sqlite,duckdb}] [-o VAR] [--name N] "
                "[VAR << | VAR= <<]\nSQL ...")
    return parser.format_usage().replace("usage: ", "").strip()


def command_help(name: str) -> str:
    parser = COMMANDS[name]
    text = parser.format_help().replace("usage: ", "")
    if name == "sql":
        text = usage("sql") + "\n\n" + text.split("\n\n", 1)[1]
    return text.rstrip()


def help_text() -> str:
    """The text of ``%plasma?``: every command, with its usage."""
    lines = [
        "plasma_nb: local-first sync for notebooks.",
        "",
        "  %plasma COMMAND [options]        or, for SQL:  %%plasma sql [options]",
        "",
        "Commands:",
    ]
    for name, parser in COMMANDS.items():
        lines.append(f"  {name:<9} {parser.summary}")  # type: ignore[attr-defined]
    lines.append("")
    lines.append("Usage:")
    for name in COMMANDS:
        for i, line in enumerate(usage(name).splitlines()):
            lines.append(("  " if i == 0 else "      ") + line)
    lines += [
        "",
        "`%plasma help COMMAND` explains one command. Settings: `%config PlasmaMagics`.",
        "Errors are one line; `%config PlasmaMagics.short_errors = False` shows tracebacks.",
    ]
    return "\n".join(lines)


def split(line: str) -> tuple[str, str]:
    """(command, the rest of the line)."""
    stripped = line.strip()
    if not stripped:
        return "", ""
    head, _, rest = stripped.partition(" ")
    return head, rest.strip()


def parse(name: str, rest: str) -> argparse.Namespace:
    """Parse the arguments of a command other than ``sql``."""
    try:
        words = shlex.split(rest, comments=True)
    except ValueError as exc:
        raise CommandError(f"%plasma {name}: {exc}") from None
    return COMMANDS[name].parse_args(words)


@dataclass
class SqlArgs:
    live: bool = False
    engine: str | None = None
    out: str | None = None
    name: str | None = None
    capture: str | None = None  # VAR of `VAR <<`
    show: bool = True  # False for `VAR <<`, True for `VAR= <<`
    sql: str = ""


_SQL_FLAGS = {"--live": "live"}
_SQL_OPTIONS = {"--engine": "engine", "-o": "out", "--out": "out", "--name": "name"}


def parse_sql(line: str, cell: str | None) -> SqlArgs:
    """Leading options, then an optional ``VAR <<`` / ``VAR= <<``, then SQL."""
    args = SqlArgs()
    rest = line
    while True:
        rest = rest.lstrip()
        word, _, after = rest.partition(" ")
        option, eq, value = word.partition("=")
        if option in _SQL_FLAGS and not eq:
            setattr(args, _SQL_FLAGS[option], True)
            rest = after
        elif option in _SQL_OPTIONS and option.startswith("-"):
            if not eq:
                value, _, after = after.lstrip().partition(" ")
            if not value:
                raise CommandError(f"%plasma sql: {option} needs a value")
            setattr(args, _SQL_OPTIONS[option], value)
            rest = after
        elif word.startswith("-") and not word.startswith("--") and len(word) > 1 \
                and word[1].isalpha():
            raise CommandError(f"%plasma sql: unrecognized option {word}")
        elif word.startswith("--") and len(word) > 2 and word[2].isalpha():
            raise CommandError(f"%plasma sql: unrecognized option {word}")
        else:
            break
    if args.engine is not None and args.engine not in ("sqlite", "duckdb"):
        raise CommandError(
            f"%plasma sql: --engine must be sqlite or duckdb, not {args.engine!r}")
    head, marker, tail = rest.partition("<<")
    target = head.strip()
    if marker and (target.rstrip("=").strip().isidentifier()):
        args.show = target.endswith("=")
        args.capture = target.rstrip("=").strip()
        rest = tail
    sql = rest.strip()
    if cell is not None and cell.strip():
        sql = (sql + "\n" + cell).strip() if sql else cell.strip()
    args.sql = sql
    return args


def describe_args(parser: Any) -> list[str]:
    """Every option string of a parser (for the docs test)."""
    found = []
    for action in parser._actions:
        found.extend(action.option_strings)
    return found
