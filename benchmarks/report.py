"""``docs/performance.md`` from benchmark results: the table, the plots, the machine, how to rerun.

The page is rendered from the JSON files in ``benchmarks/results`` (what the harness and the
standalone scripts write), so ``python -m benchmarks --report`` can regenerate it without
running anything; ``python -m benchmarks --all`` runs everything, then renders it. What limits
a benchmark (and what was profiled and fixed) is prose written by hand in
``benchmarks/analysis.md``, one ``## name`` section per benchmark, included under its figures.

The plots need matplotlib (the ``dev`` extra); without it the page says they were not drawn.
"""

from __future__ import annotations

import datetime
import json
import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.harness import Report, Result
from benchmarks.machine import format_machine
from benchmarks.standalone import Outcome

__all__ = [
    "RUN_RECORD",
    "Loaded",
    "load_analysis",
    "load_results",
    "render",
    "write_report",
    "write_run_record",
]

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "performance.md"
IMAGES = ROOT / "docs" / "performance"
ANALYSIS = Path(__file__).resolve().parent / "analysis.md"
#: The record of the last ``--all`` run in the results folder (errors, skips, the load).
RUN_RECORD = "_run.json"


@dataclass
class Loaded:
    """What a results folder holds: the harness's results, every other JSON report
    (standalone scripts, side files such as a latency distribution) by file stem, and the
    record of the last ``--all`` run (empty when there was none)."""

    results: list[Result] = field(default_factory=list)
    others: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)


def load_results(json_dir: Path) -> Loaded:
    """Read every ``*.json`` of ``json_dir``; a file that is not JSON is an error naming it."""
    loaded = Loaded()
    if not json_dir.is_dir():
        raise FileNotFoundError(
            f"no results folder {str(json_dir)!r}: run `python -m benchmarks --all` first"
        )
    for path in sorted(json_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"{path} is not JSON: {exc}") from None
        if path.name == RUN_RECORD:
            loaded.run = data
        elif isinstance(data, dict) and {"anchor", "subject", "bar", "runs"} <= set(data):
            loaded.results.append(Result.from_json(data))
        else:
            loaded.others[path.stem] = data
    order = list(loaded.run.get("order", []))
    loaded.results.sort(key=lambda r: (order.index(r.name) if r.name in order else len(order),
                                       r.name))
    return loaded


def write_run_record(json_dir: Path, report: Report, outcomes: Iterable[Outcome], *,
                     runs: int, started_at: str) -> Path:
    """What the JSON of each result does not say: the order, errors, skips, the scripts."""
    from benchmarks.machine import load_average

    record = {
        "started_at": started_at,
        "finished_at": _now(),
        "runs": runs,
        "machine": report.machine,
        "load_at_end": load_average(),
        "order": [r.name for r in report.results],
        # When each result of this run started: a result file that says otherwise was
        # written by another run (a benchmark run alone, before or since).
        "results": {r.name: r.started_at for r in report.results},
        "errors": {name: f"{type(exc).__name__}: {exc}" for name, exc in report.errors.items()},
        "skipped": dict(report.skipped),
        "standalone": {o.name: o.to_json() for o in outcomes},
    }
    json_dir.mkdir(parents=True, exist_ok=True)
    path = json_dir / RUN_RECORD
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return path


def load_analysis(path: Path = ANALYSIS) -> dict[str, str]:
    """The ``## name`` sections of the hand-written analysis, by benchmark name."""
    if not path.exists():
        return {}
    sections: dict[str, str] = {}
    name: str | None = None
    lines: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"^## +(\S+)\s*$", line)
        if heading:
            if name is not None:
                sections[name] = "\n".join(lines).strip()
            name, lines = heading.group(1), []
        elif name is not None:
            lines.append(line)
    if name is not None:
        sections[name] = "\n".join(lines).strip()
    return sections


def write_report(json_dir: Path, doc: Path = DOC, images: Path = IMAGES, *,
                 analysis: Path = ANALYSIS) -> Path:
    """Render ``doc`` (and its plots under ``images``) from the JSON in ``json_dir``."""
    loaded = load_results(json_dir)
    try:
        from benchmarks.plots import draw
    except ImportError as exc:  # matplotlib is missing: the page says so
        drawn: dict[str, Path] = {}
        plot_note = f"Plots not drawn: {exc} (install the dev extra: pip install -e '.[dev]')."
    else:
        drawn = draw(loaded.results, images)
        plot_note = ""
    relative = {key: path.relative_to(doc.parent).as_posix() for key, path in drawn.items()}
    doc.parent.mkdir(parents=True, exist_ok=True)
    text = render(loaded, relative, analysis=load_analysis(analysis), plot_note=plot_note)
    doc.write_text(text, encoding="utf-8")
    return doc


# -- the page -------------------------------------------------------------------------------


def render(loaded: Loaded, images: dict[str, str], *, analysis: dict[str, str] | None = None,
           plot_note: str = "") -> str:
    """The markdown page; ``images`` maps "ratios", "runs" and result names to paths."""
    analysis = analysis or {}
    out: list[str] = [
        "# Performance",
        "",
        "Every benchmark times plasma_nb's path (the *subject*) against the plainest way to do "
        "the same work (the *anchor*: raw `sqlite3`, a bare Starlette endpoint, ...), both in "
        "one process, alternating which side runs first, after one warm-up each. The *ratio* "
        "is the anchor's median time over the subject's: plasma_nb's throughput as a fraction "
        "of the anchor's (1.0: as fast; 0.5: half as fast). A bar is a minimum ratio "
        "(`ratio >= r`), or the same said as a slowdown (`subject <= kx anchor`); some also "
        "have checks on other figures (a p99 latency), and *report* rows have no bar. "
        "Benchmarks are never timed tests: nothing here runs in CI.",
        "",
        "This page is generated by `python -m benchmarks` from `benchmarks/results/*.json`; "
        "the analysis of each benchmark is written by hand in `benchmarks/analysis.md`.",
        "",
        "## How to rerun",
        "",
        "```sh",
        "python -m benchmarks --all --runs 7   # everything: results JSON, this page, the plots",
        "python -m benchmarks --report         # re-render this page from benchmarks/results",
        "python -m benchmarks NAME ... --runs 7   # some benchmarks (JSON and the table only)",
        "python -m benchmarks --list           # what there is",
        "```",
        "",
        "`--all` runs each benchmark in a process of its own (`--in-process` to not), then "
        "the standalone scripts such as the browser benchmarks (`--no-scripts` to leave them "
        "out), then writes this page and `docs/performance/*.png` (matplotlib, from the "
        "`dev` extra).",
        "",
        "Run them on a quiet machine and without `nice`; the figures below say how quiet "
        "this one was (the load average when each benchmark started). Postgres benchmarks "
        "use `PLASMA_BENCH_POSTGRES`, else `PLASMA_TEST_POSTGRES`, else the local server; "
        "the browser benchmarks need Debian's chromium.",
        "",
    ]
    out += _machine_section(loaded)
    out += _table_section(loaded, images, plot_note)
    out += _details_section(loaded.results, images, analysis)
    out += _standalone_section(loaded, analysis)
    return "\n".join(out).rstrip() + "\n"


def _machine_section(loaded: Loaded) -> list[str]:
    out = ["## The machine", ""]
    run = loaded.run
    machine = run.get("machine") or next(
        (r.machine for r in loaded.results if r.machine), None)
    if machine:
        out.append(f"- {format_machine(machine)}")
        if machine.get("git_commit"):
            dirty = " with uncommitted changes" if machine.get("git_dirty") else ""
            out.append(f"- plasma_nb {machine.get('plasma_nb')}, commit "
                       f"`{str(machine['git_commit'])[:12]}`{dirty}")
    if run:
        end = run.get("load_at_end")
        out.append(f"- last `--all` run: {run.get('started_at')} to {run.get('finished_at')} "
                   f"(UTC), {run.get('runs')} timed runs per side"
                   + (f"; load average at the end {_load(end)}" if end else ""))
    loads = [r.load[0] for r in loaded.results if r.load]
    if loads:
        out.append(f"- 1-minute load average as benchmarks started: median "
                   f"{statistics.median(loads):.2f}, from {min(loads):.2f} to {max(loads):.2f}")
    cpus = (machine or {}).get("cpu_count")
    if cpus:
        out.append(f"- Servers run on this machine too (uvicorn on 127.0.0.1), beside the "
                   f"clients and load generators that drive them: with {cpus} CPUs they "
                   "compete for the cores, and the clients' work is CPU the server does not "
                   "get.")
    # Run back to back, the benchmarks themselves keep about one core busy, and that is in
    # the load average each one starts with: only past that did other work share the cores.
    if cpus and loads and statistics.median(loads) > 0.75 * cpus:
        out.append(f"- **Noisy**: the load was high for {cpus} CPUs, more than the "
                   "benchmarks' own processes account for (other work was running on the "
                   "machine): times are longer and more scattered than on a quiet machine, "
                   "and a ratio may be off either way; alternating the sides spreads the noise "
                   "over both, and the spread of the runs is shown for each.")
    out.append("")
    return out


def _table_section(loaded: Loaded, images: dict[str, str], plot_note: str) -> list[str]:
    out = ["## Results", ""]
    if not loaded.results:
        out += ["No results yet.", ""]
    else:
        out += ["| benchmark | anchor (median) | subject (median) | ratio | bar | verdict | "
                "machine |", "|---|---|---|---|---|---|---|"]
        for r in loaded.results:
            bar = str(r.bar) + "".join(f"; {c.name} <= {c.limit:g}{c.unit}"
                                       if c.kind == "max" else
                                       f"; {c.name} >= {c.limit:g}{c.unit}"
                                       for c in r.details.checks)
            verdict = {"PASS": "pass", "MISS": "**miss**", "REPORT": "report"}[r.verdict]
            missed = [f"{c.name} {c.value:.2f}{c.unit}" for c in r.details.checks
                      if not c.passed]
            if missed:  # say which: the ratio may well have passed
                verdict += " (" + ("" if r.bar.passes(r.ratio) else "ratio; ") \
                    + "; ".join(missed) + ")"
            out.append(f"| [{r.name}](#{r.name}) | {_time(r.anchor_median)} | "
                       f"{_time(r.subject_median)} | {r.ratio:.2f} | {bar} | {verdict} | "
                       f"{_machine_cell(r)}{_provenance(r, loaded.run)} |")
        out.append("")
        passed = sum(r.verdict == "PASS" for r in loaded.results)
        missed = sum(r.verdict == "MISS" for r in loaded.results)
        out.append(f"{passed} pass, {missed} miss, "
                   f"{sum(r.verdict == 'REPORT' for r in loaded.results)} report.")
        out.append("")
    errors = loaded.run.get("errors") or {}
    skipped = loaded.run.get("skipped") or {}
    for name, reason in skipped.items():
        out.append(f"- `{name}`: **skipped** in the last `--all` run: {reason}")
    for name, error in errors.items():
        out.append(f"- `{name}`: **failed** in the last `--all` run: {_cell(error)}")
    if skipped or errors:
        out.append("")
    if "ratios" in images:
        out += ["![The ratio of each benchmark against its bar (log scale)]"
                f"({images['ratios']})", ""]
    if "runs" in images:
        out += [f"![Every timed run of each side]({images['runs']})", ""]
    if plot_note:
        out += [plot_note, ""]
    return out


def _details_section(results: list[Result], images: dict[str, str],
                     analysis: dict[str, str]) -> list[str]:
    out: list[str] = []
    if results:
        out += ["## Each benchmark", ""]
    for r in results:
        out += [f"### {r.name}", ""]
        if r.description:
            out += [r.description, ""]
        out.append(f"- anchor {_spread(r.anchor)}; subject {_spread(r.subject)} "
                   f"(median, min to max of {r.runs} runs); started {r.started_at}"
                   + (f", load average {_load(r.load)}" if r.load else ""))
        out += [f"- {name}: {_figure(value)}" for name, value in r.details.figures.items()]
        out += [f"- check {check}: {'pass' if check.passed else '**miss**'}"
                for check in r.details.checks]
        out += [f"- {note}" for note in r.details.notes]
        out.append("")
        if r.name in images:
            out += [f"![{r.name}: distributions]({images[r.name]})", ""]
        if r.name in analysis:
            out += [analysis[r.name], ""]
    return out


def _standalone_section(loaded: Loaded, analysis: dict[str, str]) -> list[str]:
    outcomes: dict[str, Any] = loaded.run.get("standalone") or {}
    names = sorted(set(outcomes) | set(loaded.others))
    if not names:
        return []
    out = ["## Standalone benchmarks and side reports", "",
           "Figures with no raw anchor to alternate with run as scripts "
           "(`python -m benchmarks.NAME`); other JSON files are details that benchmarks "
           "write beside their results.", ""]
    for name in names:
        outcome = outcomes.get(name)
        status = ""
        if outcome is not None:
            status = {"ok": "ran", "failed": "**failed**", "skipped": "**skipped**"}.get(
                outcome.get("status"), str(outcome.get("status")))
            status += f" in {outcome.get('seconds', 0):g} s" if outcome.get("status") == "ok" \
                else ""
            if outcome.get("reason"):
                status += f": {_cell(outcome['reason'])}"
        out.append(f"### {name}")
        out.append("")
        if status:
            out += [f"Last `--all` run: {status}.", ""]
        data = loaded.others.get(name)
        if data is not None:
            out += [f"- {line}" for line in summarize(data)]
            out.append("")
        if name in analysis:
            out += [analysis[name], ""]
    return out


def summarize(data: Any, limit: int = 24) -> list[str]:
    """Lines ``key: value`` for the numbers and short texts of a JSON report."""
    lines: list[str] = []

    def walk(value: Any, path: str, depth: int) -> None:
        if len(lines) >= limit:
            return
        median = next((k for k in value if k.startswith("median")), None) \
            if isinstance(value, dict) else None
        if isinstance(value, dict) and median is not None:
            unit = median[len("median"):]  # "median_ms": the others are "min_ms", ...
            extra = ", ".join(f"{k} {_figure(value[k + unit])}" for k in ("min", "max", "p99")
                              if k + unit in value)
            lines.append(f"{path}{unit}: median {_figure(value[median])}"
                         + (f" ({extra})" if extra else ""))
        elif isinstance(value, dict):
            if depth >= 3:
                return
            for key, item in value.items():
                if key in ("machine", "times"):
                    continue
                walk(item, f"{path}.{key}" if path else str(key), depth + 1)
        elif isinstance(value, bool | int | float) or value is None:
            lines.append(f"{path}: {_figure(value)}")
        elif isinstance(value, str) and len(value) <= 160:
            lines.append(f"{path}: {value}")

    walk(data, "", 0)
    return lines


# -- formatting -----------------------------------------------------------------------------


def _time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def _spread(times: list[float]) -> str:
    return f"{_time(statistics.median(times))}, {_time(min(times))} to {_time(max(times))}"


def _figure(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _load(load: Any) -> str:
    return "/".join(f"{float(x):.2f}" for x in load)


def _machine_cell(r: Result) -> str:
    machine = r.machine or {}
    parts = []
    if machine.get("cpu_count"):
        parts.append(f"{machine['cpu_count']} CPUs")
    if r.load:
        parts.append(f"load {r.load[0]:.1f}")
    return ", ".join(parts) or "?"


def _provenance(r: Result, run: dict[str, Any]) -> str:
    """Whether a result is not from the last ``--all`` run (run alone before or after it)."""
    if not run:
        return ""
    ours = (run.get("results") or {}).get(r.name)
    if ours == r.started_at:
        return ""
    if ours is not None:
        return "; later run" if r.started_at > ours else "; earlier run"
    return "; later run" if r.started_at > str(run.get("started_at", "")) else "; earlier run"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
