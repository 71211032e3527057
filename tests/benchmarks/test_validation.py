"""benchmark.validation: a seeded, class-stratified hold-out of each experience's training data."""
import csv
import json
from collections import Counter

import numpy as np
import pytest

from ali_replay import data as data_module
from ali_replay.errors import ConfigError
from benchmarks import compare, load_compare_config, run_single
from benchmarks.config import fingerprint
from benchmarks.streams import build_stream, validation_split

from .conftest import tiny_config


@pytest.fixture(scope="module")
def digits():
    return data_module.load_dataset("digits")


def _keys(images) -> list[bytes]:
    """One byte string per image (uint8 or float in [0, 1]), to compare contents."""
    return [bytes(np.asarray(x).tobytes()) for x in images]


def _stream_items(stream) -> Counter:
    """(image bytes, label) of every item a stream serves, as a multiset."""
    items = Counter()
    for exp in stream:
        for i in range(len(exp.dataset)):
            x, y, _ = exp.dataset[i]
            items[(bytes((x * 255).round().to(dtype=__import__("torch").uint8).numpy().tobytes()), int(y))] += 1
    return items


def _split_items(split, indices) -> Counter:
    return Counter(zip(_keys(split.images[indices].numpy()), (int(t) for t in split.targets[indices])))


def test_split_is_disjoint_stratified_and_complete(digits):
    targets = digits.train.targets.numpy()
    train, val = validation_split(targets, 0.1, seed=0)
    assert len(np.intersect1d(train, val)) == 0
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(targets)))
    for label in range(10):
        n = int((targets == label).sum())
        held = int((targets[val] == label).sum())
        assert held == round(0.1 * n), label  # each class holds out its own share
    # A larger share stays stratified: every class within one example of share * n.
    _, val30 = validation_split(targets, 0.3, seed=0)
    for label in range(10):
        n = int((targets == label).sum())
        assert abs(int((targets[val30] == label).sum()) - 0.3 * n) <= 1


def test_split_is_reproducible_and_follows_the_seed(digits):
    targets = digits.train.targets
    a = validation_split(targets, 0.1, seed=3)[1]
    b = validation_split(targets, 0.1, seed=3)[1]
    c = validation_split(targets, 0.1, seed=4)[1]
    assert np.array_equal(a, b)
    assert len(a) == len(c) and not np.array_equal(a, c)
    # The draw does not depend on the order other draws happened in (it has its own generator).
    np.random.seed(123)
    assert np.array_equal(validation_split(targets, 0.1, seed=3)[1], a)


def test_zero_share_holds_out_nothing(digits):
    train, val = validation_split(digits.train.targets, 0.0, seed=0)
    assert len(val) == 0 and np.array_equal(train, np.arange(len(digits.train.targets)))
    default = build_stream({"name": "split_digits"}, None, seed=0)
    zero = build_stream({"name": "split_digits", "validation": 0.0}, None, seed=0)
    assert zero.validation_stream is None and "valid" not in zero.benchmark.streams
    for a, b in zip(default.benchmark.train_stream, zero.benchmark.train_stream):
        assert len(a.dataset) == len(b.dataset)
        assert all(np.array_equal(a.dataset[i][0].numpy(), b.dataset[i][0].numpy()) for i in range(0, len(a.dataset), 17))


def test_stream_serves_the_held_out_images_apart_from_train_and_test(digits):
    bundle = build_stream({"name": "split_digits", "validation": 0.2}, None, seed=1)
    bm = bundle.benchmark
    val_items = _stream_items(bundle.validation_stream)
    train_items = _stream_items(bm.train_stream)
    test_items = _stream_items(bm.test_stream)
    # The streams serve exactly the indexed images of the data set's splits...
    assert val_items == _split_items(digits.train, bundle.validation_indices)
    assert train_items == _split_items(digits.train, bundle.train_indices)
    assert test_items == _split_items(digits.test, np.arange(len(digits.test.targets)))
    # ...and no validation image is among the training or test images.
    assert not set(val_items) & set(train_items)
    assert not set(val_items) & set(test_items)
    assert sum(val_items.values()) + sum(train_items.values()) == 1400
    # Each experience holds out a share of its own classes.
    for v, t in zip(bundle.validation_stream, bm.train_stream):
        assert sorted(v.classes_in_this_experience) == sorted(t.classes_in_this_experience)
        assert len(v.dataset) / (len(v.dataset) + len(t.dataset)) == pytest.approx(0.2, abs=0.02)


def test_task_incremental_validation_carries_task_labels():
    bundle = build_stream({"name": "split_digits", "validation": 0.1, "scenario": "task_incremental"}, None, 0)
    assert [exp.task_label for exp in bundle.validation_stream] == [0, 1, 2, 3, 4]


def test_share_out_of_range_is_refused():
    for value in ("1.0", "-0.1", "1.5"):
        with pytest.raises(ConfigError, match=r"benchmark\.validation"):
            load_compare_config(None, [f"benchmark.validation={value}"])
    with pytest.raises(ConfigError, match=r"benchmark\.validation"):
        build_stream({"name": "split_digits", "validation": 1.0}, None, 0)
    with pytest.raises(ConfigError, match="too few"):
        validation_split([0, 0, 1], 0.5, seed=0)


def test_results_without_the_key_still_match_the_config():
    # A results folder written before the key existed held nothing out: it stays resumable.
    cfg = load_compare_config(None, [])
    old = fingerprint(cfg)
    del old["benchmark"]["validation"]
    assert fingerprint(old) == fingerprint(cfg)
    assert fingerprint(load_compare_config(None, ["benchmark.validation=0.1"])) != fingerprint(cfg)


def test_runs_record_validation_beside_test(tmp_path):
    out = tmp_path / "val"
    cfg = tiny_config(out, "benchmark.validation=0.2", "strategies=[naive,joint]")
    results = compare(cfg, command="ali-replay compare benchmark.validation=0.2")
    for run in results["runs"]:
        assert run["validation"] == 0.2
        assert len(run["val_acc_matrix"]) == 5 and all(len(r) == 5 for r in run["val_acc_matrix"])
        assert run["final_avg_val_acc"] == pytest.approx(sum(run["val_acc_matrix"][-1]) / 5)
        assert 0.0 < run["final_avg_val_acc"] <= 1.0
        # Validation and test are different images, so their accuracies are not copies of each other.
        assert run["val_acc_matrix"] != run["acc_matrix"]
    naive = results["runs"][0]
    # Held-out training images measure what the test images measure: high right after an
    # experience, and a final average close to the test one.
    assert naive["val_acc_matrix"][0][0] > 0.8
    assert abs(naive["final_avg_val_acc"] - naive["final_avg_acc"]) < 0.15
    summary = json.loads((out / "results.json").read_text())["summary"]["naive"]
    assert summary["final_avg_val_acc_mean"] == pytest.approx(naive["final_avg_val_acc"])
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert float(rows[0]["final_avg_val_acc"]) == pytest.approx(naive["final_avg_val_acc"])
    assert json.loads(rows[0]["val_acc_matrix"]) == naive["val_acc_matrix"]
    report = (out / "report.md").read_text()
    assert "| strategy | final avg acc | final val acc | forgetting |" in report
    assert f"| naive | 0 | {100 * naive['final_avg_acc']:.1f} | {100 * naive['final_avg_val_acc']:.1f} |" in report


def test_zero_validation_changes_no_figure(tiny_results, tmp_path):
    _, results = tiny_results
    record = run_single(tiny_config(tmp_path / "zero", "benchmark.validation=0.0"), "naive", 0)
    before = next(r for r in results["runs"] if r["strategy"] == "naive")
    assert record["acc_matrix"] == before["acc_matrix"]
    assert record["val_acc_matrix"] is None and record["final_avg_val_acc"] is None
    assert "final val acc" not in (tiny_results[0] / "report.md").read_text()
