"""docs/magics.md documents every %plasma command, every option and every setting; the
other notebook pages exist and are linked from where users look."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from plasma_nb.notebook.commands import COMMANDS

DOCS = Path(__file__).resolve().parents[2] / "docs"
MAGICS = (DOCS / "magics.md").read_text()


def sections() -> dict[str, str]:
    """The text under each ``### `` heading, by heading."""
    found: dict[str, str] = {}
    for part in re.split(r"^### ", MAGICS, flags=re.M)[1:]:
        heading, _, body = part.partition("\n")
        found[heading] = heading + "\n" + body.split("\n## ")[0]
    return found


def section_of(command: str) -> str:
    form = "%%plasma sql" if command == "sql" else f"%plasma {command}"
    matches = [text for heading, text in sections().items() if f"`{form}" in heading
               or f"{form} " in heading]
    assert matches, f"docs/magics.md has no ### heading for `{form}`"
    return matches[0]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_and_option_is_documented(command: str) -> None:
    text = section_of(command)
    for action in COMMANDS[command]._actions:
        for option in action.option_strings:
            assert f"`{option}" in text or f" {option} " in text or f"[{option}" in text, (
                f"docs/magics.md: `{option}` of %plasma {command} is not documented")
        if not action.option_strings and action.metavar:
            assert str(action.metavar) in text, (
                f"docs/magics.md: {action.metavar} of %plasma {command} is not documented")


def test_the_sql_capture_forms_and_parameters_are_documented() -> None:
    text = section_of("sql")
    for form in ("`VAR << SQL`", "`VAR= << SQL`", "`:name`", "--engine duckdb", "--live"):
        assert form in text


def test_every_setting_is_documented() -> None:
    from plasma_nb.notebook.magics import PlasmaMagics

    settings = PlasmaMagics.class_traits(config=True)
    assert settings
    for name, trait in settings.items():
        row = re.search(rf"^\| `{name}` \| `?([^|`]*)`? \|", MAGICS, flags=re.M)
        assert row, f"docs/magics.md: PlasmaMagics.{name} is not in the settings table"
        assert row.group(1).strip().strip('"') == str(trait.default_value), name


def test_the_checker_would_notice_a_missing_option(monkeypatch: pytest.MonkeyPatch) -> None:
    COMMANDS["status"].add_argument("--undocumented-flag", action="store_true")
    try:
        with pytest.raises(AssertionError, match="--undocumented-flag"):
            test_every_command_and_option_is_documented("status")
    finally:
        COMMANDS["status"]._actions.pop()
        COMMANDS["status"]._option_string_actions.pop("--undocumented-flag")


@pytest.mark.parametrize("page", ["magics.md", "widgets.md", "duckdb.md", "notebook.md"])
def test_the_notebook_pages_exist_and_link_each_other(page: str) -> None:
    text = (DOCS / page).read_text()
    assert text.startswith("# ")
    links = set(re.findall(r"\]\(([a-z-]+\.md)\)", text))
    for link in links:
        assert (DOCS / link).exists(), f"{page} links to missing {link}"
