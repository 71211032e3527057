"""Continual-learning summaries of an accuracy matrix.

`acc[i][j]` is the test accuracy on experience j after training on experiences 0..i, for a
stream of T experiences (a T x T matrix, rows in training order). Values are fractions in [0, 1].
"""
from __future__ import annotations

from typing import Sequence

Matrix = Sequence[Sequence[float]]


def _square(acc: Matrix) -> list[list[float]]:
    """The matrix as a list of float rows, checked to be non-empty and square."""
    rows = [[float(v) for v in row] for row in acc]
    if not rows or any(len(row) != len(rows) for row in rows):
        raise ValueError(f"accuracy matrix must be square and non-empty, got row lengths {[len(r) for r in rows]}")
    return rows


def final_avg_acc(acc: Matrix) -> float:
    """Average accuracy after the last experience: (1/T) * sum_j acc[T-1][j]."""
    rows = _square(acc)
    last = rows[-1]
    return sum(last) / len(last)


def avg_forgetting(acc: Matrix) -> float:
    """Average forgetting: (1/(T-1)) * sum_{j<T-1} ( max_{i<T-1} acc[i][j] - acc[T-1][j] ).

    The best accuracy ever reached on an earlier experience j, before the last experience was
    trained, minus its final accuracy. The maximum runs over every earlier row (rows i < j hold
    accuracies before j was trained, which are normally below the later ones). 0.0 when T = 1.
    """
    rows = _square(acc)
    t = len(rows)
    if t < 2:
        return 0.0
    drops = [max(rows[i][j] for i in range(t - 1)) - rows[t - 1][j] for j in range(t - 1)]
    return sum(drops) / len(drops)


def bwt(acc: Matrix) -> float:
    """Backward transfer: (1/(T-1)) * sum_{j<T-1} ( acc[T-1][j] - acc[j][j] ).

    Final accuracy on each earlier experience minus its accuracy right after it was trained
    (negative when the learner forgets). 0.0 when T = 1.
    """
    rows = _square(acc)
    t = len(rows)
    if t < 2:
        return 0.0
    diffs = [rows[t - 1][j] - rows[j][j] for j in range(t - 1)]
    return sum(diffs) / len(diffs)


def avg_acc_curve(acc: Matrix) -> list[float]:
    """Average accuracy over the experiences seen so far, after each one: mean_{j<=i} acc[i][j]."""
    rows = _square(acc)
    return [sum(row[: i + 1]) / (i + 1) for i, row in enumerate(rows)]
