"""RunRecord: one run's results, the schema of each entry of results.json's `runs`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional


@dataclass
class RunRecord:
    """What one strategy x seed run recorded (`benchmarks.single_run.run_single`); its fields are results.json's.

    Accuracies are fractions in [0, 1]; row i of a matrix is the accuracy on every experience
    after training experience i. Seconds count `train` calls only (`train_seconds`, per
    experience `experience_seconds`), and evaluation apart (`eval_seconds`); `phase_seconds`
    splits both by phase (`strategies.timing`).
    """

    strategy: str  # the spec as listed in the config
    recipe: Optional[str]  # the recipe that ran (None: the strategy's typed defaults)
    seed: int
    acc_matrix: list[list[float]]
    final_avg_acc: float
    avg_forgetting: float
    bwt: float
    avg_acc_curve: list[float]
    validation: float  # share of each class's training images held out
    val_acc_matrix: Optional[list[list[float]]]  # None without validation
    final_avg_val_acc: Optional[float]
    train_seconds: float
    eval_seconds: float
    experience_seconds: list[float]
    # seconds by phase: replay_making (replay sets, per-iteration draws, the sleep phase), generator_steps,
    # solver_steps (forward to update, the replay loss included), evaluation, other (the rest of training)
    phase_seconds: dict[str, float]
    experience_phase_seconds: list[dict[str, float]]  # each experience's training seconds by phase
    peak_rss_mb: float  # ru_maxrss when the run ended
    rss_scope: str  # "run": a process of its own (jobs > 1); "process": the shared process's peak so far
    memory_bytes: int  # the largest kept bytes after any experience
    memory: dict[str, int]  # those bytes by kind (strategies.KeptBytes)
    offline: bool  # trained once on the whole stream
    n_experiences: int
    class_order: list[int]
    threads: int
    device: str
    processes: int  # torchrun's world size (1: one process)
    strategy_params: dict[str, Any]  # every setting of the resolved spec
    replay_experiences: list[int]  # experiences with replayed samples in `replay_file`
    replay_file: Optional[str]
    # with `diagnostics: true`: per experience with replay, the judge's view of it (benchmarks.diagnostics)
    replay_diagnostics: Optional[list[dict[str, Any]]]
    log_dir: str
    started_at: str
    finished_at: str
    pid: int

    def as_dict(self) -> dict[str, Any]:
        """The record as results.json holds it."""
        return dataclasses.asdict(self)


RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(RunRecord))
