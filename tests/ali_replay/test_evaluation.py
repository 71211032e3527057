"""eval-ali's class histogram of prior samples: counts, largest share, entropy, and its own random stream."""
import math

import pytest
import torch

from ali_replay.config import load_run_config
from ali_replay.data import load_dataset
from ali_replay.errors import ConfigError, ShapeError
from ali_replay.evaluation import class_histogram, predict, sample_classes, train_judge
from ali_replay.trainer import ALITrainer, load_trained


@pytest.fixture(scope="module")
def digits():
    """The embedded 8x8 digits and a judge trained on their training split."""
    data = load_dataset("digits")
    judge = train_judge(data.train.float_images(), data.train.targets, data.num_classes, seed=0)
    return data, judge


def test_histogram_of_real_test_labels_is_nearly_uniform(digits):
    data, judge = digits
    x_test, y_test = data.test.float_images(), data.test.targets
    truth = class_histogram(y_test, 10)
    counts = torch.bincount(y_test, minlength=10)
    assert truth["sample_count"] == len(y_test) == 397
    assert truth["sample_class_hist"] == pytest.approx((counts / counts.sum()).tolist())
    assert truth["sample_max_class"] == int(counts.argmax())
    assert truth["sample_max_class_share"] == pytest.approx(counts.max().item() / 397)
    expected = -sum(p * math.log2(p) for p in truth["sample_class_hist"] if p > 0)
    assert truth["sample_class_entropy_bits"] == pytest.approx(expected)
    # the split is stratified: every digit near a tenth, entropy near log2(10) = 3.32 bits
    assert truth["sample_max_class_share"] < 0.11
    assert truth["sample_class_entropy_ratio"] > 0.99
    judged = class_histogram(predict(judge, x_test), 10)
    assert judged["sample_max_class_share"] < 0.13 and judged["sample_class_entropy_bits"] > 3.2


def test_one_class_everywhere_has_zero_entropy(digits):
    data, judge = digits
    one_image = data.test.float_images()[:1].expand(500, -1, -1, -1)
    result = class_histogram(predict(judge, one_image), 10)
    assert result["sample_max_class_share"] == 1.0
    assert result["sample_class_entropy_bits"] == 0.0 and result["sample_class_entropy_ratio"] == 0.0
    assert sorted(result["sample_class_hist"]) == [0.0] * 9 + [1.0]
    with pytest.raises(ShapeError, match="no predicted labels"):
        class_histogram(torch.zeros(0, dtype=torch.long), 10)


def test_sample_classes_draw_10000_labels_from_the_seed_alone(digits, tmp_path):
    data, judge = digits
    cfg = load_run_config(None, ["model.hidden=64", "model.latent_dim=8", "train.epochs=3", "threads=1",
                                 "device=cpu", f"output_dir={tmp_path}"])
    assert cfg.eval.n_samples == 10000
    ali = ALITrainer(cfg).fit() and load_trained(tmp_path)[0].train()
    before = torch.get_rng_state()
    first = sample_classes(ali, judge, cfg.eval.n_samples, seed=5)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's random stream is untouched
    assert first.shape == (10000,) and int(first.min()) >= 0 and int(first.max()) <= 9
    assert ali.training  # evaluation mode only while sampling
    torch.rand(3)  # whatever the global stream did in between
    assert torch.equal(sample_classes(ali, judge, 10000, seed=5), first)
    assert not torch.equal(sample_classes(ali, judge, 10000, seed=6), first)
    with pytest.raises(ConfigError, match="eval.n_samples"):
        sample_classes(ali, judge, 0, seed=5)
