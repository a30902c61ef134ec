"""plasma_nb's benchmarks: each one times plasma_nb's path against a raw anchor.

Run them with ``python -m benchmarks [NAME ...]`` from the repository root. Each benchmark is one
module ``benchmarks/bench_<topic>.py`` registering setup functions with
``benchmarks.harness.benchmark``; see ``benchmarks/harness.py`` for the API.
"""
