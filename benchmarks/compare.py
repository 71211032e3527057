"""Run every strategy x seed of a comparison, writing results run by run, resumable.

`compare(cfg)` resolves each listed strategy spec once, for the stream's input shape (so unknown
names, recipes and keys fail before any training), then runs every strategy x seed
(`benchmarks.single_run.run_single`) and, after each run, rewrites `results.json` and `results.csv`
atomically, so an interrupted comparison resumes where it stopped (`resume=True`, the CLI's
`--resume`): runs already in `results.json` are skipped (and logged as such). One process at a
time writes into an output folder (`ali_replay.run_lock`); a second one is refused with the first
one's pid. `jobs > 1` runs in spawned processes (`ProcessPoolExecutor`, one fresh process per run),
each with `torch.set_num_threads(threads or max(1, cores // jobs))`; a run's results depend only on
its config and seed, not on `jobs` (with equal thread counts the numbers are identical). There,
`peak_rss_mb` is each run's own (`rss_scope: "run"`); with `jobs = 1` it is the shared process's
peak so far (`rss_scope: "process"`).

Started by `torchrun` (several processes), every run trains data-parallel (`benchmarks.single_run`);
rank 0 alone locks, reads and writes the output folder and tells the other processes which runs to do.
"""
from __future__ import annotations

import concurrent.futures as futures
import json
import logging
import multiprocessing
import os
import re
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from ali_replay import distributed
from ali_replay.errors import ConfigError, UserError
from ali_replay.run_lock import RunLock
from ali_replay.runtime import resolve_device
from benchmarks.config import config_differences, fingerprint, validate_compare_config
from benchmarks.report import write_outputs
from benchmarks.results import RESULTS_FILE, read_results
from benchmarks.single_run import run_id, run_single  # noqa: F401 - run_id: the name of a run's files, for callers
from benchmarks.streams import stream_shape

log = logging.getLogger(__name__)

RESULTS_VERSION = 1


# ---------------------------------------------------------------------------------------------
# helpers


def available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def threads_per_run(cfg: DictConfig) -> int:
    """`threads` when set, else the cores split evenly between the parallel runs (or torchrun's processes)."""
    if cfg.threads is not None:
        return int(cfg.threads)
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, available_cores() // (int(cfg.jobs) * local_processes))


def _as_plain(cfg: DictConfig | dict) -> dict:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def default_command() -> str:
    """The command line of this process, as `ali-replay ...` when run from the CLI."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name.startswith("ali-replay"):
        return shlex.join(["ali-replay", *argv[1:]])
    if not argv or argv[0] in ("", "-c"):
        return shlex.join(["python", *argv]) if argv else "python"
    return shlex.join(["python", *argv])


def check_distributed(cfg: DictConfig) -> None:
    """ConfigError for what data-parallel continual runs (under torchrun) do not support."""
    world = distributed.current().world_size
    if world == 1:
        return
    if int(cfg.jobs) != 1:
        raise ConfigError(f"jobs={cfg.jobs} under torchrun: the {world} processes already share every run; "
                          "use jobs=1 with torchrun, or jobs=N without it")
    if cfg.benchmark.scenario != "class_incremental":
        raise ConfigError("under torchrun only benchmark.scenario=class_incremental is supported (the "
                          "task-incremental solver grows heads that DistributedDataParallel cannot follow); "
                          "run task_incremental without torchrun")
    from strategies import STRATEGY_NAMES, kind

    unsupported = [s for s in cfg.strategies if not kind(re.split(r"[@+]", str(s))[0]).distributed]
    if unsupported:
        supported = [name for name in STRATEGY_NAMES if kind(name).distributed]
        raise ConfigError(f"strategies {unsupported} cannot train data-parallel under torchrun; supported: "
                          f"{', '.join(supported)} (run the others without torchrun)")
    distributed.current().local_batch(int(cfg.solver.batch_size))  # raises unless divisible


def _child_run(plain_cfg: dict, strategy_spec: Any, seed: int, threads: int, log_level: int) -> dict:
    """A run inside a spawned worker process (one process per run)."""
    if log_level < logging.WARNING and not logging.getLogger().handlers:
        logging.basicConfig(level=log_level, format="%(asctime)s %(name)s [%(process)d] %(message)s")
    torch.set_num_threads(threads)
    record = run_single(OmegaConf.create(plain_cfg), strategy_spec, seed)
    record["rss_scope"] = "run"
    return record


# ---------------------------------------------------------------------------------------------
# a comparison


def _owned_outputs(out: Path) -> list[Path]:
    return [out / RESULTS_FILE, out / "results.csv", out / "report.md", out / "plots", out / "replay", out / "logs"]


def _start_state(cfg: DictConfig, out: Path, resume: bool, overwrite: bool, command: str) -> dict:
    """The results to extend: fresh, or the finished runs already in `out` when compatible."""
    if resume and overwrite:
        raise ConfigError("choose either resume or overwrite, not both")
    plain = _as_plain(cfg)
    fresh = {
        "version": RESULTS_VERSION,
        "benchmark": cfg.benchmark.name,
        "scenario": cfg.benchmark.scenario,
        "config": plain,
        "command": command,
        "runs": [],
        "summary": {},
    }
    if not (out / RESULTS_FILE).exists():
        return fresh
    if overwrite:
        log.warning("overwriting the results in %s", out)
        for path in _owned_outputs(out):
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        return fresh
    try:
        old = read_results(out)
    except Exception as err:
        raise ConfigError(f"{out / RESULTS_FILE} cannot be read ({err}); pass --overwrite (overwrite=True) "
                          f"to replace it or choose another output_dir") from err
    differences = config_differences(fingerprint(old.get("config") or {}), fingerprint(plain))
    if not differences and not resume:
        finished = len(old.get("runs") or [])
        raise ConfigError(
            f"{out} already holds results of this comparison ({finished} finished run(s)); pass --resume "
            f"(resume=True) to continue it, --overwrite (overwrite=True) to start again there, or choose "
            f"another output_dir")
    if differences:
        run_list_only = all(d in ("strategies", "seeds") for d in differences)
        if not (resume and run_list_only):
            hint = ("pass --resume (resume=True) to add the newly listed runs to the finished ones; "
                    if run_list_only else "")
            raise ConfigError(
                f"{out} holds results of a different config (differs in: {', '.join(differences)}); "
                f"{hint}pass --overwrite (overwrite=True) to discard them, or choose another output_dir")
        # Same experiment, longer (or other) run list: keep every finished run and record the
        # union of the lists, so the folder still describes everything it holds.
        old_cfg = old.get("config") or {}
        plain["strategies"] = _union(old_cfg.get("strategies", []), plain["strategies"])
        plain["seeds"] = _union(old_cfg.get("seeds", []), plain["seeds"])
        log.info("resuming %s with strategies %s and seeds %s", out, plain["strategies"], plain["seeds"])
    old["config"] = plain
    old["benchmark"] = cfg.benchmark.name
    old["scenario"] = cfg.benchmark.scenario
    old["command"] = command
    return old


def _union(first: Sequence, second: Sequence) -> list:
    """The items of `first`, then those of `second` not in it."""
    return list(first) + [item for item in second if item not in first]


def _sort_runs(runs: list[dict], plain_cfg: dict) -> list[dict]:
    """Runs in the order of the recorded strategies, then seeds."""
    strategies = list(plain_cfg["strategies"])
    seeds = [int(s) for s in plain_cfg["seeds"]]
    return sorted(runs, key=lambda r: (strategies.index(r["strategy"]), seeds.index(int(r["seed"]))))


def compare(cfg: DictConfig, resume: bool = False, overwrite: bool = False, *, command: str | None = None) -> dict:
    """Run every strategy x seed of `cfg`, writing results run by run; return the results dict.

    An output directory that already holds results is refused with a ConfigError unless
    `overwrite` (discard them) or `resume`: of the same config, its finished runs are skipped
    (`jobs`, `threads`, `output_dir` and `logging` do not count as config); when only
    `strategies`/`seeds` differ, every finished run is kept, the listed ones that are missing
    run, and the union of both lists is recorded. Another config is refused even with `resume`.
    While it runs, the folder is locked against other processes (FolderInUseError naming the
    pid). `command` is recorded for the report (default: this process's command line).
    """
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    cfg = validate_compare_config(cfg.copy())
    if cfg.benchmarks:
        return compare_streams(cfg, resume, overwrite, command=command)
    from strategies import resolve

    # Each spec once, for the stream's shape: unknown names, recipes and keys fail before any training.
    resolved = {str(spec): resolve(str(spec), stream_shape(cfg.benchmark.name)) for spec in cfg.strategies}
    for spec in resolved.values():
        if cfg.benchmark.scenario not in spec.kind.scenarios:
            raise ConfigError(f"strategy {spec.name} does not take benchmark.scenario={cfg.benchmark.scenario}; it "
                              f"takes {', '.join(spec.kind.scenarios)}")
    dist_ctx = distributed.init_from_env(resolve_device(cfg.device))  # joins torchrun's group, if any
    check_distributed(cfg)
    out = Path(cfg.output_dir)
    # Rank 0 alone locks, reads and writes the output folder, and tells the other processes which
    # runs to do.
    results, todo, error = None, None, None
    lock = RunLock(out) if dist_ctx.is_main else None
    if lock is not None:
        try:
            lock.acquire()
            results, todo = _plan(cfg, out, resume, overwrite, command)
        except UserError as err:
            lock.release()
            if not dist_ctx.enabled:
                raise
            error = str(err)
        except BaseException:
            lock.release()
            raise
    error, todo = distributed.broadcast_object((error, todo))
    if error is not None:
        raise UserError(error)
    try:
        _run_planned(cfg, out, [(resolved[spec], seed) for spec, seed in todo], results, dist_ctx)
    finally:
        if lock is not None:
            lock.release()  # on return, on errors and on Ctrl-C alike
    return distributed.broadcast_object(results)  # the same results in every process


def compare_streams(cfg: DictConfig, resume: bool = False, overwrite: bool = False, *,
                    command: str | None = None) -> dict:
    """The comparison on each of `cfg.benchmarks` in turn, each into output_dir/<name>; a report over them.

    Returns {"streams": {name: that stream's results}}; output_dir/report.md holds the table over them.
    """
    from benchmarks.report import write_streams_report
    from benchmarks.results import STREAMS_FILE, atomic_write_text

    out = Path(cfg.output_dir)
    if distributed.current().is_main:
        atomic_write_text(out / STREAMS_FILE, json.dumps(list(cfg.benchmarks)) + "\n")
    streams = {}
    for name in cfg.benchmarks:
        one = cfg.copy()
        one.benchmarks = []
        one.benchmark.name = name
        one.output_dir = str(out / name)
        log.info("stream %s of %s: %s", list(cfg.benchmarks).index(name) + 1, len(cfg.benchmarks), name)
        streams[name] = compare(one, resume=resume, overwrite=overwrite, command=command)
    if distributed.current().is_main:
        write_streams_report(out, list(cfg.benchmarks))
    return {"streams": streams}


def _run_planned(cfg: DictConfig, out: Path, todo: list[tuple[Any, int]], results: dict | None,
                 dist_ctx: distributed.DistContext) -> None:
    """Train the planned runs (resolved specs x seeds), saving each finished one (rank 0), then write the report."""
    threads = threads_per_run(cfg)

    def record(run: dict) -> None:
        if not dist_ctx.is_main:
            return
        results["runs"] = _sort_runs(results["runs"] + [run], results["config"])
        write_outputs(results, out, plots=False)
        log.info("saved %s seed %d to %s", run["strategy"], run["seed"], out / RESULTS_FILE)

    plain = _as_plain(cfg)
    if int(cfg.jobs) == 1:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for spec, seed in todo:
                record(run_single(cfg, spec, seed))
        finally:
            torch.set_num_threads(previous)
    else:
        context = multiprocessing.get_context("spawn")
        level = logging.getLogger().getEffectiveLevel()
        with futures.ProcessPoolExecutor(max_workers=min(int(cfg.jobs), max(1, len(todo))), mp_context=context,
                                         max_tasks_per_child=1) as pool:
            pending = {pool.submit(_child_run, plain, spec, seed, threads, level): (spec, seed)
                       for spec, seed in todo}
            try:
                for future in futures.as_completed(pending):
                    record(future.result())
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
    if dist_ctx.is_main:
        text = write_outputs(results, out, plots=True)
        log.debug("report:\n%s", text)


def _plan(cfg: DictConfig, out: Path, resume: bool, overwrite: bool, command: str | None
          ) -> tuple[dict, list[tuple[str, int]]]:
    """The results so far (written back at once, with the current config) and the runs still to do."""
    out.mkdir(parents=True, exist_ok=True)
    results = _start_state(cfg, out, resume, overwrite, command or default_command())
    done = {(r["strategy"], int(r["seed"])) for r in results["runs"]}
    todo = []
    for spec in cfg.strategies:
        for seed in cfg.seeds:
            if (spec, int(seed)) in done:
                log.info("skipping %s seed %d: already finished in %s", spec, int(seed), out / RESULTS_FILE)
            else:
                todo.append((spec, int(seed)))
    # Record the (possibly new) config before the first run, so a crash leaves a consistent file.
    write_outputs(results, out, plots=False)
    log.info("%d run(s) to do, %d already finished; %d job(s) x %d thread(s)", len(todo), len(done),
             int(cfg.jobs), threads_per_run(cfg))
    return results, todo


def run(cfg: DictConfig, strategy_spec: str, seed: int, resume: bool = False, overwrite: bool = False, *,
        command: str | None = None) -> dict:
    """One strategy with one seed (`ali-replay run`); return that run's record.

    The output folder gets the same files as `compare` (results.json with one run, results.csv,
    report.md, plots); with `resume`, a folder already holding the finished run returns it without
    re-running.
    """
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    single = cfg.copy()
    single.strategies = [str(strategy_spec)]
    single.seeds = [int(seed)]
    results = compare(single, resume=resume, overwrite=overwrite, command=command)
    return next(r for r in results["runs"] if r["strategy"] == str(strategy_spec) and int(r["seed"]) == int(seed))
