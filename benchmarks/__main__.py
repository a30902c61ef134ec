"""``python -m benchmarks [NAME ...] [--all] [--list] [--runs N] [--json-dir DIR]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.harness import DEFAULT_RUNS, MIN_RUNS, discover, run_all

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
    parser.add_argument("--all", action="store_true", help="run every benchmark")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
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
    args = parser.parse_args(argv)

    registry = discover()
    if args.list:
        if not registry:
            print("no benchmarks yet: add benchmarks/bench_<topic>.py")
        for bench in registry.values():
            print(f"{bench.name}  [{bench.bar}]  {bench.description}")
        return 0
    if args.all == bool(args.names):
        parser.error("name the benchmarks to run, or pass --all (not both)")
    unknown = [name for name in args.names if name not in registry]
    if unknown:
        known = ", ".join(registry) or "none"
        parser.error(f"unknown benchmark(s) {', '.join(map(repr, unknown))}; known: {known}")
    selected = list(registry.values()) if args.all else [registry[n] for n in args.names]
    if not selected:
        print("no benchmarks yet: add benchmarks/bench_<topic>.py", file=sys.stderr)
        return 1
    report = run_all(selected, runs=args.runs, json_dir=args.json_dir)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
