"""A tiny comparison shared by the harness tests (split digits, one epoch, one thread)."""
import logging

import pytest

from benchmarks import compare, load_compare_config

TINY = ["solver.epochs=1", "strategies=[naive,joint,er@small]", "seeds=[0]", "threads=1", "jobs=1"]


def tiny_config(output_dir, *extra):
    """The tiny comparison's config writing to `output_dir`, with extra overrides."""
    return load_compare_config(None, [*TINY, f"output_dir={output_dir}", *extra])


@pytest.fixture(scope="session")
def tiny_results(tmp_path_factory):
    """(output folder, results dict) of the tiny comparison, run once per session."""
    out = tmp_path_factory.mktemp("tiny") / "compare"
    logging.getLogger("benchmarks").setLevel(logging.INFO)
    results = compare(tiny_config(out), command="ali-replay compare solver.epochs=1")
    return out, results
