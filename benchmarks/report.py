"""The comparison's report, table and plots, rebuilt from `results.json`.

`write_report(results_dir)` reads `results.json` and (re)writes, deterministically:

* `report.md` - settings, the summary table (strategy, final average accuracy mean ± std over
  seeds with the best in bold, forgetting, BWT, training seconds, memory, peak RSS, seeds),
  the memory by kind (generator weights, stored examples, statistics, teacher; "-" for runs
  recorded before results held it), links to the plots, per-run rows, and the command line
  that produced the results. Runs with a validation stream (`benchmark.validation` > 0) add
  their final validation accuracy beside the test one in both tables. Everything in it comes
  from `results.json`, so rebuilding it gives the same bytes.
* `results.csv` - one row per run.
* `plots/accuracy_curve.png` - average accuracy over the experiences seen so far, after each
  experience: one line per strategy (mean over seeds) with a min-max band over seeds.
* `plots/acc_matrix_<strategy>.png` - the accuracy matrix (mean over seeds) as a heat map.
* `plots/replay_<strategy>_exp<i>.png` - the samples a generative strategy replayed while
  training experience i, with their labels (first seed). These are drawn from the
  `replay/<run>.npz` arrays each run saved beside `results.json` (the only input besides it).

The `summary` block of `results.json` is recomputed from its runs as well.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from benchmarks import metrics
from benchmarks.plots import draw_plots, first_preview_run, plot_paths
from benchmarks.results import RESULTS_FILE, atomic_write_text, dump_json, read_results, stream_folders, strategy_order

log = logging.getLogger(__name__)

CSV_COLUMNS: tuple[str, ...] = (
    "strategy", "seed", "final_avg_acc", "avg_forgetting", "bwt", "train_seconds", "eval_seconds",
    "peak_rss_mb", "rss_scope", "memory_bytes", "memory", "threads", "device", "started_at", "finished_at",
    "avg_acc_curve", "acc_matrix", "final_avg_val_acc", "val_acc_matrix",
)
MB = 2 ** 20
KB = 2 ** 10
# The kinds of kept bytes a run records under `memory` (strategies.strategy_memory), as headed.
MEMORY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("generator", "generator"), ("stored_examples", "stored examples"), ("statistics", "statistics"),
    ("teacher", "teacher"),
)


# ---------------------------------------------------------------------------------------------
# summary


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def _std(values: Sequence[float]) -> float:
    """Sample standard deviation (ddof = 1); 0.0 for a single value."""
    if len(values) < 2:
        return 0.0
    return float(np.std(np.asarray(values, dtype=np.float64), ddof=1))


def summarize(runs: Iterable[dict], order: Sequence[str] | None = None) -> dict[str, dict]:
    """Per strategy: means (and the accuracy's std) over its seeds."""
    runs = list(runs)
    names = list(order) if order is not None else []
    for run in runs:
        if run["strategy"] not in names:
            names.append(run["strategy"])
    summary: dict[str, dict] = {}
    for name in names:
        mine = [r for r in runs if r["strategy"] == name]
        if not mine:
            continue
        acc = [float(r["final_avg_acc"]) for r in mine]
        memory = [int(r["memory_bytes"]) for r in mine if r.get("memory_bytes") is not None]
        rss = [float(r["peak_rss_mb"]) for r in mine if r.get("peak_rss_mb") is not None]
        val = [float(r["final_avg_val_acc"]) for r in mine if r.get("final_avg_val_acc") is not None]
        kinds = [r["memory"] for r in mine if r.get("memory") is not None]
        summary[name] = {
            "final_avg_acc_mean": _mean(acc),
            "final_avg_acc_std": _std(acc),
            # Over the seeds that recorded validation accuracy (None when none did).
            "final_avg_val_acc_mean": _mean(val) if val else None,
            "final_avg_val_acc_std": _std(val) if val else None,
            "n_seeds": len(mine),
            "seeds": sorted(int(r["seed"]) for r in mine),
            "train_seconds_mean": _mean([float(r["train_seconds"]) for r in mine]),
            "avg_forgetting_mean": _mean([float(r["avg_forgetting"]) for r in mine]),
            "avg_forgetting_std": _std([float(r["avg_forgetting"]) for r in mine]),
            "bwt_mean": _mean([float(r["bwt"]) for r in mine]),
            "bwt_std": _std([float(r["bwt"]) for r in mine]),
            "memory_bytes": max(memory) if memory else None,
            # Each kind's largest over the seeds that recorded it (None when none did).
            "memory": {k: max(int(m.get(k, 0)) for m in kinds) for k, _ in MEMORY_COLUMNS} if kinds else None,
            "peak_rss_mb_max": max(rss) if rss else None,
        }
    return summary


def csv_text(runs: Iterable[dict]) -> str:
    """`results.csv`: one row per run (matrices as JSON text)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for run in runs:
        row = []
        for column in CSV_COLUMNS:
            value = run.get(column)
            if isinstance(value, (list, dict)):
                value = json.dumps(value)
            elif isinstance(value, float):
                value = repr(value)
            row.append("" if value is None else value)
        writer.writerow(row)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# markdown


def _pct(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return _num(100.0 * value, digits)


def _num(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.0"


def _mb(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value / MB:.2f}"


def _size(value: int | None) -> str:
    """Bytes in kB below a MB, else in MB (both powers of two); "-" when not recorded."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    return f"{value / KB:.1f} kB" if value < MB else f"{value / MB:.2f} MB"


def _or(value: Any, default: str) -> Any:
    return default if value is None else value


def has_validation(results: dict) -> bool:
    """True when some run recorded a validation accuracy."""
    return any(r.get("final_avg_val_acc") is not None for r in results["runs"])


def _memory_table(order: Sequence[str], summary: dict[str, dict]) -> list[str]:
    """The "Memory" section: each strategy's kept bytes, in all and by kind (the largest over seeds)."""
    lines = [
        "", "## Memory", "",
        "What each strategy keeps between experiences besides the solver, each figure the largest over seeds; kB = 2^10 and "
        "MB = 2^20 bytes. generator: the generative model's weights (discriminator included); stored examples: "
        "real examples, or the encoder's codes of real ones, with their labels; statistics: per-class latent "
        "Gaussians; teacher: the frozen previous solver that labels replay (a copy of the solver, not a memory "
        "of the data). \"-\": recorded before results held the breakdown.",
        "",
        "| strategy | memory | " + " | ".join(head for _, head in MEMORY_COLUMNS) + " |",
        "| --- | --- |" + " --- |" * len(MEMORY_COLUMNS),
    ]
    for name in order:
        kinds = summary[name]["memory"] or {}
        cells = " | ".join(_size(kinds.get(key)) for key, _ in MEMORY_COLUMNS)
        lines.append(f"| {name} | {_size(summary[name]['memory_bytes'])} | {cells} |")
    return lines


PHASE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("replay_making", "replay making"), ("generator_steps", "generator steps"), ("solver_steps", "solver steps"),
    ("evaluation", "evaluation"), ("other", "other"),
)


def _phase_table(order: Sequence[str], runs: Sequence[dict]) -> list[str]:
    """The "Where the time went" section: each strategy's seconds by phase, mean over seeds."""
    lines = [
        "", "## Where the time went", "",
        "Seconds by phase, mean over seeds (`phase_seconds` in results.json; each experience's in "
        "`experience_phase_seconds`). replay making: replay sets, per-iteration replay draws and the sleep "
        "phase; generator steps: the generator's training; solver steps: forward to optimiser update, the "
        "replay loss included; other: the rest of training (data loading, callbacks, copies). \"-\": recorded "
        "before results held the breakdown.",
        "",
        "| strategy | train s | " + " | ".join(head for _, head in PHASE_COLUMNS) + " |",
        "| --- | --- |" + " --- |" * len(PHASE_COLUMNS),
    ]
    for name in order:
        mine = [r for r in runs if r["strategy"] == name]
        timed = [r["phase_seconds"] for r in mine if r.get("phase_seconds")]
        cells = [_num(_mean([t[key] for t in timed])) if timed else "-" for key, _ in PHASE_COLUMNS]
        lines.append(f"| {name} | {_num(_mean([float(r['train_seconds']) for r in mine]))} | "
                     + " | ".join(cells) + " |")
    return lines


def render_markdown(results: dict) -> str:
    """The text of `report.md` (a pure function of the results)."""
    cfg = results.get("config") or {}
    order = strategy_order(results)
    summary = summarize(results["runs"], order)
    with_val = has_validation(results)
    lines = [f"# Continual-learning comparison: {results.get('benchmark')} ({results.get('scenario')})", ""]
    solver = cfg.get("solver") or {}
    generator = cfg.get("generator") or {}
    bench = cfg.get("benchmark") or {}
    first = results["runs"][0] if results["runs"] else {}
    lines += [
        f"- benchmark: `{results.get('benchmark')}`, scenario `{results.get('scenario')}`, "
        f"{first.get('n_experiences', 'n/a')} experiences, class order "
        f"{'shuffled by seed' if bench.get('shuffle_classes') else first.get('class_order', 'n/a')}",
        f"- solver: `{solver.get('name')}`, {solver.get('epochs')} epochs per experience, batch "
        f"{solver.get('batch_size')}, Adam lr {solver.get('lr')}",
        f"- generator epochs per experience: {_or(generator.get('epochs'), 'strategy default')}",
        f"- seeds: {', '.join(str(s) for s in cfg.get('seeds', []))}; runs finished: {len(results['runs'])}",
    ]
    if bench.get("transforms") == "avalanche":
        lines.append("- transforms: the default transforms of Avalanche's own classic benchmark of the data set "
                     "(`benchmark.transforms=avalanche`: training augmentation where it has one, Normalize)")
    if with_val:
        lines.append(f"- validation: {_or(bench.get('validation'), 'n/a')} of each class's training images held "
                     "out; `final val acc` is the final average accuracy on them. Choose recipes on it "
                     "(`ali-replay select`), report test accuracy")
    val_head, val_rule = (" final val acc |", " --- |") if with_val else ("", "")
    lines += [
        "",
        "## Summary",
        "",
        "Accuracies, forgetting and BWT in %, mean over seeds (accuracy ± sample std). Memory is what "
        "the strategy keeps for replay (buffer or generator), by kind under Memory below; MB = 2^20 bytes.",
        "",
        f"| strategy | final avg acc |{val_head} forgetting | BWT | train s | memory (MB) | peak RSS (MB) | seeds |",
        f"| --- | --- |{val_rule} --- | --- | --- | --- | --- | --- |",
    ]
    best = max((s["final_avg_acc_mean"] for s in summary.values()), default=None)
    for name in order:
        s = summary[name]
        acc = f"{_pct(s['final_avg_acc_mean'])} ± {_pct(s['final_avg_acc_std'])}"
        if best is not None and _pct(s["final_avg_acc_mean"]) == _pct(best):
            acc = f"**{acc}**"
        rss = _num(s["peak_rss_mb_max"], 0)
        val = f" {_pct(s['final_avg_val_acc_mean'])} ± {_pct(s['final_avg_val_acc_std'])} |" if with_val else ""
        lines.append(
            f"| {name} | {acc} |{val} {_pct(s['avg_forgetting_mean'])} | {_pct(s['bwt_mean'])} | "
            f"{_num(s['train_seconds_mean'])} | {_mb(s['memory_bytes'])} | {rss} | {s['n_seeds']} |"
        )
    scopes = sorted({r.get("rss_scope", "process") for r in results["runs"]})
    note = {
        "run": "Peak RSS is each run's own process (runs were executed in separate processes).",
        "process": "Peak RSS is the peak of the process so far when the run ended (runs shared one "
                   "process, jobs = 1), so later runs include earlier ones' peaks.",
    }
    lines += [""] + [note.get(s, f"Peak RSS scope: {s}.") for s in scopes]
    lines += _memory_table(order, summary)
    lines += _phase_table(order, results["runs"])
    paths = plot_paths(results)
    lines += ["", "## Plots", "", f"![average accuracy over seen experiences]({paths['curve']})", ""]
    for name in order:
        lines.append(f"- accuracy matrix of {name}: [{paths['matrices'][name]}]({paths['matrices'][name]})")
    for name, items in paths["replay"].items():
        run = first_preview_run(results, name)
        links = ", ".join(f"[experience {i}]({p})" for i, p in items)
        lines.append(f"- replayed samples of {name} (seed {run['seed']}): {links}")
    lines += ["", "## Runs", "",
              f"| strategy | seed | final avg acc |{val_head} forgetting | BWT | train s | acc after each experience |",
              f"| --- | --- | --- |{val_rule} --- | --- | --- | --- |"]
    for name in order:
        for run in sorted((r for r in results["runs"] if r["strategy"] == name), key=lambda r: int(r["seed"])):
            curve = " / ".join(_pct(v) for v in run.get("avg_acc_curve") or metrics.avg_acc_curve(run["acc_matrix"]))
            val = f" {_pct(run.get('final_avg_val_acc'))} |" if with_val else ""
            lines.append(f"| {name} | {run['seed']} | {_pct(run['final_avg_acc'])} |{val} {_pct(run['avg_forgetting'])} | "
                         f"{_pct(run['bwt'])} | {_num(run['train_seconds'])} | {curve} |")
    lines += ["", "## Command", "", "```", str(results.get("command") or "(not recorded)"), "```", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# entry point


def write_outputs(results: dict, out: Path, plots: bool = True) -> str:
    """Write results.json (with a fresh summary), results.csv, report.md and the plots."""
    out = Path(out)
    results["summary"] = summarize(results["runs"], strategy_order(results))
    atomic_write_text(out / RESULTS_FILE, dump_json(results))
    atomic_write_text(out / "results.csv", csv_text(results["runs"]))
    text = render_markdown(results)
    atomic_write_text(out / "report.md", text)
    if plots:
        draw_plots(results, out)
    return text


def write_report(results_dir: str | Path) -> str:
    """Rebuild report.md, results.csv, the summary and the plots from results.json; return the markdown.

    A folder of several streams' comparisons (`benchmarks: [...]`) gets each rebuilt and the report over them.
    """
    out = Path(results_dir)
    streams = stream_folders(out)
    if streams:
        for name in streams:
            write_report(out / name)
        return write_streams_report(out, streams)
    results = read_results(out)
    summary = summarize(results["runs"], strategy_order(results))
    if results.get("summary") != summary:
        results["summary"] = summary
        atomic_write_text(out / RESULTS_FILE, dump_json(results))
    atomic_write_text(out / "results.csv", csv_text(results["runs"]))
    text = render_markdown(results)
    atomic_write_text(out / "report.md", text)
    draw_plots(results, out)
    log.info("wrote %s, %s and plots under %s", out / "report.md", out / "results.csv", out / "plots")
    return text


def write_streams_report(out: Path, names: Sequence[str]) -> str:
    """report.md over several streams' comparisons (out/<name>/results.json): each strategy on each stream."""
    out = Path(out)
    per_stream = {name: read_results(out / name) for name in names}
    order = list(dict.fromkeys(s for results in per_stream.values() for s in strategy_order(results)))
    summaries = {name: summarize(results["runs"], strategy_order(results)) for name, results in per_stream.items()}
    lines = ["# Continual-learning comparison over streams", "",
             "Final average accuracy (%), mean ± sample std over seeds, and the mean training seconds, of every "
             "strategy on each stream (the same config, only `benchmark.name` changed); each stream's own report "
             "is in its folder.", "",
             "| strategy |" + "".join(f" {name} | train s |" for name in names),
             "| --- |" + " --- | --- |" * len(names)]
    for strategy in order:
        cells = []
        for name in names:
            s = summaries[name].get(strategy)
            cells.append(" - | - |" if s is None else f" {_pct(s['final_avg_acc_mean'])} ± "
                         f"{_pct(s['final_avg_acc_std'])} | {_num(s['train_seconds_mean'], 0)} |")
        lines.append(f"| {strategy} |" + "".join(cells))
    lines += ["", "Reports: " + ", ".join(f"[{name}]({name}/report.md)" for name in names), ""]
    text = "\n".join(lines)
    atomic_write_text(out / "report.md", text)
    return text
