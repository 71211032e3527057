"""The comparison harness: results schema, report, determinism, refusal, resume and jobs."""
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ali_replay.errors import ConfigError
from benchmarks import compare, run, run_single, write_report
from benchmarks.compare import run_id
from benchmarks.record import RECORD_FIELDS

from .conftest import TINY, tiny_config

RUN_KEYS = {"strategy", "seed", "acc_matrix", "final_avg_acc", "avg_forgetting", "bwt", "train_seconds",
            "peak_rss_mb", "memory_bytes", "started_at", "finished_at", "avg_acc_curve"}
SUMMARY_KEYS = {"final_avg_acc_mean", "final_avg_acc_std", "n_seeds", "train_seconds_mean", "avg_forgetting_mean",
                "bwt_mean", "memory_bytes", "peak_rss_mb_max"}


def _load(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_results_schema(tiny_results):
    out, results = tiny_results
    data = _load(out)
    assert data == json.loads(json.dumps(results))
    assert {"benchmark", "scenario", "config", "command", "runs", "summary"} <= set(data)
    assert data["benchmark"] == "split_digits" and data["scenario"] == "class_incremental"
    assert data["config"]["solver"]["epochs"] == 1
    assert [(r["strategy"], r["seed"]) for r in data["runs"]] == [("naive", 0), ("joint", 0), ("er@small", 0)]
    for r in data["runs"]:
        assert RUN_KEYS <= set(r) and tuple(r) == RECORD_FIELDS  # the record's fields are the schema, in order
        assert len(r["acc_matrix"]) == 5 and all(len(row) == 5 for row in r["acc_matrix"])
        assert all(0.0 <= v <= 1.0 for row in r["acc_matrix"] for v in row)
        assert r["final_avg_acc"] == pytest.approx(sum(r["acc_matrix"][-1]) / 5)
        assert r["train_seconds"] > 0 and r["peak_rss_mb"] > 0 and r["rss_scope"] == "process"
        assert (out / r["log_dir"] / "eval_results.csv").is_file()
    assert list(data["summary"]) == ["naive", "joint", "er@small"]
    for s in data["summary"].values():
        assert SUMMARY_KEYS <= set(s) and s["n_seeds"] == 1
    naive, joint, er = data["runs"]
    for r in data["runs"]:  # every training second is in one phase; evaluation is timed apart
        phases = r["phase_seconds"]
        assert set(phases) == {"replay_making", "generator_steps", "solver_steps", "evaluation", "other"}
        assert sum(v for k, v in phases.items() if k != "evaluation") == pytest.approx(r["train_seconds"], abs=0.02)
        assert phases["evaluation"] == pytest.approx(r["eval_seconds"], abs=0.01) and phases["solver_steps"] > 0
        assert len(r["experience_phase_seconds"]) == 5 and phases["generator_steps"] == 0
    assert "## Where the time went" in (out / "report.md").read_text()
    assert (naive["recipe"], er["recipe"]) == (None, "small") and er["strategy_params"] == {"mem_size": 50,
                                                                                            "memory_bytes": None}
    # Each experience is timed (joint is cumulative training: one growing fit per experience).
    assert len(naive["experience_seconds"]) == len(joint["experience_seconds"]) == 5
    assert sum(naive["experience_seconds"]) == pytest.approx(naive["train_seconds"], abs=0.01)
    assert naive["memory_bytes"] == 0 and er["memory_bytes"] > 0 and joint["memory_bytes"] > 0
    # ER replays stored examples: its preview is saved and drawn per experience.
    assert er["replay_file"] == f"replay/{run_id('er@small', 0)}.npz" and (out / er["replay_file"]).is_file()
    assert er["replay_experiences"] == [0, 1, 2, 3, 4]
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 4 and csv_lines[0].startswith("strategy,seed,final_avg_acc")
    for name in ("accuracy_curve.png", "acc_matrix_naive.png", "acc_matrix_joint.png", "replay_er@small_exp4.png"):
        assert (out / "plots" / name).stat().st_size > 1000


def test_report_is_rebuilt_byte_for_byte(tiny_results, tmp_path):
    src, _ = tiny_results
    out = _copy(src, tmp_path / "copy")
    before_md = (out / "report.md").read_bytes()
    before_csv = (out / "results.csv").read_bytes()
    before_json = (out / "results.json").read_bytes()
    for name in ("report.md", "results.csv"):
        (out / name).unlink()
    shutil.rmtree(out / "plots")
    text = write_report(out)
    assert (out / "report.md").read_bytes() == before_md
    assert text.encode() == before_md
    assert (out / "results.csv").read_bytes() == before_csv
    assert (out / "results.json").read_bytes() == before_json
    assert (out / "plots" / "accuracy_curve.png").is_file()
    assert "ali-replay compare solver.epochs=1" in text
    assert "| strategy | final avg acc | forgetting | BWT | train s | memory (MB) | peak RSS (MB) | seeds |" in text
    assert text.count("**") == 2  # exactly one best accuracy in bold


def test_same_seed_same_result(tmp_path):
    cfg = tiny_config(tmp_path / "a")
    first = run_single(cfg, "naive", 7)
    cfg.output_dir = str(tmp_path / "b")
    second = run_single(cfg, "naive", 7)
    assert first["final_avg_acc"] == second["final_avg_acc"]
    assert first["acc_matrix"] == second["acc_matrix"]


def test_tensorboard_logger(tmp_path):
    cfg = tiny_config(tmp_path / "tb", "logging.tensorboard=true")
    record = run_single(cfg, "naive", 0)
    assert list((tmp_path / "tb" / record["log_dir"] / "tensorboard").glob("events.out.tfevents.*"))


def test_task_incremental_run(tmp_path):
    cfg = tiny_config(tmp_path / "ti", "benchmark.scenario=task_incremental", "solver.epochs=3")
    record = run_single(cfg, "naive", 0)
    # Each head separates its own two classes: well above chance right after training it.
    assert all(record["acc_matrix"][i][i] > 0.6 for i in range(5))


def test_different_config_is_refused(tiny_results, tmp_path):
    src, _ = tiny_results
    out = _copy(src, tmp_path / "copy")
    before = _load(out)
    with pytest.raises(ConfigError) as err:
        compare(tiny_config(out, "solver.epochs=2"))
    assert "solver.epochs" in str(err.value) and "overwrite" in str(err.value)
    with pytest.raises(ConfigError, match="solver.epochs"):
        compare(tiny_config(out, "solver.epochs=2"), resume=True)
    assert _load(out) == before


def test_folder_with_results_needs_resume_or_overwrite(tiny_results, tmp_path):
    src, _ = tiny_results
    out = _copy(src, tmp_path / "again")
    before = (out / "results.json").read_bytes()
    with pytest.raises(ConfigError) as err:
        compare(tiny_config(out))  # the very same comparison, neither flag: nothing is run or skipped
    message = str(err.value)
    assert "already holds results" in message and "3 finished run(s)" in message
    assert "--resume" in message and "--overwrite" in message and "\n" not in message
    assert (out / "results.json").read_bytes() == before
    with pytest.raises(ConfigError, match="--resume"):
        run(tiny_config(out), "naive", 0)


def test_same_config_elsewhere_skips_finished_runs(tiny_results, tmp_path, caplog):
    src, _ = tiny_results
    out = _copy(src, tmp_path / "moved")  # output_dir, jobs and threads do not change the results
    before = _load(out)
    with caplog.at_level(logging.INFO, logger="benchmarks"):
        results = compare(tiny_config(out), resume=True)
    assert results["runs"] == before["runs"]
    assert sum("skipping" in m for m in caplog.messages) == 3


def test_resume_with_a_longer_run_list_and_overwrite(tiny_results, tmp_path):
    src, _ = tiny_results
    out = _copy(src, tmp_path / "copy")
    before = {(r["strategy"], r["seed"]): r for r in _load(out)["runs"]}
    with pytest.raises(ConfigError, match="resume"):
        compare(tiny_config(out, "seeds=[0,1]", "strategies=[naive]"))
    results = compare(tiny_config(out, "seeds=[0,1]", "strategies=[naive]"), resume=True)
    assert [(r["strategy"], r["seed"]) for r in results["runs"]] == [("naive", 0), ("naive", 1), ("joint", 0),
                                                                    ("er@small", 0)]
    for run_ in results["runs"]:
        if (run_["strategy"], run_["seed"]) in before:
            assert run_ == before[(run_["strategy"], run_["seed"])]
    assert results["config"]["strategies"] == ["naive", "joint", "er@small"]
    assert results["config"]["seeds"] == [0, 1]
    assert results["summary"]["naive"]["n_seeds"] == 2 and results["summary"]["joint"]["n_seeds"] == 1
    record = run(tiny_config(out, "solver.epochs=2"), "naive", 0, overwrite=True)
    assert record["strategy"] == "naive" and record["seed"] == 0 and len(record["acc_matrix"]) == 5
    assert record["started_at"] != before[("naive", 0)]["started_at"]
    assert [(r["strategy"], r["seed"]) for r in _load(out)["runs"]] == [("naive", 0)]
    assert not (out / "replay").exists()


def test_killed_comparison_resumes(tmp_path, repo_root, caplog):
    out = tmp_path / "killed"
    overrides = [*TINY, "solver.epochs=2", "strategies=[naive,joint]", "seeds=[0,1]", f"output_dir={out}"]
    script = textwrap.dedent(f"""
        import logging
        logging.basicConfig(level=logging.INFO)
        from benchmarks import compare, load_compare_config
        compare(load_compare_config(None, {overrides!r}))
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "child.log", "w") as log_file:
        child = subprocess.Popen([sys.executable, "-c", script], cwd=repo_root, env=env, stdout=log_file,
                                 stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        finished = []
        try:
            while time.monotonic() < deadline and child.poll() is None:
                if (out / "results.json").is_file():
                    finished = _load(out)["runs"]
                    if finished:
                        break
                time.sleep(0.05)
            child.send_signal(signal.SIGKILL)
        finally:
            child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL, (tmp_path / "child.log").read_text()[-2000:]
    at_kill = _load(out)["runs"]
    assert 1 <= len(at_kill) < 4
    with caplog.at_level(logging.INFO, logger="benchmarks"):
        results = compare(tiny_config(out, "solver.epochs=2", "strategies=[naive,joint]", "seeds=[0,1]"),
                          resume=True)
    assert [(r["strategy"], r["seed"]) for r in results["runs"]] == [("naive", 0), ("naive", 1), ("joint", 0),
                                                                    ("joint", 1)]
    for old in at_kill:  # finished runs were kept as they were, not re-run
        new = next(r for r in results["runs"] if (r["strategy"], r["seed"]) == (old["strategy"], old["seed"]))
        assert new == old
        assert any(f"skipping {old['strategy']} seed {old['seed']}" in m for m in caplog.messages)
    assert _load(out)["runs"] == results["runs"]


@pytest.mark.slow  # ~30-60 s: two spawned processes each import torch and Avalanche
def test_parallel_jobs_give_the_same_results(tiny_results, tmp_path):
    _, serial = tiny_results
    parallel = compare(tiny_config(tmp_path / "jobs2", "jobs=2"))
    assert [r["acc_matrix"] for r in parallel["runs"]] == [r["acc_matrix"] for r in serial["runs"]]
    assert [r["memory_bytes"] for r in parallel["runs"]] == [r["memory_bytes"] for r in serial["runs"]]
    assert {r["rss_scope"] for r in parallel["runs"]} == {"run"}
    assert len({r["pid"] for r in parallel["runs"]}) == 3  # one fresh process per run


def test_a_comparison_over_several_streams(tmp_path):
    """benchmarks: [...] runs the whole comparison on each stream, each into its folder, with a report over them."""
    import numpy as np

    rng = np.random.default_rng(0)  # a tiny cifar10.npz: 20 colour images of each of the 10 classes
    x = rng.integers(0, 256, size=(200, 32, 32, 3), dtype=np.uint8)
    y = np.repeat(np.arange(10), 20)
    np.savez(tmp_path / "cifar10.npz", x_train=x, y_train=y, x_test=x[::4], y_test=y[::4])
    out = tmp_path / "streams"
    results = compare(tiny_config(out, "strategies=[naive]", "benchmarks=[split_digits,split_cifar10_gray]",
                                  f"data.root={tmp_path}", "benchmark.validation=0.2"))
    assert list(results["streams"]) == ["split_digits", "split_cifar10_gray"]
    gray = _load(out / "split_cifar10_gray")
    assert gray["benchmark"] == "split_cifar10_gray" and gray["config"]["benchmarks"] == []
    assert len(gray["runs"]) == 1 and gray["runs"][0]["n_experiences"] == 5
    text = (out / "report.md").read_text()
    assert "| strategy | split_digits | train s | split_cifar10_gray | train s |" in text and "| naive |" in text
    assert write_report(out) == text  # the report over the streams is rebuilt as it was
    from benchmarks.select import select

    choices, _ = select([out], write=False)  # the folder stands for its streams
    assert set(choices[0].chosen.per_stream) == {"split_digits", "split_cifar10_gray"}
    with pytest.raises(ConfigError, match="more than once"):
        compare(tiny_config(out, "benchmarks=[split_digits,split_digits]"))
