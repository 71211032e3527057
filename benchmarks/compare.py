"""Run continual-learning strategies on a stream and collect comparable results.

`run_single(cfg, spec, seed)` performs one run: it seeds python, numpy and torch, builds the
stream, the solver and the strategy (`strategies.registry.build_strategy`), then trains
experience by experience. After each experience it evaluates on every test experience with
Avalanche's `accuracy_metrics(experience=True)` (through an `EvaluationPlugin` that also drives
an `InteractiveLogger`, a `CSVLogger` under `logs/<strategy>_seed<k>/` and, when
`logging.tensorboard` is true, a `TensorboardLogger` there) to fill row i of `acc_matrix`.
With `benchmark.validation` > 0 the stream also holds a validation stream (that share of each
experience's training data, held out) and each row is evaluated on it as well: `val_acc_matrix` and
`final_avg_val_acc` sit beside `acc_matrix` and `final_avg_acc` (both None without validation), so
recipes can be chosen on validation data (`benchmarks.select`) and reported on test data.
Only the `train` calls count towards `train_seconds` (per experience: `experience_seconds`). `peak_rss_mb` is
`resource.getrusage(RUSAGE_SELF).ru_maxrss` when the run ends: with `jobs > 1` each run has its
own process (`rss_scope: "run"`); with `jobs = 1` all runs share the calling process, so it is the
process peak so far (`rss_scope: "process"`). `memory_bytes` is the largest
`strategy_memory_bytes` seen after any experience, and `memory` the same bytes by kind
(`strategy_memory`: generator, stored_examples, statistics, teacher) after that experience,
so they add up to `memory_bytes`. The samples a generative strategy replayed
(`replay_preview`) are kept per experience in `replay/<strategy>_seed<k>.npz`.

`compare(cfg)` runs every strategy x seed and, after each run, rewrites `results.json` and
`results.csv` atomically, so an interrupted comparison resumes where it stopped (`resume=True`,
the CLI's `--resume`): runs already in `results.json` are skipped (and logged as such). One process
at a time writes into an output folder (`ali_replay.run_lock`); a second one is refused with the
first one's pid. `jobs > 1` runs in spawned processes
(`ProcessPoolExecutor`, one fresh process per run), each with `torch.set_num_threads(threads or
max(1, cores // jobs))`; a run's results depend only on its config and seed, not on `jobs`
(with equal thread counts the numbers are identical).

Started by `torchrun` (several processes), every run trains data-parallel: each process takes
its shard of every mini-batch (`solver.batch_size` is the global batch), the solver and the
ALI train in DistributedDataParallel, each process evaluates its shard of the test set and the
accuracies are averaged over processes; rank 0 alone writes results, logs and plots.
"""
from __future__ import annotations

import concurrent.futures as futures
import logging
import multiprocessing
import os
import resource
import re
import shlex
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ali_replay import distributed
from ali_replay.errors import ConfigError, UserError
from ali_replay.run_lock import RunLock
from ali_replay.runtime import resolve_device, seed_everything
from benchmarks import metrics
from benchmarks.config import config_differences, fingerprint, validate_compare_config
from benchmarks.report import RESULTS_FILE, read_results, safe_name, write_outputs
from benchmarks.solvers import build_solver
from benchmarks.streams import build_stream

log = logging.getLogger(__name__)

ACC_KEY = "Top1_Acc_Exp/eval_phase/{stream}/"  # Avalanche's per-experience accuracy, by stream name
PREVIEW_LIMIT = 64  # replayed samples kept per experience
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


def run_id(strategy_spec: str, seed: int) -> str:
    """The name of a run's log folder and files."""
    return f"{safe_name(strategy_spec)}_seed{int(seed)}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _peak_rss_mb() -> float:
    # Linux reports ru_maxrss in KiB (macOS in bytes).
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2 ** 20 if sys.platform == "darwin" else 1024), 1)


def _registry():
    from strategies import registry

    return registry


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


def _loggers(cfg: DictConfig, log_dir: Path) -> list:
    from avalanche.logging import CSVLogger, InteractiveLogger

    log_dir.mkdir(parents=True, exist_ok=True)
    loggers = [InteractiveLogger(), CSVLogger(str(log_dir))]
    if cfg.logging.tensorboard:
        from avalanche.logging import TensorboardLogger

        loggers.append(TensorboardLogger(tb_log_dir=str(log_dir / "tensorboard")))
    return loggers


def _close_loggers(loggers: Sequence[Any]) -> None:
    for logger_ in loggers:
        close = getattr(logger_, "close", None)
        if callable(close):
            try:
                close()
            except Exception as err:  # noqa: BLE001 - closing must not mask the run's result
                log.debug("closing %s failed: %s", type(logger_).__name__, err)


# Strategies whose every network trains in DistributedDataParallel under torchrun.
# vae_replay is Avalanche's GenerativeReplay, whose VAE would train apart in each process.
DISTRIBUTED_STRATEGIES = ("naive", "joint", "er", "ali_replay", "gan_replay")


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
    unsupported = [s for s in cfg.strategies if re.split(r"[@+]", str(s))[0] not in DISTRIBUTED_STRATEGIES]
    if unsupported:
        raise ConfigError(f"strategies {unsupported} cannot train data-parallel under torchrun; supported: "
                          f"{', '.join(DISTRIBUTED_STRATEGIES)} (run the others without torchrun)")
    distributed.current().local_batch(int(cfg.solver.batch_size))  # raises unless divisible


def _mean_over_processes(row: list[float]) -> list[float]:
    """A row of accuracies averaged over the processes (each evaluated its shard; equal shard sizes)."""
    return distributed.current().mean(torch.tensor(row, dtype=torch.float64)).tolist()


def accuracy_row(metric_values: dict, n_experiences: int, row: int, stream: str = "test_stream") -> list[float]:
    """Per-experience accuracies on `stream` (test_stream, valid_stream) from Avalanche's metric dictionary."""
    prefix = ACC_KEY.format(stream=stream)
    values: dict[int, float] = {}
    for key, value in metric_values.items():
        if key.startswith(prefix) and "/Exp" in key:
            exp = int(key.rsplit("/Exp", 1)[1])
            values[exp] = float(value)
    missing = [j for j in range(n_experiences) if j not in values]
    if missing:
        raise RuntimeError(f"after experience {row} the evaluator reported no accuracy for {stream} "
                           f"experiences {missing} (keys: {sorted(metric_values)[:5]}...)")
    return [values[j] for j in range(n_experiences)]


def _is_offline(strategy: Any) -> bool:
    """Avalanche's JointTraining trains once on the whole stream."""
    from avalanche.training import JointTraining

    return isinstance(strategy, JointTraining)


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    x = images.detach().float().cpu().clamp(0, 1).mul(255).round().to(torch.uint8)
    return x.numpy()


# ---------------------------------------------------------------------------------------------
# one run


def run_single(cfg: DictConfig, strategy_spec: str, seed: int) -> dict:
    """Train one strategy with one seed on the stream and return its record (see module doc)."""
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training.plugins import EvaluationPlugin

    registry = _registry()
    started_at = _now()
    seed = int(seed)
    dist_ctx = distributed.current()
    device = dist_ctx.device(resolve_device(cfg.device))
    out = Path(cfg.output_dir)
    rid = run_id(strategy_spec, seed)

    seed_everything(seed)
    bundle = build_stream(cfg.benchmark, cfg.data, seed)
    name, params = registry.load_strategy_params(strategy_spec, bundle.input_shape)  # a bare name: its shape's recipe
    solver = build_solver(cfg.solver.name, bundle.input_shape, bundle.num_classes, bundle.scenario)
    loggers = _loggers(cfg, out / "logs" / rid) if dist_ctx.is_main else []
    evaluator = EvaluationPlugin(accuracy_metrics(experience=True), loggers=loggers)
    ctx = registry.StrategyContext(
        input_shape=bundle.input_shape,
        num_classes=bundle.num_classes,
        scenario=bundle.scenario,
        train_epochs=int(cfg.solver.epochs),
        train_mb_size=dist_ctx.local_batch(int(cfg.solver.batch_size)),
        eval_mb_size=int(cfg.eval_mb_size),
        lr=float(cfg.solver.lr),
        device=device,
        evaluator=evaluator,
        plugins=[],
        seed=seed,
        generator_epochs=None if cfg.generator.epochs is None else int(cfg.generator.epochs),
    )
    strategy = registry.build_strategy(name, solver, params, ctx)
    strategy.model = distributed.wrap(strategy.model.to(device))
    train_stream = bundle.benchmark.train_stream
    test_stream = bundle.benchmark.test_stream
    valid_stream = bundle.validation_stream
    t_count = bundle.n_experiences
    acc_matrix: list[list[float]] = []
    val_matrix: list[list[float]] = []

    def evaluate(row: int) -> tuple[list[float], list[float] | None]:
        """Accuracy rows on the test stream and, when there is one, the validation stream."""
        test_row = _mean_over_processes(accuracy_row(strategy.eval(test_stream, num_workers=0), t_count, row))
        if valid_stream is None:
            return test_row, None
        metric_values = strategy.eval(valid_stream, num_workers=0)
        return test_row, _mean_over_processes(accuracy_row(metric_values, t_count, row, "valid_stream"))
    previews: dict[str, np.ndarray] = {}
    replay_experiences: list[int] = []
    train_seconds = eval_seconds = 0.0
    experience_seconds: list[float] = []
    memory = dict.fromkeys(registry.MEMORY_KINDS, 0)  # bytes kept by kind, where their sum was largest
    offline = _is_offline(strategy)
    try:
        if offline:
            # Joint training sees the whole stream at once: one fit, one evaluation, and the
            # same row for every "after experience i" (a reference, not a continual learner).
            tic = time.perf_counter()
            strategy.train(list(train_stream), num_workers=0)
            train_seconds = time.perf_counter() - tic
            tic = time.perf_counter()
            row, val_row = evaluate(t_count - 1)
            eval_seconds = time.perf_counter() - tic
            acc_matrix = [list(row) for _ in range(t_count)]
            if val_row is not None:
                val_matrix = [list(val_row) for _ in range(t_count)]
            memory = registry.strategy_memory(strategy)
        else:
            for i, experience in enumerate(train_stream):
                log.info("%s seed %d: training experience %d/%d (classes %s)", strategy_spec, seed, i + 1,
                         t_count, sorted(experience.classes_in_this_experience))
                tic = time.perf_counter()
                strategy.train(experience, num_workers=0)
                experience_seconds.append(round(time.perf_counter() - tic, 3))
                train_seconds += experience_seconds[-1]
                kept = registry.strategy_memory(strategy)
                if sum(kept.values()) > sum(memory.values()):
                    memory = kept
                preview = registry.replay_preview(strategy)
                if preview is not None:
                    images, labels = preview
                    previews[f"exp{i}_images"] = _to_uint8(images[:PREVIEW_LIMIT])
                    previews[f"exp{i}_labels"] = labels[:PREVIEW_LIMIT].detach().cpu().to(torch.int64).numpy()
                    replay_experiences.append(i)
                tic = time.perf_counter()
                row, val_row = evaluate(i)
                acc_matrix.append(row)
                if val_row is not None:
                    val_matrix.append(val_row)
                eval_seconds += time.perf_counter() - tic
    finally:
        _close_loggers(loggers)
    replay_file = None
    if previews and dist_ctx.is_main:
        replay_file = f"replay/{rid}.npz"
        (out / "replay").mkdir(parents=True, exist_ok=True)
        tmp = out / "replay" / f".{rid}.tmp.npz"
        np.savez_compressed(tmp, **previews)
        os.replace(tmp, out / replay_file)
    record = {
        "strategy": strategy_spec,
        "seed": seed,
        "acc_matrix": acc_matrix,
        "final_avg_acc": metrics.final_avg_acc(acc_matrix),
        "avg_forgetting": metrics.avg_forgetting(acc_matrix),
        "bwt": metrics.bwt(acc_matrix),
        "avg_acc_curve": metrics.avg_acc_curve(acc_matrix),
        "validation": bundle.validation,
        "val_acc_matrix": val_matrix if valid_stream is not None else None,
        "final_avg_val_acc": metrics.final_avg_acc(val_matrix) if valid_stream is not None else None,
        "train_seconds": round(train_seconds, 3),
        "eval_seconds": round(eval_seconds, 3),
        "experience_seconds": experience_seconds,
        "peak_rss_mb": _peak_rss_mb(),
        "rss_scope": "process",
        "memory_bytes": sum(memory.values()),
        "memory": memory,
        "offline": offline,
        "n_experiences": t_count,
        "class_order": bundle.class_order,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "processes": dist_ctx.world_size,
        "strategy_params": _as_plain(params) if params is not None else None,
        "replay_experiences": replay_experiences,
        "replay_file": replay_file,
        "log_dir": f"logs/{rid}",
        "started_at": started_at,
        "finished_at": _now(),
        "pid": os.getpid(),
    }
    log.info("%s seed %d: final average accuracy %.4f%s, %.1f s training", strategy_spec, seed,
             record["final_avg_acc"], "" if valid_stream is None else f" (validation {record['final_avg_val_acc']:.4f})",
             train_seconds)
    return record


def _child_run(plain_cfg: dict, strategy_spec: str, seed: int, threads: int, log_level: int) -> dict:
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
    registry = _registry()
    for spec in cfg.strategies:
        registry.load_strategy_params(spec)  # unknown names, recipes and keys fail before any training
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
        _run_planned(cfg, out, todo, results, dist_ctx)
    finally:
        if lock is not None:
            lock.release()  # on return, on errors and on Ctrl-C alike
    return distributed.broadcast_object(results)  # the same results in every process


def _run_planned(cfg: DictConfig, out: Path, todo: list[tuple[str, int]], results: dict | None,
                 dist_ctx: distributed.DistContext) -> None:
    """Train the planned runs, saving each finished one (rank 0), then write the report."""
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
