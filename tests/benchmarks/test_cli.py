"""The command line: a real digits run end to end, and one-line errors for bad input."""
import json

import pytest

from benchmarks.cli import main

SMALL = ["model.hidden=64", "model.latent_dim=8", "train.batch_size=128", "train.epochs=1", "threads=1",
         "device=cpu", "eval.n_samples=200"]


def test_train_then_eval(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["-q", "train-ali", *SMALL, f"output_dir={out}"]) == 0
    result = json.loads((out / "eval.json").read_text())
    assert 0.0 < result["recon_mse"] < 1.0
    assert len(result["sample_class_hist"]) == 10
    assert sum(result["sample_class_hist"]) == pytest.approx(1.0)
    assert 0.0 <= result["recon_label_agreement"] <= 1.0
    assert result["pixel_probe_acc"] > 0.8  # logistic regression on raw digits pixels
    (out / "eval.json").unlink()
    assert main(["-q", "eval-ali", str(out), "eval.labels_per_class=5"]) == 0
    again = json.loads((out / "eval.json").read_text())
    assert again["probe_train_examples"] == 50 and again["labels_per_class"] == 5
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("args,message", [
    (["train-ali", "train.epochz=1"], "unknown config key 'train.epochz'"),
    (["train-ali", "train.epochs=lots"], "'train.epochs'"),
    (["train-ali", "data.name=imagenet"], "valid"),
    (["train-ali", "data.name=mnist", "data.root=/nonexistent/where"], "/nonexistent/where"),
    (["train-ali", "data.name=mnist", "model.preset=conv32", "data.root=/nonexistent"], "/nonexistent"),
    (["train-ali", "model.preset=conv32"], "expects 32x32"),
    (["train-ali", "--config", "nope.yaml"], "not found"),
    (["eval-ali", "/nonexistent/run"], "no checkpoint"),
])
def test_bad_input_gives_one_line_error(tmp_path, capsys, args, message):
    code = main([*args, f"output_dir={tmp_path / 'o'}"] if args[0] == "train-ali" else args)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_overrides_may_follow_options(tmp_path):
    out = tmp_path / "run"
    assert main(["-q", "train-ali", *SMALL, "--no-eval", f"output_dir={out}", "train.max_steps=2"]) == 0
    assert (out / "checkpoint.pt").is_file()
    with pytest.raises(SystemExit):
        main(["train-ali", "--no-eval", "--bogus"])


def test_bench_speed_options_reach_the_benchmark(monkeypatch):
    seen = {}
    import benchmarks.speed

    monkeypatch.setattr(benchmarks.speed, "main", lambda argv: seen.setdefault("argv", argv))
    assert main(["bench-speed", "--images", "64", "--threads", "1"]) == 0
    assert seen["argv"] == ["--images", "64", "--threads", "1"]
