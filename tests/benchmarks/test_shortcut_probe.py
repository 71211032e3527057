"""The shortcut probe on the embedded digits: replayed digits look like real ones to the solver."""
import pytest

from benchmarks.shortcut_probe import probe


@pytest.mark.slow
def test_on_digits_the_solver_reads_replay_and_real_images_alike():
    result = probe("split_digits", "data", epochs=2, seed=0)
    assert result["old_classes"] == [0, 1] and result["new_classes"] == [2, 3]
    # the solver learnt the old pair from replay, and what it learnt carries to real digits
    assert result["replay"]["accuracy"] > 0.6
    assert result["round_trips"]["accuracy"] > 0.6
    assert result["real_test_images"]["accuracy"] > 0.8
    assert result["real_test_images"]["to_new_classes"] < 0.2


@pytest.mark.slow
@pytest.mark.parametrize("options", [dict(solver_input="reconstruction"), dict(lwf_alpha=1.0),
                                     dict(round_trip_weight=0.5)])
def test_each_remedy_runs_records_itself_and_keeps_the_old_digits(options):
    result = probe("split_digits", "data", epochs=2, seed=0, **options)
    assert all(result[key] == value for key, value in options.items())
    # every remedy still replays: the old pair's real digits kept far above what no replay keeps
    # (none, class-incremental); the reconstruction solver keeps about half at this tiny size
    assert result["real_test_images"]["accuracy"] > 0.35
