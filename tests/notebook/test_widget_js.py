"""The widgets' browser code, run in Node against a minimal fake DOM (js/render.mjs)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

STATIC = Path(__file__).resolve().parents[2] / "plasma_nb" / "notebook" / "static"
SCRIPT = Path(__file__).with_name("js") / "render.mjs"


@pytest.fixture(scope="module")
def seen() -> dict[str, object]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("needs Node.js")
    done = subprocess.run(
        [node, str(SCRIPT), str(STATIC / "live_table.js"), str(STATIC / "sync_status.js")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_the_modules_import_nothing() -> None:
    for path in STATIC.glob("*.js"):
        text = path.read_text()
        assert "import " not in text.split("export default")[0].replace("// ", ""), path
        assert "http" not in text, path  # no CDN


def test_live_table_draws_only_the_window(seen: dict[str, object]) -> None:
    assert seen["header"] == ["", "id", "title", "n"]
    assert seen["rows"] == 50
    assert seen["pendingRows"] == ["k1"]
    assert seen["footer"] == "1,000 rows · 1 pending · version 3"
    assert seen["cells"] == [["NULL", "plasma-live-td plasma-null"],
                             ["true", "plasma-live-td plasma-bool"],
                             ["1.5", "plasma-live-td plasma-num"]]


def test_scrolling_asks_for_one_window_per_frame(seen: dict[str, object]) -> None:
    assert seen["askedInside"] == 0
    assert seen["askedViewport"] == ["viewport", [481, 50]]  # centred on the visible rows
    assert seen["saved"] == 1


def test_header_clicks_cycle_the_sort(seen: dict[str, object]) -> None:
    assert seen["sortAfterOneClick"] == ["title", "asc"]
    assert seen["sortAfterTwoClicks"] == ["title", "desc"]


def test_rejections_show_and_can_be_dismissed(seen: dict[str, object]) -> None:
    assert seen["rejected"] == ["✗ rename was rejected: no todo with id 't1'", "dismiss"]
    assert seen["sent"] == [{"type": "dismiss"}]


def test_sync_status_buttons(seen: dict[str, object]) -> None:
    assert seen["status"] == "online"
    assert seen["details"] == "http://x · 2 pending · last push never · last pull 0 s ago"
    assert seen["statusSent"] == [{"action": "sync"}, {"action": "offline"}]
    assert seen["statusOffline"] == "offline"
    assert seen["modeLabel"] == "Go online"
    assert seen["syncDisabled"] is True
