"""The benchmark harness: plasma_nb's path (the *subject*) against a raw *anchor*.

A benchmark is a setup function registered with :func:`benchmark`. It returns a
:class:`Context` whose ``anchor()`` and ``subject()`` each do one unit of the same work: the
anchor the plainest way (raw ``sqlite3``, a bare Starlette route, ...), the subject through
plasma_nb. Example, in ``benchmarks/bench_example.py``::

    from benchmarks.harness import Context, benchmark, min_ratio

    @benchmark(bar=min_ratio(0.50))
    def insert_rows() -> Context:
        \"\"\"Insert 1,000 rows: raw sqlite3 against the client engine.\"\"\"
        ...
        return Context(anchor=raw_insert, subject=plasma_insert, before_run=reset)

The runner warms each side up once, then times ``runs`` rounds in one process, alternating
which side goes first, with :func:`time.perf_counter`. ``before_run``/``after_run`` are called
around every timed call (untimed) with the side's name. Any of the callables may be ``async
def``: the whole benchmark then runs in one event loop, and an async call is timed inside it.

``ratio = anchor_median / subject_median`` is plasma_nb's throughput as a fraction of the
anchor's. A bar is either :func:`min_ratio` (``ratio >= r``) or :func:`max_slowdown`
(``subject <= k * anchor``, the same as ``ratio >= 1/k``, said the other way round), or
:func:`report_only` for a figure that is reported with no bar to pass.

Make a unit of work long enough to time (ten milliseconds or more); loop inside it if need be.

After the timed rounds, ``Context.details()`` (untimed, optional) may return :class:`Details`:
more figures (a p99 latency, memory per row), :class:`Check` bars on them (``p99 <= 2x the
anchor's``: the benchmark passes only if its ratio and every check pass), and distributions to
plot (latency quantiles, say). A setup that cannot run here (no Postgres, no browser) raises
:class:`Skipped` with the reason: the report lists it as skipped, never silently absent.

:func:`run_all` prints the table; ``benchmarks/report.py`` renders the results (or their saved
JSON) as ``docs/performance.md`` with plots.
"""

from __future__ import annotations

import asyncio
import datetime
import gc
import importlib
import inspect
import json
import pkgutil
import statistics
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO, TypeAlias

from benchmarks.machine import format_machine, load_average, machine_info

__all__ = [
    "REGISTRY",
    "Bar",
    "Benchmark",
    "Check",
    "Context",
    "Details",
    "Report",
    "Result",
    "Side",
    "Skipped",
    "benchmark",
    "discover",
    "format_details",
    "format_machine",
    "format_table",
    "load_average",
    "machine_info",
    "max_slowdown",
    "min_ratio",
    "report_only",
    "run_all",
    "run_benchmark",
    "write_json",
]

MIN_RUNS = 5
DEFAULT_RUNS = 7
#: What times the runs (the harness's tests swap in a clock they drive).
clock: Callable[[], float] = time.perf_counter

Side: TypeAlias = Literal["anchor", "subject"]
Work: TypeAlias = Callable[[], object]
RunHook: TypeAlias = Callable[[Side], object]


BarKind: TypeAlias = Literal["min_ratio", "max_slowdown", "report"]
BAR_KINDS: tuple[BarKind, ...] = ("min_ratio", "max_slowdown", "report")


@dataclass(frozen=True)
class Bar:
    """The minimum ``ratio`` (anchor time / subject time) a benchmark must reach; a
    ``report`` bar has none (the figures are reported, nothing is passed or missed)."""

    kind: BarKind
    value: float

    def __post_init__(self) -> None:
        if self.kind not in BAR_KINDS:
            raise ValueError(f"a bar's kind is one of {BAR_KINDS}, got {self.kind!r}")
        if self.kind != "report" and not self.value > 0:
            raise ValueError(f"a bar's value must be positive, got {self.value!r}")

    @property
    def min_ratio(self) -> float:
        if self.kind == "report":
            return 0.0
        return self.value if self.kind == "min_ratio" else 1 / self.value

    def passes(self, ratio: float) -> bool:
        return ratio >= self.min_ratio

    def __str__(self) -> str:
        if self.kind == "report":
            return "report"
        if self.kind == "min_ratio":
            return f"ratio >= {self.value:.2f}"
        return f"subject <= {self.value:g}x anchor"


def min_ratio(value: float) -> Bar:
    """Bar: ``anchor_time / subject_time >= value`` (0.5: at least half the anchor's speed)."""
    return Bar("min_ratio", value)


def max_slowdown(factor: float) -> Bar:
    """Bar: ``subject_time <= factor * anchor_time``."""
    return Bar("max_slowdown", factor)


def report_only() -> Bar:
    """No bar: the ratio and the details are reported (a figure the user sees, say)."""
    return Bar("report", 0.0)


class Skipped(Exception):
    """Raised by a setup that cannot run on this machine; the message says why."""


@dataclass(frozen=True)
class Check:
    """A bar on a figure other than the ratio: ``value <= limit`` (or ``>=`` for "min")."""

    name: str
    value: float
    limit: float
    kind: Literal["max", "min"] = "max"
    unit: str = "x"

    @property
    def passed(self) -> bool:
        return self.value <= self.limit if self.kind == "max" else self.value >= self.limit

    def __str__(self) -> str:
        op = "<=" if self.kind == "max" else ">="
        return f"{self.name} {self.value:.2f}{self.unit} ({op} {self.limit:g}{self.unit})"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "limit": self.limit,
                "kind": self.kind, "unit": self.unit, "passed": self.passed}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Check:
        return cls(data["name"], float(data["value"]), float(data["limit"]),
                   data.get("kind", "max"), data.get("unit", "x"))


@dataclass
class Details:
    """What a benchmark reports beside its timings (see the module's docstring).

    ``figures`` are named numbers or short texts; ``distributions`` are named series of
    seconds, one per side where that applies (``{"anchor": [...], "subject": [...]}``),
    plotted by the report; ``notes`` are sentences for the report page."""

    figures: dict[str, float | int | str | bool | None] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    distributions: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class Context:
    """What a benchmark's setup returns: the two sides and their untimed hooks."""

    anchor: Work
    subject: Work
    before_run: RunHook | None = None
    after_run: RunHook | None = None
    close: Callable[[], object] | None = None
    #: Called once after the timed rounds, before ``close``: returns :class:`Details`.
    details: Callable[[], Details | Awaitable[Details]] | None = None


@dataclass(frozen=True)
class Benchmark:
    name: str
    setup: Callable[[], Context | Awaitable[Context]]
    bar: Bar
    description: str = ""


REGISTRY: dict[str, Benchmark] = {}


def benchmark(
    name: str | None = None,
    *,
    bar: Bar,
    description: str | None = None,
    registry: dict[str, Benchmark] = REGISTRY,
) -> Callable[[Callable[[], Any]], Benchmark]:
    """Register a setup function as a benchmark; the name defaults to the function's."""

    def register(setup: Callable[[], Any]) -> Benchmark:
        bench_name = name or setup.__name__
        if bench_name in registry:
            raise ValueError(f"benchmark {bench_name!r} is registered twice")
        doc = inspect.getdoc(setup) or ""
        bench = Benchmark(
            name=bench_name,
            setup=setup,
            bar=bar,
            # The docstring's first paragraph, however many lines it is wrapped on.
            description=(description if description is not None
                         else " ".join(doc.partition("\n\n")[0].split())),
        )
        registry[bench_name] = bench
        return bench

    return register


def discover(package: str = "benchmarks") -> dict[str, Benchmark]:
    """Import every ``<package>.bench_*`` module; return the registry they filled."""
    pkg = importlib.import_module(package)
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("bench_"):
            importlib.import_module(f"{package}.{info.name}")
    return REGISTRY


@dataclass
class Result:
    name: str
    description: str
    bar: Bar
    runs: int
    anchor: list[float]
    subject: list[float]
    warmup: dict[str, float]
    order: list[list[str]] = field(default_factory=list)
    started_at: str = ""
    details: Details = field(default_factory=Details)
    #: The 1, 5 and 15 minute load averages when the benchmark started (a noisy machine
    #: shows here); None where the platform has none.
    load: tuple[float, float, float] | None = None
    machine: dict[str, Any] | None = None  # filled in when read back from JSON

    @property
    def anchor_median(self) -> float:
        return statistics.median(self.anchor)

    @property
    def subject_median(self) -> float:
        return statistics.median(self.subject)

    @property
    def ratio(self) -> float:
        subject = self.subject_median
        return self.anchor_median / subject if subject > 0 else float("inf")

    @property
    def passed(self) -> bool:
        return self.bar.passes(self.ratio) and all(c.passed for c in self.details.checks)

    @property
    def verdict(self) -> str:
        """PASS or MISS; REPORT for a report-only benchmark without checks."""
        if self.bar.kind == "report" and not self.details.checks:
            return "REPORT"
        return "PASS" if self.passed else "MISS"

    def to_json(self, machine: dict[str, Any]) -> dict[str, Any]:
        def side(times: list[float]) -> dict[str, Any]:
            return {
                "median": statistics.median(times),
                "min": min(times),
                "max": max(times),
                "times": times,
            }

        return {
            "name": self.name,
            "description": self.description,
            "started_at": self.started_at,
            "runs": self.runs,
            "unit": "seconds",
            "anchor": side(self.anchor),
            "subject": side(self.subject),
            "warmup": self.warmup,
            "order": self.order,
            "ratio": self.ratio,
            "bar": {"kind": self.bar.kind, "value": self.bar.value, "text": str(self.bar)},
            "passed": self.passed,
            "verdict": self.verdict,
            "figures": self.details.figures,
            "checks": [c.to_json() for c in self.details.checks],
            "distributions": self.details.distributions,
            "notes": self.details.notes,
            "load": list(self.load) if self.load is not None else None,
            "machine": machine,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Result:
        """A result as :meth:`to_json` wrote it (older files lack the details: fine)."""
        try:
            bar = data["bar"]
            load = data.get("load")
            return cls(
                name=data["name"],
                description=data.get("description", ""),
                bar=Bar(bar["kind"], float(bar["value"])),
                runs=int(data["runs"]),
                anchor=[float(t) for t in data["anchor"]["times"]],
                subject=[float(t) for t in data["subject"]["times"]],
                warmup=data.get("warmup", {}),
                order=data.get("order", []),
                started_at=data.get("started_at", ""),
                details=Details(
                    figures=dict(data.get("figures") or {}),
                    checks=[Check.from_json(c) for c in data.get("checks") or []],
                    distributions={k: [float(v) for v in vs]
                                   for k, vs in (data.get("distributions") or {}).items()},
                    notes=list(data.get("notes") or []),
                ),
                load=(float(load[0]), float(load[1]), float(load[2])) if load else None,
                machine=data.get("machine"),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ValueError(
                f"not a benchmark result (as Result.to_json writes it): {exc!r}"
            ) from None


class _Driver:
    """Calls sync and async callables alike; one event loop for the whole benchmark."""

    def __init__(self) -> None:
        self._runner: asyncio.Runner | None = None

    def call(self, fn: Callable[..., object], *args: object) -> Any:
        result = fn(*args)
        if inspect.isawaitable(result):
            return self._loop().run(_awaited(result))
        return result

    def time(self, fn: Work) -> float:
        gc.collect()
        if inspect.iscoroutinefunction(fn):
            return float(self._loop().run(_timed_async(fn)))
        start = clock()
        result = fn()
        elapsed = clock() - start
        if inspect.isawaitable(result):
            # Its time would leave out the awaiting; an `async def` is timed inside the loop.
            if inspect.iscoroutine(result):
                result.close()
            raise TypeError(f"{fn!r} returned an awaitable: declare it with `async def`")
        return elapsed

    def _loop(self) -> asyncio.Runner:
        if self._runner is None:
            self._runner = asyncio.Runner()
        return self._runner

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


async def _timed_async(fn: Callable[[], Awaitable[object]]) -> float:
    start = clock()
    await fn()
    return clock() - start


def run_benchmark(bench: Benchmark, runs: int = DEFAULT_RUNS) -> Result:
    """Warm up each side once, then time ``runs`` rounds, alternating which side goes first."""
    if runs < MIN_RUNS:
        raise ValueError(f"runs must be at least {MIN_RUNS}, got {runs!r}")
    started_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    load = load_average()
    driver = _Driver()
    try:
        ctx = driver.call(bench.setup)
        if not isinstance(ctx, Context):
            raise TypeError(f"setup of {bench.name!r} must return a Context, got {ctx!r}")
        try:
            result = _measure(bench, ctx, driver, runs, started_at)
            result.load = load
            if ctx.details is not None:
                details = driver.call(ctx.details)
                if not isinstance(details, Details):
                    raise TypeError(f"details of {bench.name!r} must be Details, got {details!r}")
                result.details = details
            return result
        finally:
            if ctx.close is not None:
                driver.call(ctx.close)
    finally:
        driver.close()


def _measure(bench: Benchmark, ctx: Context, driver: _Driver, runs: int, started_at: str) -> Result:
    work: dict[Side, Work] = {"anchor": ctx.anchor, "subject": ctx.subject}

    def measure(side: Side) -> float:
        if ctx.before_run is not None:
            driver.call(ctx.before_run, side)
        elapsed = driver.time(work[side])
        if ctx.after_run is not None:
            driver.call(ctx.after_run, side)
        return elapsed

    warmup = {"anchor": measure("anchor"), "subject": measure("subject")}
    times: dict[Side, list[float]] = {"anchor": [], "subject": []}
    order: list[list[str]] = []
    for i in range(runs):
        # Alternate the order so that neither side always runs on the warmer cache.
        sides: tuple[Side, Side] = ("anchor", "subject") if i % 2 == 0 else ("subject", "anchor")
        order.append(list(sides))
        for side in sides:
            times[side].append(measure(side))
    return Result(
        name=bench.name,
        description=bench.description,
        bar=bench.bar,
        runs=runs,
        anchor=times["anchor"],
        subject=times["subject"],
        warmup=warmup,
        order=order,
        started_at=started_at,
    )


def write_json(result: Result, directory: Path, machine: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{result.name}.json"
    path.write_text(json.dumps(result.to_json(machine), indent=2) + "\n", encoding="utf-8")
    return path


def _fmt_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f}us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f}ms"
    return f"{seconds:.3f}s"


def _fmt_side(times: list[float]) -> str:
    return "/".join(_fmt_time(t) for t in (statistics.median(times), min(times), max(times)))


TABLE_HEADER = (
    "benchmark",
    "anchor med/min/max",
    "subject med/min/max",
    "ratio",
    "bar",
    "verdict",
)


def format_table(results: Iterable[Result]) -> str:
    rows = [TABLE_HEADER]
    for r in results:
        ratio = f"{r.ratio:.2f}"
        rows.append(
            (r.name, _fmt_side(r.anchor), _fmt_side(r.subject), ratio, str(r.bar), r.verdict)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_HEADER))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def format_details(details: Details) -> list[str]:
    """The lines run_all prints under a benchmark: its figures and checks."""
    lines = [f"  {name}: {_fmt_figure(value)}" for name, value in details.figures.items()]
    lines += [f"  check {check}: {'pass' if check.passed else 'MISS'}" for check in details.checks]
    return lines


def _fmt_figure(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@dataclass
class Report:
    machine: dict[str, Any]
    results: list[Result]
    errors: dict[str, BaseException]
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors and all(r.passed for r in self.results)


def run_all(
    benches: Iterable[Benchmark],
    *,
    runs: int = DEFAULT_RUNS,
    json_dir: Path | None = None,
    out: TextIO = sys.stdout,
    runner: Callable[[Benchmark, int], Result] | None = None,
) -> Report:
    """Run each benchmark, write its JSON, then print the table; a failing one is reported.

    ``runner(bench, runs)`` runs one benchmark (default :func:`run_benchmark`, in this
    process; ``benchmarks/isolation.py`` runs each in a process of its own)."""
    run_one = runner or (lambda bench, n: run_benchmark(bench, runs=n))
    report = Report(machine=machine_info(), results=[], errors={})
    print(format_machine(report.machine), file=out)
    print(f"{runs} timed runs per side after one warmup run each\n", file=out, flush=True)
    for bench in benches:
        print(f"running {bench.name} ...", file=out, flush=True)
        try:
            result = run_one(bench, runs)
        except Skipped as exc:
            print(f"  skipped: {exc}", file=out, flush=True)
            report.skipped[bench.name] = str(exc)
            continue
        except Exception as exc:
            traceback.print_exc(file=out)
            report.errors[bench.name] = exc
            continue
        report.results.append(result)
        for line in format_details(result.details):
            print(line, file=out, flush=True)
        if json_dir is not None:
            path = write_json(result, json_dir, report.machine)
            print(f"  wrote {path}", file=out, flush=True)
    print("", file=out)
    print(format_table(report.results), file=out)
    for name, reason in report.skipped.items():
        print(f"{name}: SKIPPED {reason}", file=out)
    for name, error in report.errors.items():
        print(f"{name}: ERROR {type(error).__name__}: {error}", file=out)
    out.flush()
    return report
