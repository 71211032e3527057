"""One run of a comparison, in named steps: build it, train and evaluate it, record it.

`run_single(cfg, spec, seed)` seeds python, numpy and torch, builds the stream, the solver and
the strategy (`build_run`), then trains experience by experience (`train_and_evaluate`). After
each experience it evaluates on every test experience with Avalanche's
`accuracy_metrics(experience=True)` (through an `EvaluationPlugin` that also drives an
`InteractiveLogger`, a `CSVLogger` under `logs/<strategy>_seed<k>/` and, when
`logging.tensorboard` is true, a `TensorboardLogger` there) to fill row i of `acc_matrix`. With
`benchmark.validation` > 0 each row is evaluated on the validation stream as well, so recipes can
be chosen on validation data (`benchmarks.select`) and reported on test data. `record` turns what
it measured into a `benchmarks.record.RunRecord`, whose fields document each one: seconds,
memory by kind (the largest kept bytes after any experience), peak RSS, the replayed samples
(`replay/<strategy>_seed<k>.npz`).

Under torchrun (several processes) every run trains data-parallel: each process takes its shard
of every mini-batch (`solver.batch_size` is the global batch), the solver and the ALI train in
DistributedDataParallel, each process evaluates its shard of the test set and the accuracies are
averaged over processes; rank 0 alone writes logs and replayed samples.
"""
from __future__ import annotations

import logging
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ali_replay import distributed
from ali_replay.runtime import resolve_device, seed_everything
from benchmarks import metrics
from benchmarks.record import RunRecord
from benchmarks.results import safe_name
from benchmarks.solvers import build_solver
from benchmarks.streams import StreamBundle, build_stream

log = logging.getLogger(__name__)

ACC_KEY = "Top1_Acc_Exp/eval_phase/{stream}/"  # Avalanche's per-experience accuracy, by stream name
DIAGNOSED = ("ali_replay", "dgr", "gan_replay")  # the strategies whose replay `diagnostics: true` measures


def run_id(strategy_spec: str, seed: int) -> str:
    """The name of a run's log folder and files."""
    return f"{safe_name(strategy_spec)}_seed{int(seed)}"


def accuracy_row(metric_values: dict, n_experiences: int, row: int, stream: str = "test_stream") -> list[float]:
    """Per-experience accuracies on `stream` (test_stream, valid_stream) from Avalanche's metric dictionary."""
    prefix = ACC_KEY.format(stream=stream)
    values: dict[int, float] = {}
    for key, value in metric_values.items():
        if key.startswith(prefix) and "/Exp" in key:
            values[int(key.rsplit("/Exp", 1)[1])] = float(value)
    missing = [j for j in range(n_experiences) if j not in values]
    if missing:
        raise RuntimeError(f"after experience {row} the evaluator reported no accuracy for {stream} "
                           f"experiences {missing} (keys: {sorted(metric_values)[:5]}...)")
    return [values[j] for j in range(n_experiences)]


@dataclass
class Run:
    """A run ready to train: its stream, its strategy and where it writes."""

    spec: Any  # strategies.ResolvedSpec
    seed: int
    bundle: StreamBundle
    strategy: Any  # an Avalanche SupervisedTemplate
    loggers: list
    device: torch.device
    out: Path
    rid: str
    started_at: str
    timer: Any  # strategies.SolverTimer, the strategy's first plugin
    diagnostics: Any = None  # benchmarks.diagnostics.ReplayDiagnostics, with `diagnostics: true`


@dataclass
class Outcome:
    """What training and evaluating a run measured."""

    acc_matrix: list[list[float]] = field(default_factory=list)
    val_matrix: list[list[float]] = field(default_factory=list)
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    experience_seconds: list[float] = field(default_factory=list)
    memory: Any = None  # strategies.KeptBytes, where their total was largest
    experience_phases: list[dict[str, float]] = field(default_factory=list)  # each experience's seconds by phase
    previews: dict[str, np.ndarray] = field(default_factory=dict)
    replay_experiences: list[int] = field(default_factory=list)
    offline: bool = False


def build_run(cfg: DictConfig, spec: Any, seed: int) -> Run:
    """Seed everything, then build the stream, the solver and the strategy of one run.

    `spec` is a spec string (resolved here, for the stream's input shape) or one already resolved.
    """
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training.plugins import EvaluationPlugin

    from strategies import ResolvedSpec, SolverTimer, StrategyContext, build_strategy, resolve

    started_at = _now()
    dist_ctx = distributed.current()
    device = dist_ctx.device(resolve_device(cfg.device))
    seed_everything(seed)
    bundle = build_stream(cfg.benchmark, cfg.data, seed)
    resolved = spec if isinstance(spec, ResolvedSpec) else resolve(spec, bundle.input_shape)
    out = Path(cfg.output_dir)
    rid = run_id(resolved.spec, seed)
    solver = build_solver(cfg.solver.name, bundle.input_shape, bundle.num_classes, bundle.scenario)
    loggers = _loggers(cfg, out / "logs" / rid) if dist_ctx.is_main else []
    timer = SolverTimer()
    ctx = StrategyContext(
        input_shape=bundle.input_shape, num_classes=bundle.num_classes, scenario=bundle.scenario,
        train_epochs=int(cfg.solver.epochs), train_mb_size=dist_ctx.local_batch(int(cfg.solver.batch_size)),
        eval_mb_size=int(cfg.eval_mb_size), lr=float(cfg.solver.lr), device=device,
        evaluator=EvaluationPlugin(accuracy_metrics(experience=True), loggers=loggers), plugins=[timer], seed=seed,
        generator_epochs=None if cfg.generator.epochs is None else int(cfg.generator.epochs))
    strategy = build_strategy(resolved, solver, None, ctx)
    strategy.model = distributed.wrap(strategy.model.to(device))
    diagnostics = None
    if cfg.get("diagnostics") and resolved.name in DIAGNOSED:
        from benchmarks.diagnostics import ReplayDiagnostics, stream_judge

        diagnostics = ReplayDiagnostics(stream_judge(bundle, seed), bundle.benchmark.test_stream)
        strategy.plugins.append(diagnostics)  # after the replay plugin: it reads the replay set that one made
    return Run(resolved, seed, bundle, strategy, loggers, device, out, rid, started_at, timer, diagnostics)


def train_and_evaluate(run: Run) -> Outcome:
    """Train experience by experience, evaluating after each; joint training sees the whole stream at once."""
    from strategies import KeptBytes, replay_preview, strategy_memory, strategy_phases

    strategy, bundle = run.strategy, run.bundle
    n = bundle.n_experiences
    outcome = Outcome(memory=KeptBytes(), offline=_is_offline(strategy))
    if outcome.offline:
        # One fit, one evaluation, and the same row for every "after experience i" (a reference, not a
        # continual learner).
        tic = time.perf_counter()
        strategy.train(list(bundle.benchmark.train_stream), num_workers=0)
        outcome.train_seconds = time.perf_counter() - tic
        outcome.experience_phases.append(_phases_since(run, outcome, outcome.train_seconds, strategy_phases))
        _evaluate(run, n - 1, outcome, repeat=n)
        outcome.memory = strategy_memory(strategy)
        return outcome
    for i, experience in enumerate(bundle.benchmark.train_stream):
        log.info("%s seed %d: training experience %d/%d (classes %s)", run.spec.spec, run.seed, i + 1, n,
                 sorted(experience.classes_in_this_experience))
        measuring = run.diagnostics.seconds if run.diagnostics is not None else 0.0
        tic = time.perf_counter()
        strategy.train(experience, num_workers=0)
        measured = (run.diagnostics.seconds if run.diagnostics is not None else 0.0) - measuring
        outcome.experience_seconds.append(round(time.perf_counter() - tic - measured, 3))
        outcome.train_seconds += outcome.experience_seconds[-1]
        outcome.experience_phases.append(_phases_since(run, outcome, outcome.experience_seconds[-1], strategy_phases))
        kept = strategy_memory(strategy)
        if kept.total > outcome.memory.total:
            outcome.memory = kept
        preview = replay_preview(strategy)
        if preview is not None:
            images, labels = preview
            outcome.previews[f"exp{i}_images"] = _to_uint8(images)
            outcome.previews[f"exp{i}_labels"] = labels.detach().cpu().to(torch.int64).numpy()
            outcome.replay_experiences.append(i)
        _evaluate(run, i, outcome)
    return outcome


def _phases_since(run: Run, outcome: Outcome, seconds: float, strategy_phases) -> dict[str, float]:
    """The last experience's `seconds` of training by phase: the timers' growth since the experiences before,
    the rest as `other` (data loading, callbacks, copies of the solver)."""
    from strategies import PHASES

    totals = run.timer.phases.merged()
    for phase, value in strategy_phases(run.strategy).items():
        totals[phase] = totals.get(phase, 0.0) + value
    before = {p: sum(e[p] for e in outcome.experience_phases) for p in PHASES}
    phases = {p: round(totals.get(p, 0.0) - before[p], 3) for p in PHASES}
    phases["other"] = round(seconds - sum(phases.values()), 3)
    return phases


def phase_seconds(outcome: Outcome) -> dict[str, float]:
    """A run's training and evaluation seconds by phase (results.json's `phase_seconds`)."""
    from strategies import PHASES

    total = {p: round(sum(e[p] for e in outcome.experience_phases), 3) for p in (*PHASES, "other")}
    return {**{p: total[p] for p in PHASES}, "evaluation": round(outcome.eval_seconds, 3), "other": total["other"]}


def _evaluate(run: Run, row: int, outcome: Outcome, repeat: int = 1) -> None:
    """Accuracy rows on the test stream and, when there is one, the validation stream (averaged over processes)."""
    tic = time.perf_counter()
    bundle, n = run.bundle, run.bundle.n_experiences
    test_row = _mean_over_processes(accuracy_row(run.strategy.eval(bundle.benchmark.test_stream, num_workers=0),
                                                 n, row))
    outcome.acc_matrix += [list(test_row) for _ in range(repeat)]
    if bundle.validation_stream is not None:
        values = run.strategy.eval(bundle.validation_stream, num_workers=0)
        val_row = _mean_over_processes(accuracy_row(values, n, row, "valid_stream"))
        outcome.val_matrix += [list(val_row) for _ in range(repeat)]
    outcome.eval_seconds += time.perf_counter() - tic


def save_previews(run: Run, outcome: Outcome) -> Optional[str]:
    """The replayed samples in replay/<run>.npz (rank 0; written atomically), or None when there are none."""
    if not outcome.previews or not distributed.current().is_main:
        return None
    name = f"replay/{run.rid}.npz"
    (run.out / "replay").mkdir(parents=True, exist_ok=True)
    tmp = run.out / "replay" / f".{run.rid}.tmp.npz"
    np.savez_compressed(tmp, **outcome.previews)
    os.replace(tmp, run.out / name)
    return name


def record(run: Run, outcome: Outcome, replay_file: Optional[str]) -> RunRecord:
    """The run's RunRecord."""
    acc, val = outcome.acc_matrix, outcome.val_matrix
    with_validation = run.bundle.validation_stream is not None
    return RunRecord(
        strategy=run.spec.spec, recipe=run.spec.recipe, seed=run.seed, acc_matrix=acc,
        final_avg_acc=metrics.final_avg_acc(acc), avg_forgetting=metrics.avg_forgetting(acc), bwt=metrics.bwt(acc),
        avg_acc_curve=metrics.avg_acc_curve(acc), validation=run.bundle.validation,
        val_acc_matrix=val if with_validation else None,
        final_avg_val_acc=metrics.final_avg_acc(val) if with_validation else None,
        train_seconds=round(outcome.train_seconds, 3), eval_seconds=round(outcome.eval_seconds, 3),
        experience_seconds=outcome.experience_seconds, phase_seconds=phase_seconds(outcome),
        experience_phase_seconds=outcome.experience_phases, peak_rss_mb=_peak_rss_mb(), rss_scope="process",
        memory_bytes=outcome.memory.total, memory=outcome.memory.as_dict(), offline=outcome.offline,
        n_experiences=run.bundle.n_experiences, class_order=run.bundle.class_order,
        threads=torch.get_num_threads(), device=str(run.device), processes=distributed.current().world_size,
        strategy_params=run.spec.as_dict(), replay_experiences=outcome.replay_experiences,
        replay_file=replay_file, replay_diagnostics=run.diagnostics.entries if run.diagnostics is not None else None,
        log_dir=f"logs/{run.rid}", started_at=run.started_at, finished_at=_now(),
        pid=os.getpid())


def run_single(cfg: DictConfig, spec: Any, seed: int) -> dict:
    """Train one strategy (a spec, or one resolved) with one seed on the stream; return its record as a dict."""
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    run = build_run(cfg, spec, int(seed))
    try:
        outcome = train_and_evaluate(run)
    finally:
        _close_loggers(run.loggers)
    result = record(run, outcome, save_previews(run, outcome))
    log.info("%s seed %d: final average accuracy %.4f%s, %.1f s training", result.strategy, result.seed,
             result.final_avg_acc, "" if result.final_avg_val_acc is None
             else f" (validation {result.final_avg_val_acc:.4f})", result.train_seconds)
    return result.as_dict()


# ---------------------------------------------------------------------------------------------
# helpers


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _peak_rss_mb() -> float:
    # Linux reports ru_maxrss in KiB (macOS in bytes).
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2 ** 20 if sys.platform == "darwin" else 1024), 1)


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


def _mean_over_processes(row: list[float]) -> list[float]:
    """A row of accuracies averaged over the processes (each evaluated its shard; equal shard sizes)."""
    return distributed.current().mean(torch.tensor(row, dtype=torch.float64)).tolist()


def _is_offline(strategy: Any) -> bool:
    """Avalanche's JointTraining trains once on the whole stream."""
    from avalanche.training import JointTraining

    return isinstance(strategy, JointTraining)


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    return images.detach().float().cpu().clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
