"""Continual-learning benchmarks: streams, solvers, the comparison harness and its report.

The CLI calls `load_compare_config`, `compare`, `run` and `write_report`; see `benchmarks.config`
for how a comparison and a benchmark preset are selected.
"""
from benchmarks.compare import compare, run, run_single
from benchmarks.config import CompareConfig, load_compare_config
from benchmarks.report import write_report
from benchmarks.solvers import SOLVER_NAMES, build_solver
from benchmarks.streams import BENCHMARK_NAMES, StreamBundle, build_stream

__all__ = [
    "BENCHMARK_NAMES",
    "CompareConfig",
    "SOLVER_NAMES",
    "StreamBundle",
    "build_solver",
    "build_stream",
    "compare",
    "load_compare_config",
    "run",
    "run_single",
    "write_report",
]
