"""The %plasma magics in IPython's test shell: commands, their one-line errors, capture and
parameters, settings, and the transformer that awaits connect and sync."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from plasma_nb.notebook.transformer import AwaitPlasma
from tests.notebook.helpers import TODOS, Server


def run(ip: Any, cell: str) -> Any:
    result = ip.run_cell(cell)
    if result.error_before_exec is not None:
        raise result.error_before_exec
    return result


def error_line(ip: Any, capsys: pytest.CaptureFixture[str], cell: str) -> str:
    """Run a cell that must fail with a one-line error; return that line."""
    capsys.readouterr()
    result = ip.run_cell(cell)
    assert not result.success, f"{cell!r} succeeded"
    out, err = capsys.readouterr()
    lines = [line for line in (err + out).splitlines() if line.strip()]
    assert "Traceback" not in err + out, err + out
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture
def local(ip: Any) -> Any:
    run(ip, f"%plasma connect local --schema {TODOS} --name t")
    return ip


def test_connect_local_only_prints_one_line(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    result = run(ip, f"%plasma connect --schema {TODOS} --name mine")
    assert result.success
    out = capsys.readouterr().out
    assert out.strip() == "Connected 'mine' (local only): 0 todos; 0 pending."
    client = run(ip, "%plasma client").result
    assert client.status().local_only


def test_connect_defaults_the_name_to_the_schema_file_or_the_setting(ip: Any) -> None:
    run(ip, f"%plasma connect local --schema {TODOS}")
    assert ip.user_ns["__plasma_magics__"].current == "todos"
    run(ip, "%config PlasmaMagics.default_name = 'shared'")
    run(ip, f"%plasma connect local --schema {TODOS}")
    assert ip.user_ns["__plasma_magics__"].current == "shared"


def test_mutate_parses_json_text_and_variables(local: Any) -> None:
    ip = local
    run(ip, "tid = 'id-from-a-variable'")
    handle = run(ip, '%plasma mutate add_todo id=:tid title="Buy milk"').result
    assert handle.name == "add_todo"
    assert handle.args == {"id": "id-from-a-variable", "title": "Buy milk"}
    run(ip, """%plasma mutate add_todo id='"42"' title='"quoted"'""")
    frame = run(ip, "%plasma sql SELECT id, title FROM todos ORDER BY id").result
    assert isinstance(frame, pd.DataFrame)
    assert frame.to_dict("records") == [
        {"id": "42", "title": "quoted"}, {"id": "id-from-a-variable", "title": "Buy milk"},
    ]


@pytest.mark.parametrize(
    ("cell", "line"),
    [
        ('%plasma mutate add_todo id=a title=" "', "MutationError: title must not be empty"),
        ("%plasma mutate nope", "UsageError: %plasma mutate: no mutator named 'nope'; "
                                "mutators: add_todo, mark_done, rename, delete_todo"),
        ("%plasma mutate add_todo id", "UsageError: %plasma mutate: arguments are key=value, "
                                       "got 'id'"),
        ("%plasma mutate add_todo id=:missing title=x",
         "UsageError: %plasma mutate: no variable named 'missing' (for :missing)"),
        ("%plasma bogus", "UsageError: unknown command 'bogus'; valid commands are: connect, "
                          "status, sync, offline, online, tables, mutators, mutate, sql, outbox, "
                          "log, reset, client, blob, help"),
        ("%plasma", "UsageError: %plasma needs a command: connect, status, sync, offline, "
                    "online, tables, mutators, mutate, sql, outbox, log, reset, client, blob, help "
                    "(%plasma? for help)"),
        ("%plasma sync", "UsageError: 't' is local only: there is no server to sync with"),
        ("%plasma sql SELECT * FROM nope", "QueryError: SQLite: no such table: nope"),
        ("%plasma sql DELETE FROM todos",
         "QueryError: SQL on the replica is read-only: change data with a mutator "
         "(%plasma mutate NAME key=value ...)"),
        ("%plasma sql SELECT :nobody", "QueryError: the parameter :nobody needs a variable "
                                       "named 'nobody'"),
        ("%plasma sql --engine postgres SELECT 1",
         "UsageError: %plasma sql: --engine must be sqlite or duckdb, not 'postgres'"),
        ("%plasma sql --bogus SELECT 1", "UsageError: %plasma sql: unrecognized option --bogus"),
        ("%plasma sql", "UsageError: %plasma sql: no SQL (put it in the cell, or after the "
                        "options)"),
        ("%plasma tables --name other",
         "UsageError: no connection named 'other' (connections: t)"),
        ("%plasma status --bogus", "UsageError: %plasma status: unrecognized arguments: "
                                   "--bogus"),
        ("%%plasma status\nx", "UsageError: %%plasma runs SQL: %%plasma sql [options]; other "
                               "commands are line magics (%plasma COMMAND)"),
        ("%plasma connect --schema nope.py",
         "UsageError: %plasma connect: schema file 'nope.py' does not exist"),
        ("%plasma connect local", "UsageError: %plasma connect: the following arguments are "
                                  "required: --schema"),
        ("%plasma help nope", "UsageError: %plasma help: no command 'nope'; commands: connect, "
                              "status, sync, offline, online, tables, mutators, mutate, sql, "
                              "outbox, log, reset, client, blob, help"),
    ],
)
def test_user_errors_are_one_line(local: Any, capsys: pytest.CaptureFixture[str],
                                  cell: str, line: str) -> None:
    assert error_line(local, capsys, cell) == line


def test_commands_need_a_connection(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert error_line(ip, capsys, "%plasma tables") == (
        "UsageError: no connection: run %plasma connect URL --schema FILE first")


def test_short_errors_off_shows_the_traceback(local: Any,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    run(local, "%config PlasmaMagics.short_errors = False")
    capsys.readouterr()
    result = local.run_cell('%plasma mutate add_todo id=a title=" "')
    assert not result.success
    out, err = capsys.readouterr()
    assert "Traceback" in out + err
    assert "MutationError" in out + err


def test_capture_with_double_angle_brackets(local: Any, capsys: pytest.CaptureFixture[str]) -> None:
    ip = local
    run(ip, "%plasma mutate add_todo id=a title=Apples")
    run(ip, "%plasma mutate add_todo id=b title=Bread")
    capsys.readouterr()
    quiet = run(ip, "%%plasma sql rows <<\nSELECT id, title FROM todos ORDER BY id")
    assert quiet.result is None
    assert capsys.readouterr().out == ""
    assert list(ip.user_ns["rows"]["title"]) == ["Apples", "Bread"]

    shown = run(ip, "%%plasma sql shown= <<\nSELECT count(*) AS n FROM todos")
    assert shown.result is ip.user_ns["shown"]
    assert int(shown.result["n"][0]) == 2

    line_form = run(ip, "%plasma sql first << SELECT title FROM todos WHERE id = 'a'")
    assert line_form.result is None
    assert ip.user_ns["first"]["title"][0] == "Apples"

    out = run(ip, "%%plasma sql -o kept\nSELECT id FROM todos")
    assert out.result is ip.user_ns["kept"]


def test_named_parameters_come_from_the_notebook(local: Any) -> None:
    ip = local
    run(ip, "%plasma mutate add_todo id=a title=Apples")
    run(ip, "%plasma mutate add_todo id=b title=Bread")
    run(ip, "wanted = 'b'")
    frame = run(ip, "%%plasma sql\nSELECT title FROM todos WHERE id = :wanted "
                    "AND title != ':wanted' -- :not_a_parameter").result
    assert list(frame["title"]) == ["Bread"]

    def inside_a_function() -> Any:
        wanted = "a"  # noqa: F841  (read by the magic through the local scope)
        return ip.run_line_magic("plasma", "sql SELECT title FROM todos WHERE id = :wanted")

    assert list(inside_a_function()["title"]) == ["Apples"]


def test_autolimit_caps_the_rows_fetched(local: Any) -> None:
    ip = local
    for i in range(5):
        run(ip, f"%plasma mutate add_todo id=t{i} title=T{i}")
    run(ip, "%config PlasmaMagics.autolimit = 2")
    assert len(run(ip, "%plasma sql SELECT * FROM todos").result) == 2
    assert len(run(ip, "%plasma sql --engine duckdb SELECT * FROM todos").result) == 2
    run(ip, "%config PlasmaMagics.autolimit = 0")
    assert len(run(ip, "%plasma sql SELECT * FROM todos").result) == 5


def test_tables_mutators_outbox_and_log(local: Any) -> None:
    ip = local
    run(ip, "%plasma mutate add_todo id=a title=Apples")
    run(ip, "%plasma mutate rename id=a title=Pears")
    tables = run(ip, "%plasma tables").result
    assert tables.to_dict("records") == [
        {"table": "todos", "columns": "id, title, done, owner, photo", "key": "id", "rows": 1}]
    mutators = run(ip, "%plasma mutators").result
    assert list(mutators["mutator"]) == ["add_todo", "mark_done", "rename", "delete_todo"]
    assert mutators["arguments"][0] == "id: str, title: str"
    outbox = run(ip, "%plasma outbox").result
    assert list(outbox["mutator"]) == ["add_todo", "rename"]
    assert list(outbox["args"]) == ['{"id": "a", "title": "Apples"}',
                                    '{"id": "a", "title": "Pears"}']
    assert outbox["error"].isna().all()
    log = run(ip, "%plasma log").result
    assert [(r["op"], r["key"]) for r in log.to_dict("records")] == [
        ("insert", "a"), ("update", "a")]
    assert log["row"].iloc[-1]["title"] == "Pears"
    assert len(run(ip, "%plasma log -n 1").result) == 1


def test_reset_says_what_it_drops_and_asks_for_yes(local: Any,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    ip = local
    run(ip, "%plasma mutate add_todo id=a title=Apples")
    capsys.readouterr()
    run(ip, "%plasma reset")
    said = capsys.readouterr().out
    assert "drops the local database of 't'" in said
    assert "1 pending mutation(s) the server has not confirmed (add_todo)" in said
    assert "keeps the server's data" in said
    assert "%plasma reset --yes" in said
    assert len(run(ip, "%plasma sql SELECT * FROM todos").result) == 1  # nothing dropped yet
    run(ip, "%plasma reset --yes")
    assert "Dropped the local database of 't' and 1 pending mutation(s)." in (
        capsys.readouterr().out)
    assert len(run(ip, "%plasma sql SELECT * FROM todos").result) == 0


def test_help_is_generated_from_the_arguments(local: Any, capsys: pytest.CaptureFixture[str]
                                              ) -> None:
    ip = local
    run(ip, "%plasma?")
    out = capsys.readouterr().out
    assert "%plasma connect [URL] --schema FILE [--name N] [--token-env VAR]" in out
    assert "%%plasma sql [--live] [--engine {sqlite,duckdb}] [-o VAR]" in out
    run(ip, "%plasma help sql")
    out = " ".join(capsys.readouterr().out.split())
    assert "--engine {sqlite,duckdb}" in out
    assert "`VAR << SQL` stores the result in VAR" in out


def test_config_lists_the_settings(local: Any, capsys: pytest.CaptureFixture[str]) -> None:
    run(local, "%config PlasmaMagics")
    out = capsys.readouterr().out
    for name in ("displaylimit", "autolimit", "default_name", "default_engine", "short_errors"):
        assert f"PlasmaMagics.{name}" in out
    run(local, "%config PlasmaMagics.displaylimit = 3")
    from plasma_nb.notebook.display import OPTIONS

    assert OPTIONS.displaylimit == 3
    run(local, "%config PlasmaMagics.displaylimit = 10")


# -- the transformer ------------------------------------------------------------------------


def test_connect_and_sync_lines_become_awaited(ip: Any) -> None:
    cell = f"%plasma connect $URL --schema {TODOS}\nx = %plasma sync\n%plasma status\n"
    code = ip.transform_cell(cell)
    assert code.splitlines() == [
        f"await __plasma_magics__.line_async('connect $URL --schema {TODOS}')",
        "x = await __plasma_magics__.line_async('sync')",
        "get_ipython().run_line_magic('plasma', 'status')",
    ]
    inside = ip.transform_cell("def f():\n    %plasma sync\n")
    assert "await" not in inside
    other = ip.transform_cell("print(1); %plasma sync\n")
    assert "await" not in other


def test_the_transformer_leaves_autoawait_off_alone(ip: Any) -> None:
    ip.run_line_magic("autoawait", "off")
    try:
        assert "await" not in ip.transform_cell("%plasma sync\n")
    finally:
        ip.run_line_magic("autoawait", "on")


def test_unload_removes_the_transformer(ip: Any) -> None:
    assert any(isinstance(t, AwaitPlasma) for t in ip.input_transformers_post)
    ip.run_line_magic("unload_ext", "plasma_nb")
    assert not any(isinstance(t, AwaitPlasma) for t in ip.input_transformers_post)
    ip.run_line_magic("load_ext", "plasma_nb")


@pytest.mark.slow
def test_connect_and_sync_with_a_server(ip: Any, server: Server,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    run(ip, f"URL = '{server.url}'")
    # Several lines in one cell, as "Run all" would run them: each is awaited in turn.
    result = run(ip, f"%plasma connect $URL --schema {TODOS} --name a\n"
                     "%plasma mutate add_todo id=a1 title=Apples\n"
                     "%plasma sync\n")
    assert result.success
    out = capsys.readouterr().out
    assert f"Connected 'a' to {server.url}: 0 todos; 0 pending." in out
    assert f"Synced 'a' with {server.url}: 0 pending." in out
    # A second client sees it straight after its connect returns.
    run(ip, f"%plasma connect $URL --schema {TODOS} --name b")
    assert "Connected 'b' to" in capsys.readouterr().out
    frame = run(ip, "%plasma sql SELECT id, title FROM todos").result
    assert frame.to_dict("records") == [{"id": "a1", "title": "Apples"}]
    run(ip, "%plasma offline")
    assert error_line(ip, capsys, "%plasma sync") == (
        "UsageError: 'b' is offline: run %plasma online first")
    run(ip, "%plasma online")


@pytest.mark.slow
def test_sync_inside_a_function_waits_too(ip: Any, server: Server) -> None:
    run(ip, f"%plasma connect {server.url} --schema {TODOS} --name a")
    run(ip, "%plasma mutate add_todo id=a1 title=Apples")
    run(ip, "def push():\n    %plasma sync\n    return 1\n")
    assert run(ip, "push()").result == 1
    assert run(ip, "%plasma client").result.status().pending == 0
