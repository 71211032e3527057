"""The comparison's plots, drawn from results.json and the replayed samples each run saved beside it.

matplotlib's object API with the Agg canvas: no pyplot, no global backend change.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import metrics
from benchmarks.results import safe_name, strategy_order

log = logging.getLogger(__name__)


def plot_paths(results: dict) -> dict[str, Any]:
    """Relative paths of every plot the report links (the same ones `draw_plots` writes)."""
    order = strategy_order(results)
    paths: dict[str, Any] = {
        "curve": "plots/accuracy_curve.png",
        "matrices": {s: f"plots/acc_matrix_{safe_name(s)}.png" for s in order},
        "replay": {},
    }
    for strategy in order:
        run = first_preview_run(results, strategy)
        if run is not None:
            paths["replay"][strategy] = [
                (int(i), f"plots/replay_{safe_name(strategy)}_exp{int(i)}.png") for i in run["replay_experiences"]
            ]
    return paths


def first_preview_run(results: dict, strategy: str) -> dict | None:
    """The lowest-seed run of a strategy that saved replayed samples."""
    runs = sorted((r for r in results["runs"] if r["strategy"] == strategy and r.get("replay_experiences")),
                  key=lambda r: int(r["seed"]))
    return runs[0] if runs else None


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)


def _matrices(results: dict, strategy: str) -> np.ndarray:
    runs = [r for r in results["runs"] if r["strategy"] == strategy]
    return np.asarray([r["acc_matrix"] for r in runs], dtype=np.float64)


def draw_accuracy_curve(results: dict, path: Path) -> None:
    """Average accuracy over seen experiences after each experience; min-max band over seeds."""
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    for name in strategy_order(results):
        curves = np.asarray([metrics.avg_acc_curve(m) for m in _matrices(results, name)]) * 100.0
        x = np.arange(1, curves.shape[1] + 1)
        line, = ax.plot(x, curves.mean(axis=0), marker="o", label=name)
        if len(curves) > 1:
            ax.fill_between(x, curves.min(axis=0), curves.max(axis=0), color=line.get_color(), alpha=0.2)
    ax.set_xticks(range(1, 1 + max((len(r["acc_matrix"]) for r in results["runs"]), default=1)))
    ax.set_xlabel("experiences trained")
    ax.set_ylabel("average accuracy on seen experiences (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{results.get('benchmark')} ({results.get('scenario')}): mean, min-max band over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    _save(fig, path)


def draw_matrix(results: dict, strategy: str, path: Path) -> None:
    """Heat map of the seed-averaged accuracy matrix."""
    mats = _matrices(results, strategy) * 100.0
    mean = mats.mean(axis=0)
    t = mean.shape[0]
    fig = _figure(1.0 + 0.6 * t, 0.8 + 0.55 * t)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(mean, vmin=0, vmax=100, cmap="viridis")
    for i in range(t):
        for j in range(t):
            ax.text(j, i, f"{mean[i, j]:.0f}", ha="center", va="center",
                    color="white" if mean[i, j] < 60 else "black", fontsize=8 if t <= 10 else 5)
    ax.set_xticks(range(t))
    ax.set_yticks(range(t))
    ax.set_xlabel("test experience j")
    ax.set_ylabel("after training experience i")
    ax.set_title(f"{strategy}: accuracy (%), {len(mats)} seed(s)", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    _save(fig, path)


def draw_replay(images: np.ndarray, labels: np.ndarray, title: str, path: Path, limit: int = 32) -> None:
    """A grid of replayed samples (uint8 N x C x H x W) with their labels."""
    n = min(len(images), limit)
    cols = min(8, max(n, 1))
    rows = max(1, math.ceil(n / cols))
    c, h, w = images.shape[1:] if n else (1, 8, 8)
    pad_top, pad = max(4, h // 3), 2  # room above each tile for its label
    cell_h, cell_w = h + pad_top + pad, w + 2 * pad
    grid = np.full((rows * cell_h, cols * cell_w, 3), 255, dtype=np.uint8)
    for k in range(n):
        r, col = divmod(k, cols)
        tile = images[k][:3] if c >= 3 else np.repeat(images[k][:1], 3, axis=0)
        top, left = r * cell_h + pad_top, col * cell_w + pad
        grid[top:top + h, left:left + w] = np.transpose(tile, (1, 2, 0))
    fig = _figure(0.9 * cols + 0.4, 0.9 * rows * cell_h / cell_w + 0.6)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(grid, interpolation="nearest")
    for k in range(n):
        r, col = divmod(k, cols)
        ax.text(col * cell_w + cell_w / 2, r * cell_h + pad_top - 1, str(int(labels[k])), ha="center",
                va="bottom", fontsize=8, color="black")
    ax.axis("off")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def draw_plots(results: dict, out: Path) -> list[Path]:
    """Every plot the report links; returns the written paths."""
    written = []
    paths = plot_paths(results)
    if not results["runs"]:
        return written
    draw_accuracy_curve(results, out / paths["curve"])
    written.append(out / paths["curve"])
    for name, rel in paths["matrices"].items():
        draw_matrix(results, name, out / rel)
        written.append(out / rel)
    for name, items in paths["replay"].items():
        run = first_preview_run(results, name)
        file = out / run["replay_file"]
        if not file.is_file():
            log.warning("replayed samples of %s seed %s are missing (%s); skipping their plots",
                        name, run["seed"], file)
            continue
        with np.load(file) as arrays:
            for i, rel in items:
                draw_replay(arrays[f"exp{i}_images"], arrays[f"exp{i}_labels"],
                            f"{name}, seed {run['seed']}: replayed while training experience {i}", out / rel)
                written.append(out / rel)
    return written
