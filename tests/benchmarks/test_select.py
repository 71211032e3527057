"""Selection by validation accuracy: test figures must not sway it."""
import copy
import json
import math

import pytest

from ali_replay.errors import UserError
from benchmarks import compare
from benchmarks.cli import main
from benchmarks.select import family_of, select, select_recipes, validation_view

from .conftest import tiny_config

TEST_FIELDS = ("final_avg_acc", "acc_matrix", "avg_forgetting", "bwt", "avg_acc_curve")

# Validation ranks the recipes of each family one way, test accuracy the opposite way.
VAL = {
    "ali_replay": 0.70, "ali_replay@long": 0.80, "ali_replay@filtered+small": 0.90,
    "dgr@lr0.01": 0.60, "dgr@lr0.001": 0.85,
    "vae_replay": 0.50,
}
TEST = {
    "ali_replay": 0.95, "ali_replay@long": 0.85, "ali_replay@filtered+small": 0.75,
    "dgr@lr0.01": 0.92, "dgr@lr0.001": 0.55,
    "vae_replay": 0.40,
}
BEST_BY_VAL = {"ali_replay": "ali_replay@filtered+small", "dgr": "dgr@lr0.001", "vae_replay": "vae_replay"}
BEST_BY_TEST = {"ali_replay": "ali_replay", "dgr": "dgr@lr0.01", "vae_replay": "vae_replay"}


def _results(seeds=(0, 1, 2)) -> dict:
    """A results.json body with validation and test accuracies ranked opposite ways."""
    runs = []
    for spec in VAL:
        for seed in seeds:
            wobble = 0.01 * (seed - 1)  # seeds differ a little; the ranking holds for each
            runs.append({
                "strategy": spec, "seed": seed,
                "final_avg_acc": TEST[spec] + wobble, "acc_matrix": [[TEST[spec] + wobble]],
                "avg_forgetting": 0.1, "bwt": -0.1, "avg_acc_curve": [TEST[spec]],
                "final_avg_val_acc": VAL[spec] + wobble, "val_acc_matrix": [[VAL[spec] + wobble]],
            })
    return {"benchmark": "split_mnist", "scenario": "class_incremental",
            "config": {"benchmark": {"name": "split_mnist", "validation": 0.1}, "strategies": list(VAL),
                       "seeds": list(seeds)},
            "runs": runs, "summary": {}}


class _TestFieldsForbidden(dict):
    """A run whose test fields raise when read."""

    def __getitem__(self, key):
        if key in TEST_FIELDS:
            raise AssertionError(f"the selection read the test field {key!r}")
        return super().__getitem__(key)

    def get(self, key, default=None):
        if key in TEST_FIELDS:
            raise AssertionError(f"the selection read the test field {key!r}")
        return super().get(key, default)

    def items(self):
        raise AssertionError("the selection iterated over every field of a run")

    values = keys = __iter__ = items


def _chosen(choices) -> dict:
    return {c.family: c.chosen.spec for c in choices}


def test_families_are_named_before_at_or_plus():
    assert family_of("ali_replay") == "ali_replay"
    assert family_of("ali_replay@filtered_long") == "ali_replay"
    assert family_of("dgr+lr0.01") == "dgr"
    assert family_of("vae_replay@tuned", {"vae_replay@tuned": "dgr"}) == "dgr"


def test_chooses_by_validation_where_test_ranks_the_other_way():
    choices = select_recipes(_results())
    assert _chosen(choices) == BEST_BY_VAL != BEST_BY_TEST
    ali = next(c for c in choices if c.family == "ali_replay")
    assert ali.n_configurations == 3 and ali.chosen.n_seeds == 3
    assert ali.chosen.mean_val_acc == pytest.approx(0.90)
    assert [r.spec for r in ali.tried] == ["ali_replay@filtered+small", "ali_replay@long", "ali_replay"]
    assert {c.family: c.n_configurations for c in choices} == {"ali_replay": 3, "dgr": 2, "vae_replay": 1}


@pytest.mark.parametrize("poison", ["forbidden", "removed", "nan", "reversed"])
def test_test_fields_cannot_change_the_choice(poison):
    results = _results()
    if poison == "forbidden":
        results["runs"] = [_TestFieldsForbidden(r) for r in results["runs"]]
    for run in results["runs"]:
        if poison == "removed":
            for key in TEST_FIELDS:
                del run[key]
        elif poison == "nan":
            run["final_avg_acc"] = math.nan
            run["acc_matrix"] = [[math.nan]]
        elif poison == "reversed":  # the test figures swapped so that test and validation agree
            dict.__setitem__(run, "final_avg_acc", 1.0 - run["final_avg_acc"])
    choices = select_recipes(results)
    assert _chosen(choices) == BEST_BY_VAL
    assert [r.mean_val_acc for c in choices for r in c.tried] == \
        [r.mean_val_acc for c in select_recipes(_results()) for r in c.tried]


def test_validation_view_holds_no_test_figure():
    run = _results()["runs"][0]
    assert set(validation_view(run)) == {"strategy", "seed", "final_avg_val_acc"}


def test_runs_without_validation_are_refused():
    results = _results()
    results["runs"][4]["final_avg_val_acc"] = None
    with pytest.raises(UserError, match=r"ali_replay@long seed 1 has no validation accuracy.*benchmark\.validation"):
        select_recipes(results)
    results["runs"][4]["final_avg_val_acc"] = math.nan
    with pytest.raises(UserError, match="no validation accuracy"):
        select_recipes(results)


def test_folders_of_one_stream_combine_and_a_run_twice_is_refused():
    a, b = _results(seeds=(0,)), _results(seeds=(1,))
    assert _chosen(select_recipes([a, b])) == BEST_BY_VAL  # two sweeps of one setting combine
    with pytest.raises(UserError, match="more than one results folder"):
        select_recipes([a, copy.deepcopy(a)])


def _other_stream(results: dict, val: dict) -> dict:
    """The same runs on another stream, with other validation accuracies."""
    other = copy.deepcopy(results)
    other["benchmark"] = other["config"]["benchmark"]["name"] = "split_cifar10_gray"
    for run in other["runs"]:
        run["final_avg_val_acc"] = val[run["strategy"]] + 0.01 * (run["seed"] - 1)
    return other


def test_streams_are_averaged_not_chosen_apart():
    mnist = _results()
    # On the second stream the recipe best on MNIST falls far behind: the average picks another.
    gray = _other_stream(mnist, {**VAL, "ali_replay@filtered+small": 0.40, "ali_replay@long": 0.79,
                                 "dgr@lr0.001": 0.30, "dgr@lr0.01": 0.70})
    choices = select_recipes([mnist, gray])
    assert _chosen(choices) == {"ali_replay": "ali_replay@long", "dgr": "dgr@lr0.01", "vae_replay": "vae_replay"}
    chosen = next(c for c in choices if c.family == "ali_replay").chosen
    assert chosen.per_stream == {"split_mnist": pytest.approx(0.80), "split_cifar10_gray": pytest.approx(0.79)}
    assert chosen.mean_val_acc == pytest.approx(0.795)
    from benchmarks.select import render_selection

    text = render_selection(choices)
    assert "Averaged over 2 streams" in text and "| split_mnist | split_cifar10_gray |" in text
    # A recipe that did not run on every stream is left out of the choice among streams.
    gray["runs"] = [r for r in gray["runs"] if r["strategy"] != "ali_replay@long"]
    assert _chosen(select_recipes([mnist, gray]))["ali_replay"] == "ali_replay"


def test_cli_writes_the_table(tmp_path, capsys):
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "results.json").write_text(json.dumps(_results()))
    assert main(["-q", "select", str(out), "--family", "ali_replay", "--family", "dgr"]) == 0
    text = capsys.readouterr().out
    assert "| ali_replay | `ali_replay@filtered+small` | 90.0 ± 1.0 | 3 | 3 |" in text
    assert "| dgr | `dgr@lr0.001` | 85.0 ± 1.0 | 3 | 2 |" in text
    assert "vae_replay" not in text
    assert "different numbers of configurations (ali_replay 3, dgr 2)" in text
    assert (out / "selection.md").read_text() == text
    saved = json.loads((out / "selection.json").read_text())
    assert [f["chosen"] for f in saved["families"]] == ["ali_replay@filtered+small", "dgr@lr0.001"]
    # A spec assigned to another family by hand competes there.
    assert main(["-q", "select", str(out), "--family-of", "vae_replay=dgr", "--family", "dgr"]) == 0
    assert "| dgr | `dgr@lr0.001` | 85.0 ± 1.0 | 3 | 3 |" in capsys.readouterr().out
    assert main(["-q", "select", str(out), "--family-of", "vae_replay"]) == 2
    assert "SPEC=FAMILY" in capsys.readouterr().err
    assert main(["-q", "select", str(tmp_path / "nowhere")]) == 2


def test_selects_on_a_real_comparison(tmp_path):
    out = tmp_path / "real"
    results = compare(tiny_config(out, "benchmark.validation=0.2", "strategies=[er@small,er@large,naive]"))
    choices, text = select([out])
    by_val = max(("er@small", "er@large"),
                 key=lambda s: next(r["final_avg_val_acc"] for r in results["runs"] if r["strategy"] == s))
    assert _chosen(choices) == {"er": by_val, "naive": "naive"}
    assert (out / "selection.md").is_file() and "| er |" in text
