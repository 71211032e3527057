"""The accuracy-matrix summaries against values worked out by hand."""
import pytest

from benchmarks import metrics

# acc[i][j]: accuracy on experience j after training experience i.
ACC = [
    [0.90, 0.10, 0.00],
    [0.60, 0.80, 0.20],
    [0.50, 0.70, 0.95],
]


def test_final_avg_acc_is_mean_of_last_row():
    assert metrics.final_avg_acc(ACC) == pytest.approx((0.50 + 0.70 + 0.95) / 3)


def test_avg_forgetting_by_hand():
    # j=0: max(0.90, 0.60) - 0.50 = 0.40; j=1: max(0.10, 0.80) - 0.70 = 0.10
    assert metrics.avg_forgetting(ACC) == pytest.approx((0.40 + 0.10) / 2)


def test_bwt_by_hand():
    # j=0: 0.50 - 0.90 = -0.40; j=1: 0.70 - 0.80 = -0.10
    assert metrics.bwt(ACC) == pytest.approx((-0.40 - 0.10) / 2)


def test_avg_acc_curve_by_hand():
    assert metrics.avg_acc_curve(ACC) == pytest.approx([0.90, (0.60 + 0.80) / 2, (0.50 + 0.70 + 0.95) / 3])


def test_no_forgetting_and_positive_transfer():
    acc = [[0.5, 0.0], [0.75, 0.9]]
    assert metrics.avg_forgetting(acc) == pytest.approx(-0.25)
    assert metrics.bwt(acc) == pytest.approx(0.25)
    assert metrics.final_avg_acc(acc) == pytest.approx(0.825)


def test_single_experience_and_bad_shapes():
    assert metrics.avg_forgetting([[0.7]]) == 0.0
    assert metrics.bwt([[0.7]]) == 0.0
    assert metrics.final_avg_acc([[0.7]]) == pytest.approx(0.7)
    with pytest.raises(ValueError):
        metrics.final_avg_acc([[0.1, 0.2]])
    with pytest.raises(ValueError):
        metrics.bwt([])
