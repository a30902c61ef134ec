"""The benchmark harness runs, measures and reports; the benchmarks themselves are not tests."""

from __future__ import annotations

import asyncio
import io
import json
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from benchmarks import __main__ as cli
from benchmarks import harness, standalone
from benchmarks.harness import (
    MIN_RUNS,
    REGISTRY,
    Bar,
    Benchmark,
    Check,
    Context,
    Details,
    Report,
    Result,
    Side,
    Skipped,
    benchmark,
    discover,
    format_table,
    max_slowdown,
    min_ratio,
    report_only,
    run_all,
    run_benchmark,
)
from benchmarks.isolation import Isolated
from benchmarks.loadgen import Connection, HTTPError, LoadGenerator, Response, percentile
from benchmarks.report import (
    RUN_RECORD,
    Loaded,
    load_analysis,
    load_results,
    render,
    write_report,
    write_run_record,
)


class FakeClock:
    """The harness's clock, moved only by the fake work: timings are exact."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    clock = FakeClock()
    monkeypatch.setattr(harness, "clock", clock)
    return clock


class Recorder:
    """A trivial benchmark whose subject takes twice as long as its anchor, on a fake
    clock (``clock``) or, without one, really sleeping."""

    def __init__(self, unit: float = 0.002, clock: FakeClock | None = None) -> None:
        self.unit = unit
        self.calls: list[str] = []
        self.closed = False
        self.sleep = clock.sleep if clock is not None else time.sleep

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
        self.sleep(self.unit)

    def subject(self) -> None:
        self.calls.append("subject")
        self.sleep(2 * self.unit)

    def before(self, side: Side) -> None:
        self.calls.append(f"before {side}")
        self.sleep(5 * self.unit)  # untimed: must not show in the results

    def after(self, side: Side) -> None:
        self.calls.append(f"after {side}")

    def close(self) -> None:
        self.closed = True


def make_bench(recorder: Recorder, bar_ratio: float = 0.3) -> Benchmark:
    return Benchmark(
        name="sleepy", setup=recorder.setup, bar=min_ratio(bar_ratio), description="sleeps"
    )


def test_runs_warmup_then_alternates_sides(fake_clock: FakeClock) -> None:
    recorder = Recorder(clock=fake_clock)
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


def test_medians_and_ratio(fake_clock: FakeClock) -> None:
    recorder = Recorder(unit=0.005, clock=fake_clock)
    result = run_benchmark(make_bench(recorder), runs=5)

    assert result.anchor_median == statistics.median(result.anchor)
    assert result.subject_median == statistics.median(result.subject)
    # Each timed call takes its unit; the untimed hooks' 25 ms never count.
    assert result.anchor == pytest.approx([0.005] * 5)
    assert result.subject == pytest.approx([0.010] * 5)
    assert result.ratio == pytest.approx(0.5)
    assert result.passed


def test_real_time_is_measured() -> None:
    result = run_benchmark(make_bench(Recorder(unit=0.002)), runs=5)
    assert min(result.anchor) >= 0.002 and min(result.subject) >= 0.004  # sleeps at least


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


def test_writes_json_and_prints_table(tmp_path: Path, fake_clock: FakeClock) -> None:
    out = io.StringIO()
    report = run_all([make_bench(Recorder(clock=fake_clock))], runs=5, json_dir=tmp_path,
                     out=out)

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


def test_a_missed_bar_and_an_error_are_reported(tmp_path: Path,
                                                fake_clock: FakeClock) -> None:
    def broken() -> Context:
        raise RuntimeError("no database")

    benches = [
        make_bench(Recorder(clock=fake_clock), bar_ratio=0.9),
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


# -- details, checks, report-only bars and skips ---------------------------------------------


def test_details_are_taken_once_after_the_timed_runs_and_checks_decide(
        fake_clock: FakeClock) -> None:
    recorder = Recorder(clock=fake_clock)
    seen: list[int] = []

    def setup() -> Context:
        ctx = recorder.setup()

        def details() -> Details:
            seen.append(len([c for c in recorder.calls if c in ("anchor", "subject")]))
            assert not recorder.closed  # before close
            return Details(figures={"p99 ms": 1.5},
                           checks=[Check("p99 slowdown", 2.5, 2.0)],
                           distributions={"anchor latency": [0.001, 0.002]},
                           notes=["a note"])

        ctx.details = details
        return ctx

    result = run_benchmark(Benchmark("detailed", setup, min_ratio(0.1)), runs=5)

    assert seen == [12]  # 2 warm-ups + 2 x 5 timed runs, then the details, once
    assert result.bar.passes(result.ratio)
    assert not result.passed and result.verdict == "MISS"  # the p99 check missed
    assert result.load is None or len(result.load) == 3
    assert "MISS" in format_table([result])


def test_a_report_only_bar_has_no_verdict_to_miss() -> None:
    bar = report_only()
    assert str(bar) == "report"
    assert bar.passes(0.001)
    result = Result("r", "", bar, 5, [1.0] * 5, [100.0] * 5, {})
    assert result.passed and result.verdict == "REPORT"
    with pytest.raises(ValueError, match="one of"):
        Bar("fastest", 1.0)  # type: ignore[arg-type]


def test_checks() -> None:
    assert Check("p99", 1.9, 2.0).passed
    assert not Check("p99", 2.1, 2.0).passed
    assert Check("rows/s", 10.0, 5.0, kind="min").passed
    assert str(Check("p99", 1.5, 2.0)) == "p99 1.50x (<= 2x)"


def test_a_skipped_setup_is_reported_with_its_reason(tmp_path: Path) -> None:
    def needs_postgres() -> Context:
        raise Skipped("no Postgres at postgresql://nowhere")

    out = io.StringIO()
    report = run_all([Benchmark("pg", needs_postgres, min_ratio(0.5))], runs=5,
                     json_dir=tmp_path, out=out)
    assert report.skipped == {"pg": "no Postgres at postgresql://nowhere"}
    assert not report.errors and not report.results
    assert "pg: SKIPPED no Postgres at postgresql://nowhere" in out.getvalue()


def test_result_json_round_trips() -> None:
    result = Result(
        name="fixed", description="d", bar=max_slowdown(3), runs=5,
        anchor=[1.0, 5.0, 2.0, 4.0, 3.0], subject=[6.0, 2.0, 10.0, 4.0, 8.0],
        warmup={"anchor": 9.0, "subject": 9.0}, order=[["anchor", "subject"]],
        details=Details({"rows": 3}, [Check("p99", 1.0, 2.0)], {"a": [1.0, 2.0]}, ["n"]),
        load=(1.0, 2.0, 3.0),
    )
    data = json.loads(json.dumps(result.to_json({"cpu_count": 2})))
    again = Result.from_json(data)
    assert again.to_json({"cpu_count": 2}) == result.to_json({"cpu_count": 2})
    assert again.machine == {"cpu_count": 2}
    with pytest.raises(ValueError, match="not a benchmark result"):
        Result.from_json({"name": "x"})


# -- the report page -------------------------------------------------------------------------


def fake_result(name: str, anchor: float, subject: float, bar: Bar,
                checks: list[Check] | None = None,
                started_at: str = "2026-01-01T00:00:00+00:00") -> dict[str, Any]:
    result = Result(
        name=name, description=f"{name} does things", bar=bar, runs=5,
        anchor=[anchor * f for f in (1.0, 0.9, 1.1, 1.05, 0.95)],
        subject=[subject * f for f in (1.0, 0.9, 1.1, 1.05, 0.95)],
        warmup={"anchor": anchor, "subject": subject}, started_at=started_at,
        details=Details(figures={"rows": 10_000}, checks=checks or [],
                        distributions={"anchor latency": [0.001, 0.002, 0.004],
                                       "subject latency": [0.002, 0.003, 0.009]}
                        if name == "fast" else {}),
        load=(3.5, 2.0, 1.0),
    )
    return result.to_json({"platform": "Linux-test", "cpu_count": 2, "python": "3.11.7",
                           "implementation": "CPython", "sqlite": "3.40.1",
                           "load": [3.5, 2.0, 1.0], "git_commit": "0123456789abcdef"})


def write_fake_results(directory: Path) -> None:
    directory.mkdir()
    results = [
        fake_result("fast", 0.010, 0.012, min_ratio(0.5), [Check("p99 slowdown", 1.2, 2.0)],
                    started_at="2026-01-01T01:00:00+00:00"),
        fake_result("slow", 0.010, 0.050, min_ratio(0.5),
                    started_at="2026-01-01T00:05:00+00:00"),
        fake_result("figures", 1.0, 2.0, report_only(), started_at="2025-12-31T00:00:00+00:00"),
    ]
    for data in results:
        (directory / f"{data['name']}.json").write_text(json.dumps(data))
    (directory / "browser_cold_start.json").write_text(json.dumps(
        {"benchmark": "browser_cold_start", "cold": {"median": 12.5, "min": 11.0, "max": 14.0},
         "runs": [{"cold": 12.5}]}))
    (directory / RUN_RECORD).write_text(json.dumps({
        "started_at": "2026-01-01T00:00:00+00:00", "finished_at": "2026-01-01T00:10:00+00:00",
        "runs": 5, "order": ["slow", "fast", "figures"],
        "results": {"slow": "2026-01-01T00:05:00+00:00", "fast": "2026-01-01T00:06:00+00:00"},
        "errors": {"broken": "RuntimeError: no database"},
        "skipped": {"pg": "no Postgres"},
        "standalone": {"browser_cold_start": {"status": "ok", "reason": "", "seconds": 80},
                       "browser_other": {"status": "skipped", "reason": "needs chromium"}},
    }))


def test_the_report_writes_the_table_and_png_plots(tmp_path: Path) -> None:
    results = tmp_path / "results"
    write_fake_results(results)
    analysis = tmp_path / "analysis.md"
    analysis.write_text("# Analysis\n\n## slow\n\nSQLite's fsync limits it.\n\n## fast\n\nok\n")
    doc = tmp_path / "docs" / "performance.md"
    images = tmp_path / "docs" / "performance"

    assert write_report(results, doc, images, analysis=analysis) == doc

    text = doc.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| [")]
    assert [row.split("]")[0][3:] for row in rows] == ["slow", "fast", "figures"]  # run order
    slow, fast, figures = rows
    assert "| 0.20 | ratio >= 0.50 | **miss** | 2 CPUs, load 3.5 |" in slow
    assert "| 0.83 | ratio >= 0.50; p99 slowdown <= 2x | pass | 2 CPUs, load 3.5; later run |" \
        in fast
    assert "| 0.50 | report | report | 2 CPUs, load 3.5; earlier run |" in figures
    assert "earlier run" not in slow
    assert "1 pass, 1 miss, 1 report." in text
    assert "`pg`: **skipped** in the last `--all` run: no Postgres" in text
    assert "`broken`: **failed** in the last `--all` run: RuntimeError: no database" in text
    assert "SQLite's fsync limits it." in text
    assert "cold: median 12.5 (min 11, max 14)" in text
    assert "browser_other" in text and "**skipped**: needs chromium" in text
    assert "Linux-test, 2 CPUs" in text and "**Noisy**" in text
    assert "python -m benchmarks --report" in text
    for name in ("ratios", "runs", "fast"):
        png = images / f"{name}.png"
        assert f"(performance/{name}.png)" in text
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (images / "slow.png").exists()  # no distributions, no plot


def test_report_cli_rerenders_saved_results(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    write_fake_results(results)
    doc = tmp_path / "performance.md"
    argv = ["--report", "--json-dir", str(results), "--doc", str(doc),
            "--images", str(tmp_path / "img")]
    assert cli.main(argv) == 0
    assert "| [fast](#fast) |" in doc.read_text()
    with pytest.raises(SystemExit):
        cli.main(["--report", "--all"])
    assert "--report re-renders the saved results" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="no results folder"):
        load_results(tmp_path / "nothing")
    (results / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json is not JSON"):
        load_results(results)


def test_analysis_sections_by_name(tmp_path: Path) -> None:
    path = tmp_path / "analysis.md"
    path.write_text("# Title\n\nintro\n\n## one\n\nfirst\nmore\n\n## two\nsecond\n")
    assert load_analysis(path) == {"one": "first\nmore", "two": "second"}
    assert load_analysis(tmp_path / "missing.md") == {}


# -- standalone scripts ----------------------------------------------------------------------


def test_standalone_scripts_are_discovered_and_browser_ones_skip_with_a_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    main = 'if __name__ == "__main__":\n    main()\n'
    for name in ("bench_x", "harness", "report", "browser_boot", "widget_size", "_private",
                 "__main__"):
        (tmp_path / f"{name}.py").write_text(main)
    (tmp_path / "browser_helpers.py").write_text("def helper(): ...\n")  # not a script
    assert standalone.discover_scripts(tmp_path) == ["browser_boot", "widget_size"]
    assert "browser_cold_start" in standalone.discover_scripts()
    assert not {"harness", "loadgen", "report", "plots"} & set(standalone.discover_scripts())

    monkeypatch.setattr(standalone, "CHROMIUM", str(tmp_path / "no-chromium"))
    outcome = standalone.run_script("browser_boot", tmp_path / "out")
    assert outcome.status == "skipped"
    assert "needs Debian's chromium" in outcome.reason
    assert standalone.requirement("widget_size") is None


def test_a_failing_script_is_reported_with_its_output(tmp_path: Path) -> None:
    outcome = standalone.run_script("no_such_script", tmp_path)
    assert outcome.status == "failed"
    assert "exit status 1" in outcome.reason and "No module named" in outcome.reason


# -- the raw HTTP load generator -------------------------------------------------------------


class TinyServer:
    """An HTTP/1.1 server on raw asyncio streams: echoes POST bodies (chunked when the path
    says so), answers 500 on /fail, closes the connection after /close."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> TinyServer:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                lines = head.decode().split("\r\n")
                _, path, _ = lines[0].split(" ")
                length = next(int(line.split(":")[1]) for line in lines
                              if line.lower().startswith("content-length"))
                body = await reader.readexactly(length)
                self.requests += 1
                status = "500 Internal Server Error" if path == "/fail" else "200 OK"
                if path == "/chunked":
                    half = len(body) // 2
                    chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c)
                                      for c in (body[:half], body[half:]) if c)
                    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 + chunks + b"0\r\n\r\n")
                else:
                    close = b"Connection: close\r\n" if path == "/close" else b""
                    writer.write(f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n"
                                 .encode() + close + b"\r\n" + body)
                await writer.drain()
                if path in ("/close", "/drop"):  # /drop: as an idle keep-alive timeout does
                    return
        finally:
            writer.close()


async def test_load_generator_keeps_connections_alive_and_times_every_request() -> None:
    async with TinyServer() as server:
        echoed: list[bytes] = []

        def check(response: Response) -> None:
            assert response.status == 200
            echoed.append(response.body)

        generator = LoadGenerator("127.0.0.1", server.port, clients=4, check=check)
        await generator.open()
        first = await generator.run(
            5, lambda i, n: ("POST", "/echo", json.dumps({"client": i, "n": n}).encode()))
        second = await generator.run(3, lambda i, n: ("POST", "/chunked", b"x" * (i + n + 1)))
        await generator.close()

    assert first.requests == 20 and first.statuses == {200: 20}
    assert second.requests == 12
    assert all(t > 0 for t in first.latencies) and first.seconds > 0
    assert first.throughput == first.requests / first.seconds
    assert {json.loads(b)["client"] for b in echoed[:20]} == {0, 1, 2, 3}
    assert sorted(len(b) for b in echoed[20:]) == sorted(i + n + 1 for i in range(4)
                                                         for n in range(3))
    # keep-alive: one connection per client for both runs
    assert server.connections == 4 and server.requests == 32
    assert [c.opened for c in generator.connections] == [1, 1, 1, 1]


async def test_load_generator_reopens_closed_connections_and_raises_on_errors() -> None:
    async with TinyServer() as server:
        connection = Connection("127.0.0.1", server.port)
        for _ in range(3):
            response = await connection.request("POST", "/close", b"bye")
            assert response.status == 200 and response.headers["connection"] == "close"
        assert connection.opened == 3
        await connection.request("POST", "/drop", b"1")  # closed without saying so
        await asyncio.sleep(0.2)  # the server's FIN arrives while the connection is idle
        assert (await connection.request("POST", "/echo", b"2")).body == b"2"
        assert connection.opened == 5
        await connection.close()

        generator = LoadGenerator("127.0.0.1", server.port, clients=2)
        await generator.open()
        with pytest.raises(HTTPError, match="expected 200, got 500"):
            await generator.run(2, lambda i, n: ("POST", "/fail", b"{}"))
        await generator.close()


def test_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([3.0], 0.99) == 3.0
    with pytest.raises(ValueError, match="between 0 and 1"):
        percentile(values, 99)
    with pytest.raises(ValueError, match="no values"):
        percentile([], 0.5)


# -- one process per benchmark ---------------------------------------------------------------


def test_an_isolated_benchmark_that_fails_or_hangs_is_an_error(tmp_path: Path) -> None:
    out = io.StringIO()
    def never() -> Context:  # the child process is told the name; it has no such setup
        raise AssertionError("not run in this process")

    ghost = Benchmark("no_such_benchmark", never, min_ratio(0.5))
    with pytest.raises(RuntimeError, match=r"wrote no result \(exit status 2\).*unknown"):
        Isolated(tmp_path, out=out)(ghost, 5)
    with pytest.raises(TimeoutError, match="still running after 0.01 s"):
        Isolated(tmp_path, timeout=0.01, out=out)(ghost, 5)
    report = run_all([ghost], runs=5, json_dir=tmp_path, out=out,
                     runner=Isolated(tmp_path, out=out))
    assert isinstance(report.errors["no_such_benchmark"], RuntimeError)


def test_the_run_record_keeps_what_results_do_not_say(tmp_path: Path) -> None:
    result = Result("r", "", min_ratio(0.5), 5, [1.0] * 5, [1.0] * 5, {},
                    started_at="2026-01-01T00:00:00+00:00")
    report = Report({"cpu_count": 2}, [result], {"broken": RuntimeError("no database")},
                    {"pg": "no Postgres"})
    outcome = standalone.Outcome("browser_x", "skipped", "needs chromium")
    path = write_run_record(tmp_path, report, [outcome], runs=5,
                            started_at="2026-01-01T00:00:00+00:00")
    record = json.loads(path.read_text())
    assert path.name == RUN_RECORD
    assert record["order"] == ["r"]
    assert record["results"] == {"r": "2026-01-01T00:00:00+00:00"}
    assert record["errors"] == {"broken": "RuntimeError: no database"}
    assert record["skipped"] == {"pg": "no Postgres"}
    assert record["standalone"]["browser_x"]["status"] == "skipped"
    assert load_results(tmp_path).run == record


def test_a_missed_check_is_named_in_the_table() -> None:
    data = fake_result("tail", 0.010, 0.012, min_ratio(0.5), [Check("p99 slowdown", 2.3, 2.0)])
    text = render(Loaded(results=[Result.from_json(data)]), {})
    assert "| 0.83 | ratio >= 0.50; p99 slowdown <= 2x | **miss** (p99 slowdown 2.30x) |" in text
    assert "0 pass, 1 miss, 0 report." in text
