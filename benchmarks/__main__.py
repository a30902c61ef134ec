"""``python -m benchmarks [NAME ...] [--all] [--report] [--list] [--runs N] [--json-dir DIR]``.

``--all`` runs every harness benchmark, then every standalone script (benchmarks/standalone.py),
then writes ``docs/performance.md`` and its plots; ``--report`` only re-renders the page from
the saved JSON. Named benchmarks (either kind) write their JSON and print the table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.harness import DEFAULT_RUNS, MIN_RUNS, Report, discover, machine_info, run_all
from benchmarks.isolation import Isolated
from benchmarks.report import DOC, IMAGES, write_report, write_run_record
from benchmarks.standalone import Outcome, discover_scripts, requirement, run_script

DEFAULT_JSON_DIR = Path(__file__).resolve().parent / "results"


def _runs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < MIN_RUNS:
        raise argparse.ArgumentTypeError(f"at least {MIN_RUNS} runs are needed, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Time plasma_nb against raw anchors; exit 1 if any benchmark misses its bar.",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run")
    parser.add_argument("--all", action="store_true",
                        help="run every benchmark and script, then write docs/performance.md")
    parser.add_argument("--report", action="store_true",
                        help="only re-render docs/performance.md from the saved JSON")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--no-scripts", action="store_true",
                        help="with --all: leave out the standalone scripts (browser, ...)")
    parser.add_argument(
        "--runs",
        type=_runs,
        default=DEFAULT_RUNS,
        help=f"timed runs per side (default {DEFAULT_RUNS}, at least {MIN_RUNS})",
    )
    parser.add_argument(
        "--json-dir",
        type=Path,
        default=DEFAULT_JSON_DIR,
        help="where to write one JSON file per benchmark (default benchmarks/results)",
    )
    parser.add_argument("--in-process", action="store_true",
                        help="with --all: run every benchmark in this process (by default "
                             "each runs in a process of its own)")
    parser.add_argument("--record", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--doc", type=Path, default=DOC, help=argparse.SUPPRESS)
    parser.add_argument("--images", type=Path, default=IMAGES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    registry = discover()
    scripts = discover_scripts()
    if args.list:
        if not registry:
            print("no benchmarks yet: add benchmarks/bench_<topic>.py")
        for bench in registry.values():
            print(f"{bench.name}  [{bench.bar}]  {bench.description}")
        for name in scripts:
            missing = requirement(name)
            print(f"{name}  [script]" + (f"  (skipped here: {missing})" if missing else ""))
        return 0
    if args.report:
        if args.all or args.names:
            parser.error("--report re-renders the saved results: it takes no NAME nor --all")
        path = write_report(args.json_dir, args.doc, args.images)
        print(f"wrote {path}")
        return 0
    if args.all == bool(args.names):
        parser.error("name the benchmarks to run, or pass --all (not both)")
    unknown = [name for name in args.names if name not in registry and name not in scripts]
    if unknown:
        known = ", ".join([*registry, *scripts]) or "none"
        parser.error(f"unknown benchmark(s) {', '.join(map(repr, unknown))}; known: {known}")
    if args.all:
        selected = list(registry.values())
        chosen_scripts = [] if args.no_scripts else scripts
    else:
        selected = [registry[n] for n in args.names if n in registry]
        chosen_scripts = [n for n in args.names if n in scripts]
    if not selected and not chosen_scripts:
        print("no benchmarks yet: add benchmarks/bench_<topic>.py", file=sys.stderr)
        return 1
    started_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    runner = Isolated(args.json_dir) if args.all and not args.in_process else None
    report = (run_all(selected, runs=args.runs, json_dir=args.json_dir, runner=runner)
              if selected else Report(machine_info(), [], {}))
    if args.record is not None:  # for the parent of an isolated run (benchmarks/isolation.py)
        args.record.write_text(json.dumps({
            "skipped": report.skipped,
            "errors": {n: f"{type(e).__name__}: {e}" for n, e in report.errors.items()},
        }), encoding="utf-8")
    outcomes = [_script(name, args.json_dir, args.runs) for name in chosen_scripts]
    if args.all:
        write_run_record(args.json_dir, report, outcomes, runs=args.runs, started_at=started_at)
        path = write_report(args.json_dir, args.doc, args.images)
        print(f"wrote {path}")
    failed = any(o.status == "failed" for o in outcomes)
    return 0 if report.ok and not failed else 1


def _script(name: str, json_dir: Path, runs: int) -> Outcome:
    print(f"running {name} (script) ...", flush=True)
    outcome = run_script(name, json_dir, runs=runs)
    print(f"  {outcome.status}" + (f": {outcome.reason}" if outcome.reason else "")
          + (f" ({outcome.seconds:.0f} s)" if outcome.seconds else ""), flush=True)
    return outcome


if __name__ == "__main__":
    sys.exit(main())
