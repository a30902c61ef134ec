"""The benchmark harness runs, measures and reports; the benchmarks themselves are not tests."""

from __future__ import annotations

import io
import json
import statistics
import time
from pathlib import Path

import pytest

from benchmarks import __main__ as cli
from benchmarks.harness import (
    MIN_RUNS,
    REGISTRY,
    Benchmark,
    Context,
    Result,
    Side,
    benchmark,
    discover,
    format_table,
    max_slowdown,
    min_ratio,
    run_all,
    run_benchmark,
)


class Recorder:
    """A trivial benchmark whose subject sleeps twice as long as its anchor."""

    def __init__(self, unit: float = 0.002) -> None:
        self.unit = unit
        self.calls: list[str] = []
        self.closed = False

    def setup(self) -> Context:
        return Context(
            anchor=self.anchor,
            subject=self.subject,
            before_run=self.before,
            after_run=self.after,
            close=self.close,
        )

    def anchor(self) -> None:
        self.calls.append("anchor")
        time.sleep(self.unit)

    def subject(self) -> None:
        self.calls.append("subject")
        time.sleep(2 * self.unit)

    def before(self, side: Side) -> None:
        self.calls.append(f"before {side}")
        time.sleep(5 * self.unit)  # untimed: must not show in the results

    def after(self, side: Side) -> None:
        self.calls.append(f"after {side}")

    def close(self) -> None:
        self.closed = True


def make_bench(recorder: Recorder, bar_ratio: float = 0.3) -> Benchmark:
    return Benchmark(
        name="sleepy", setup=recorder.setup, bar=min_ratio(bar_ratio), description="sleeps"
    )


def test_runs_warmup_then_alternates_sides() -> None:
    recorder = Recorder()
    result = run_benchmark(make_bench(recorder), runs=5)

    timed = [c for c in recorder.calls if c in ("anchor", "subject")]
    # One warmup each, then rounds alternating which side goes first.
    assert timed == ["anchor", "subject"] + ["anchor", "subject", "subject", "anchor"] * 2 + [
        "anchor",
        "subject",
    ]
    assert recorder.calls[:3] == ["before anchor", "anchor", "after anchor"]
    assert recorder.closed
    assert result.order[:2] == [["anchor", "subject"], ["subject", "anchor"]]
    assert len(result.anchor) == len(result.subject) == 5
    assert set(result.warmup) == {"anchor", "subject"}


def test_medians_and_ratio() -> None:
    recorder = Recorder(unit=0.005)
    result = run_benchmark(make_bench(recorder), runs=5)

    assert result.anchor_median == statistics.median(result.anchor)
    assert result.subject_median == statistics.median(result.subject)
    assert result.ratio == pytest.approx(result.anchor_median / result.subject_median)
    # Each timed call sleeps its unit; the untimed hooks' 25 ms never count.
    assert 0.005 <= result.anchor_median < 0.02
    assert 0.010 <= result.subject_median < 0.03
    assert 0.25 < result.ratio < 0.9
    assert result.passed


def test_fixed_timings_give_exact_statistics() -> None:
    result = Result(
        name="fixed",
        description="",
        bar=max_slowdown(3),
        runs=5,
        anchor=[1.0, 5.0, 2.0, 4.0, 3.0],
        subject=[6.0, 2.0, 10.0, 4.0, 8.0],
        warmup={"anchor": 9.0, "subject": 9.0},
    )
    assert result.anchor_median == 3.0
    assert result.subject_median == 6.0
    assert result.ratio == 0.5
    assert result.passed  # 6 <= 3 * 3
    assert not Result(**{**vars(result), "subject": [10.0] * 5}).passed  # 10 > 3 * 3


def test_bars() -> None:
    assert min_ratio(0.5).passes(0.5)
    assert not min_ratio(0.5).passes(0.49)
    assert max_slowdown(4).passes(0.25)
    assert not max_slowdown(4).passes(0.24)
    assert str(min_ratio(0.5)) == "ratio >= 0.50"
    assert str(max_slowdown(3)) == "subject <= 3x anchor"
    with pytest.raises(ValueError, match="positive, got 0"):
        min_ratio(0)


def test_writes_json_and_prints_table(tmp_path: Path) -> None:
    out = io.StringIO()
    report = run_all([make_bench(Recorder())], runs=5, json_dir=tmp_path, out=out)

    assert report.ok
    [result] = report.results
    data = json.loads((tmp_path / "sleepy.json").read_text())
    assert data["name"] == "sleepy"
    assert data["runs"] == 5
    assert data["anchor"]["times"] == result.anchor
    assert data["subject"]["times"] == result.subject
    assert data["anchor"]["median"] == result.anchor_median
    assert data["ratio"] == result.ratio
    assert data["bar"] == {"kind": "min_ratio", "value": 0.3, "text": "ratio >= 0.30"}
    assert data["passed"] is True
    assert {"platform", "cpu_count", "python", "sqlite"} <= set(data["machine"])

    text = out.getvalue()
    assert "SQLite" in text and "CPUs" in text
    row = next(line for line in text.splitlines() if line.startswith("sleepy"))
    assert "ratio >= 0.30" in row and row.endswith("PASS")


def test_a_missed_bar_and_an_error_are_reported(tmp_path: Path) -> None:
    def broken() -> Context:
        raise RuntimeError("no database")

    benches = [
        make_bench(Recorder(), bar_ratio=0.9),
        Benchmark(name="broken", setup=broken, bar=min_ratio(0.5)),
    ]
    out = io.StringIO()
    report = run_all(benches, runs=5, json_dir=tmp_path, out=out)

    assert not report.ok
    assert "MISS" in format_table(report.results)
    assert isinstance(report.errors["broken"], RuntimeError)
    assert "broken: ERROR RuntimeError: no database" in out.getvalue()


def test_async_sides_are_timed_in_one_loop() -> None:
    import asyncio

    loops: set[int] = set()

    async def setup() -> Context:
        loops.add(id(asyncio.get_running_loop()))

        async def anchor() -> None:
            loops.add(id(asyncio.get_running_loop()))
            await asyncio.sleep(0.002)

        async def subject() -> None:
            loops.add(id(asyncio.get_running_loop()))
            await asyncio.sleep(0.004)

        return Context(anchor=anchor, subject=subject)

    result = run_benchmark(Benchmark("async", setup, min_ratio(0.1)), runs=5)
    assert len(loops) == 1
    assert result.subject_median >= 0.004


def test_an_unawaited_coroutine_is_refused() -> None:
    async def work() -> None:
        pass

    def setup() -> Context:
        return Context(anchor=lambda: work(), subject=lambda: None)

    with pytest.raises(TypeError, match="returned an awaitable: declare it with `async def`"):
        run_benchmark(Benchmark("lambda", setup, min_ratio(0.1)), runs=5)


def test_runs_below_the_minimum_are_refused() -> None:
    with pytest.raises(ValueError, match=f"at least {MIN_RUNS}, got 4"):
        run_benchmark(make_bench(Recorder()), runs=4)


def test_registration_names_and_duplicates() -> None:
    registry: dict[str, Benchmark] = {}

    @benchmark(bar=min_ratio(0.5), registry=registry)
    def insert_rows() -> Context:
        """Insert rows.

        More detail.
        """
        raise NotImplementedError

    assert registry == {"insert_rows": insert_rows}
    assert insert_rows.description == "Insert rows."
    with pytest.raises(ValueError, match="'insert_rows' is registered twice"):
        benchmark("insert_rows", bar=min_ratio(0.5), registry=registry)(lambda: None)


def test_discovery_imports_cleanly_and_cli_lists(capsys: pytest.CaptureFixture[str]) -> None:
    before = dict(REGISTRY)
    assert discover() is REGISTRY
    assert "sleepy" not in REGISTRY  # the fixture above is never registered globally
    assert set(before) <= set(REGISTRY)

    assert cli.main(["--list"]) == 0
    with pytest.raises(SystemExit) as exc:
        cli.main(["--runs", "3", "--all"])
    assert exc.value.code == 2
    assert "at least 5 runs" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["no_such_benchmark"])
    assert "unknown benchmark(s) 'no_such_benchmark'" in capsys.readouterr().err
