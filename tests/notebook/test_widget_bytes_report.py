"""benchmarks/widget_bytes.py: only the window crosses, one message per refresh."""

from __future__ import annotations

from benchmarks.widget_bytes import measure


async def test_the_report_at_a_small_size() -> None:
    report = await measure(2_000)
    scenarios = report["scenarios"]
    assert report["page_size"] == 50
    for name, scenario in scenarios.items():
        assert scenario["rows_sent"] <= 50, name
        assert scenario.get("messages", 1) == 1, name
    assert scenarios["edit out of view"]["keys"] == ["version"]
    assert scenarios["edit out of view"]["bytes"] < 100
    assert scenarios["scroll"]["keys"] == ["window", "window_offset"]
    assert scenarios["open"]["bytes_without_esm_css"] < 4_000
