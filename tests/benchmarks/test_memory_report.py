"""Every run records its kept bytes by kind; the report shows them, and older results without them still render."""
import json
import shutil

from benchmarks import report, write_report

KINDS = ["generator", "stored_examples", "statistics", "teacher"]


def _run(strategy, seed, memory):
    """A minimal finished run of a 1-experience stream with the given memory breakdown."""
    run = {"strategy": strategy, "seed": seed, "acc_matrix": [[0.5]], "final_avg_acc": 0.5, "avg_forgetting": 0.0,
           "bwt": 0.0, "train_seconds": 1.0}
    if memory is not None:
        run.update(memory=memory, memory_bytes=sum(memory.values()))
    return run


def test_every_run_records_its_memory_by_kind(tiny_results):
    out, _ = tiny_results
    data = json.loads((out / "results.json").read_text())
    runs = {r["strategy"]: r for r in data["runs"]}
    for run in runs.values():
        assert list(run["memory"]) == KINDS and sum(run["memory"].values()) == run["memory_bytes"]
    assert runs["naive"]["memory"] == dict.fromkeys(KINDS, 0)
    er = runs["er@small"]["memory"]
    assert er["stored_examples"] > 0 and er["generator"] == er["statistics"] == er["teacher"] == 0
    assert runs["joint"]["memory"]["stored_examples"] == runs["joint"]["memory_bytes"] > 0
    assert data["summary"]["er@small"]["memory"] == er
    header = "| strategy | memory | generator | stored examples | statistics | teacher |"
    text = (out / "report.md").read_text()
    assert "## Memory" in text and header in text
    er_size = report._size(er["stored_examples"])
    assert f"| er@small | {er_size} | 0 | {er_size} | 0 | 0 |" in text
    assert "| naive | 0 | 0 | 0 | 0 | 0 |" in text
    assert "memory" in (out / "results.csv").read_text().splitlines()[0].split(",")


def test_results_without_memory_by_kind_still_render(tiny_results, tmp_path):
    src, _ = tiny_results
    out = tmp_path / "old"
    shutil.copytree(src, out)
    data = json.loads((out / "results.json").read_text())
    for run in data["runs"]:
        del run["memory"]
    del data["summary"]
    (out / "results.json").write_text(json.dumps(data))
    text = write_report(out)
    er_total = report._size(next(r["memory_bytes"] for r in data["runs"] if r["strategy"] == "er@small"))
    assert f"| er@small | {er_total} | - | - | - | - |" in text
    assert json.loads((out / "results.json").read_text())["summary"]["er@small"]["memory"] is None


def test_memory_by_kind_is_the_largest_over_seeds():
    runs = [_run("ali_replay", 0, {"generator": 100, "stored_examples": 30, "statistics": 0, "teacher": 8}),
            _run("ali_replay", 1, {"generator": 100, "stored_examples": 50, "statistics": 0, "teacher": 8}),
            _run("ali_replay", 2, None)]  # recorded before runs held the breakdown
    summary = report.summarize(runs)["ali_replay"]
    assert summary["memory"] == {"generator": 100, "stored_examples": 50, "statistics": 0, "teacher": 8}
    assert summary["memory_bytes"] == 158


def test_sizes_read_in_kilobytes_or_megabytes():
    assert [report._size(v) for v in (None, 0, 1536, 3 * 2 ** 20)] == ["-", "0", "1.5 kB", "3.00 MB"]
