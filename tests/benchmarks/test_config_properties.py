"""Property: any override either validates or stops with one UserError line, before data or training.

Hypothesis draws overrides for each command's config (every schema key and a few misspelt ones;
numbers in and out of range, NaN, infinities, wrong types, strings, lists; paths to a file, a
folder, a missing path and a path inside a file) and runs the command through the CLI. The data
loader, the evaluation and the comparison's runs are replaced by a stub that raises `Reached`:
a command that gets there has validated its input. Any other exception, a traceback or a second
line of error output fails the property. No lock file may be left behind either way.
"""
import contextlib
import importlib
import io
import os
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

import ali_replay.evaluation
import ali_replay.trainer
from ali_replay.config import ALIRunConfig, load_run_config
from ali_replay.run_lock import LOCK_FILE
from benchmarks.cli import main
from benchmarks.config import CompareConfig

COMPARE_MODULE = importlib.import_module("benchmarks.compare")  # the package exports a function of that name

PROPERTY = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


class Reached(Exception):
    """The command got past validation to its data, evaluation or training."""


def _reached(*args, **kwargs):
    raise Reached


def _keys(schema) -> list[str]:
    node = OmegaConf.structured(schema)

    def walk(cfg, prefix):
        for key, value in cfg.items():
            if OmegaConf.is_dict(value):
                yield from walk(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}"

    return list(walk(node, ""))


PATHS = ["@file", "@folder", "@missing", "@inside_file"]
NUMBERS = st.one_of(
    st.integers(-3, 3).map(str),
    st.sampled_from(["10", "64", "2000", "4294967296", "99999999999", "-1e-9", "1e-4", "0.5", "0.999", "1.0",
                     "1.5", "-0.5", "0.0", "nan", "inf", "-inf", ".inf"]),
)
JUNK = st.sampled_from(["abc", "", "null", "true", "false", "[1,2]", "[]", "{a: 1}", "'3'", "x=y", "cuda", "cpu",
                        "auto", "mnist", "digits", "npz", "conv32", "simultaneous", "bfloat16"])
VALUES = st.one_of(NUMBERS, JUNK, st.sampled_from(PATHS))


def _overrides(keys: list[str], extra_keys: list[str]):
    """Lists of `key=value` items over the schema's keys (and misspelt ones), values of any kind."""
    key = st.one_of(st.sampled_from(keys), st.sampled_from(extra_keys))
    return st.lists(st.tuples(key, VALUES), max_size=3)


ALI_KEYS = _keys(ALIRunConfig)
COMPARE_KEYS = _keys(CompareConfig)
MISSPELT = ["train.epoch", "nope", "model.latent", "data", "optim.lr", "seeds.0"]


def _materialise(pairs, root: Path) -> list[str]:
    """`key=value` strings, with path placeholders turned into real paths under `root`."""
    where = {"@file": root / "a_file", "@folder": root / "a_folder", "@missing": root / "missing" / "here",
             "@inside_file": root / "a_file" / "below"}
    return [f"{key}={where.get(value, value)}" for key, value in pairs]


def _check(command: str, argv: list[str]) -> str:
    """Run the CLI in a fresh folder; return 'valid' or 'refused' after checking the one-line contract."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "a_file").write_text("not a folder")
        (root / "a_folder").mkdir()
        argv = [a.replace("@root", str(root)) for a in argv]
        err = io.StringIO()
        previous_cwd, threads = os.getcwd(), torch.get_num_threads()
        os.chdir(root)  # default output folders land here
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                try:
                    code = main(argv)
                except Reached:
                    code = None
        finally:
            os.chdir(previous_cwd)
            torch.set_num_threads(threads)
        left = [str(p) for p in root.rglob(LOCK_FILE)]
        assert not left, f"{argv}: lock file left behind: {left}"
        text = err.getvalue().strip()
        if code is None:
            return "valid"
        assert code == 2, f"{argv}: exit code {code}, stderr {text!r}"
        lines = text.splitlines()
        assert len(lines) == 1, f"{argv}: {text!r}"
        assert lines[0].startswith(f"ali-replay {command}: error: ") and "Traceback" not in text
        return "refused"


@pytest.fixture
def stubs(monkeypatch):
    """Everything after validation raises Reached: data loading, evaluation, runs."""
    monkeypatch.setattr(ali_replay.trainer, "load_dataset", _reached)
    monkeypatch.setattr(ali_replay.evaluation, "evaluate_ali", _reached)
    monkeypatch.setattr(COMPARE_MODULE, "run_single", _reached)
    monkeypatch.setattr(COMPARE_MODULE.futures, "ProcessPoolExecutor", _reached)


FLAGS = st.sampled_from([[], ["--resume"], ["--overwrite"]])


@PROPERTY
@given(pairs=_overrides(ALI_KEYS, MISSPELT), flags=FLAGS)
def test_train_ali_validates_or_refuses_in_one_line(stubs, pairs, flags):
    event(_check("train-ali", ["-q", "train-ali", *flags, "--no-eval", *_materialise(pairs, Path("@root"))]))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A real (two-update) ALI run folder for eval-ali."""
    out = tmp_path_factory.mktemp("eval") / "run"
    cfg = load_run_config(None, ["model.hidden=32", "model.latent_dim=4", "train.batch_size=128", "threads=1",
                                 "device=cpu", "train.epochs=1", "train.max_steps=2", f"output_dir={out}"])
    ali_replay.trainer.ALITrainer(cfg).fit()
    return out


@PROPERTY
@given(pairs=_overrides(ALI_KEYS, MISSPELT))
def test_eval_ali_validates_or_refuses_in_one_line(stubs, trained_run, pairs):
    event(_check("eval-ali", ["-q", "eval-ali", str(trained_run), *_materialise(pairs, Path("@root"))]))


@PROPERTY
@given(pairs=_overrides(COMPARE_KEYS + ["benchmark"], MISSPELT + ["solver.epoch", "benchmark.names"]),
       flags=FLAGS, command=st.sampled_from(["compare", "run"]))
def test_compare_and_run_validate_or_refuse_in_one_line(stubs, pairs, flags, command):
    event(_check(command, ["-q", command, *flags, "strategies=[naive]", *_materialise(pairs, Path("@root"))]))


@pytest.mark.parametrize("argv", [
    ["train-ali", "train.batch_size=0"],
    ["train-ali", "train.epochs=-3"],
    ["train-ali", "data.name=mnist", "data.root=@root/a_file"],
    ["eval-ali", "@run", "eval.n_samples=0"],
    ["compare", "output_dir=@root/a_file"],
    ["compare", "benchmark=split_mnist", "data.root=@root/a_file"],
    ["run", "seeds=[-1]"],
])
def test_the_reported_inputs_are_refused(stubs, trained_run, argv):
    argv = [a.replace("@run", str(trained_run)) for a in argv]
    assert _check(argv[0], ["-q", *argv]) == "refused"


def test_the_stubs_are_reached_by_valid_input(stubs, trained_run):
    """The property is not vacuous: valid input of every command does get past validation."""
    assert _check("train-ali", ["-q", "train-ali", "--no-eval", "train.epochs=2"]) == "valid"
    assert _check("eval-ali", ["-q", "eval-ali", str(trained_run), "eval.labels_per_class=5"]) == "valid"
    assert _check("compare", ["-q", "compare", "strategies=[naive]", "data.root=@root/a_folder"]) == "valid"
    assert _check("run", ["-q", "run", "--strategy", "naive", "output_dir=@root/missing/out"]) == "valid"
