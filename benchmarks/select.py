"""Choose each strategy family's recipe on validation accuracy, never on test accuracy.

A comparison run with `benchmark.validation` > 0 records, per run, `final_avg_val_acc`: the final
average accuracy on images held out of the training data. `select_recipes` groups the runs into
families (the strategy name before `@` or `+`: `ali_replay@filtered_long` and `ali_replay` are both
`ali_replay`; `dgr@z32+lr` is `dgr`), averages each recipe's validation accuracy over its seeds and
picks, per family, the recipe with the highest mean. It reads only `strategy`, `seed` and
`final_avg_val_acc` of each run (`validation_view`), so test figures cannot sway the choice; the
test accuracy of the chosen recipes is then reported once, over fresh seeds if possible.

Results of several streams (folders whose benchmark, scenario or validation share differ) are
averaged: each recipe's score is the mean, over the streams, of its mean over seeds on each, so
the chosen recipe is the best on average, not per data set. A recipe must have run on every
stream to be chosen among them.

It also counts the configurations each family tried: a family that was given more tries gets
more chances at a lucky validation score, so the table says so when the counts differ.

`ali-replay select RESULTS_DIR [RESULTS_DIR ...]` prints the table and writes `selection.md` and
`selection.json` beside the first folder's `results.json`.
"""
from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np

from ali_replay.errors import UserError
from benchmarks.results import atomic_write_text, read_results, stream_folders

log = logging.getLogger(__name__)

SELECTION_MD = "selection.md"
SELECTION_JSON = "selection.json"
# The only fields of a run the selection reads.
VALIDATION_FIELDS = ("strategy", "seed", "final_avg_val_acc")


@dataclass
class Recipe:
    """One strategy spec's validation record over its seeds."""

    spec: str
    family: str
    mean_val_acc: float  # over seeds; over several streams: the mean of the streams' means
    std_val_acc: float  # the sample std over seeds; over several streams: over the streams' means
    n_seeds: int
    seeds: list[int]
    per_stream: dict[str, float] = field(default_factory=dict)  # stream -> mean over seeds (several streams)


@dataclass
class FamilyChoice:
    """A family's chosen recipe and everything it was chosen among."""

    family: str
    chosen: Recipe
    tried: list[Recipe] = field(default_factory=list)  # every recipe of the family, best first

    @property
    def n_configurations(self) -> int:
        """How many recipes (strategy specs) the family tried."""
        return len(self.tried)


def family_of(spec: str, assigned: Optional[Mapping[str, str]] = None) -> str:
    """The family of a strategy spec: `assigned[spec]` if given, else the name before '@' or '+'."""
    if assigned and spec in assigned:
        return assigned[spec]
    return re.split(r"[@+]", str(spec), maxsplit=1)[0].strip()


def validation_view(run: Mapping) -> dict:
    """The fields of a run the selection may read (strategy, seed, final validation accuracy)."""
    return {key: run.get(key) for key in VALIDATION_FIELDS}


def _validation_runs(sources: Iterable[Mapping]) -> list[dict]:
    """Every run of the given results as its validation view; a UserError for runs without validation."""
    views, seen = [], set()
    for results in sources:
        for run in results.get("runs", []):
            view = validation_view(run)
            key = (str(view["strategy"]), int(view["seed"]))
            if key in seen:
                raise UserError(f"{key[0]} seed {key[1]} appears in more than one results folder; "
                                "pass each run once")
            seen.add(key)
            value = view["final_avg_val_acc"]
            if value is None or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
                raise UserError(f"{key[0]} seed {key[1]} has no validation accuracy (final_avg_val_acc={value!r}); "
                                "selection needs runs made with benchmark.validation > 0, e.g. "
                                "`ali-replay compare ... benchmark.validation=0.1`")
            views.append(view)
    return views


def _setting(results: Mapping) -> tuple:
    """What makes two results folders one stream: benchmark, scenario, validation share."""
    bench = (results.get("config") or {}).get("benchmark") or {}
    return (results.get("benchmark"), results.get("scenario"), bench.get("validation"))


def _stream_name(setting: tuple, settings: Sequence[tuple]) -> str:
    """A stream's name in tables: its benchmark, with the scenario or share where streams share a benchmark."""
    if sum(1 for other in settings if other[0] == setting[0]) == 1:
        return str(setting[0])
    return f"{setting[0]} ({setting[1]}, validation {setting[2]})"


def _recipes(views: list[dict], assigned: Optional[Mapping[str, str]]) -> dict[str, Recipe]:
    """Each spec's record over its seeds, in the order the specs first appear."""
    out: dict[str, Recipe] = {}
    for spec in dict.fromkeys(str(v["strategy"]) for v in views):
        values = [(int(v["seed"]), float(v["final_avg_val_acc"])) for v in views if v["strategy"] == spec]
        accs = np.asarray([a for _, a in values], dtype=np.float64)
        out[spec] = Recipe(spec=spec, family=family_of(spec, assigned), mean_val_acc=float(accs.mean()),
                           std_val_acc=float(accs.std(ddof=1)) if len(accs) > 1 else 0.0, n_seeds=len(accs),
                           seeds=sorted(s for s, _ in values))
    return out


def _averaged(per_setting: dict[tuple, dict[str, Recipe]]) -> dict[str, Recipe]:
    """Each spec's record averaged over the streams (only specs that ran on every stream)."""
    settings = list(per_setting)
    if len(settings) == 1:
        return per_setting[settings[0]]
    specs = list(dict.fromkeys(spec for recipes in per_setting.values() for spec in recipes))
    out = {}
    for spec in specs:
        missing = [_stream_name(s, settings) for s in settings if spec not in per_setting[s]]
        if missing:
            log.warning("%s did not run on %s; it is left out of the selection over streams", spec, ", ".join(missing))
            continue
        records = [per_setting[s][spec] for s in settings]
        means = np.asarray([r.mean_val_acc for r in records], dtype=np.float64)
        out[spec] = Recipe(spec=spec, family=records[0].family, mean_val_acc=float(means.mean()),
                           std_val_acc=float(means.std(ddof=1)), n_seeds=min(r.n_seeds for r in records),
                           seeds=sorted(set.intersection(*(set(r.seeds) for r in records))),
                           per_stream={_stream_name(s, settings): r.mean_val_acc for s, r in zip(settings, records)})
    if not out:
        raise UserError("no recipe ran on every stream given; run the same specs on each")
    return out


def select_recipes(
    sources: Mapping | Sequence[Mapping],
    families: Optional[Sequence[str]] = None,
    assigned: Optional[Mapping[str, str]] = None,
) -> list[FamilyChoice]:
    """Per family, the recipe with the highest mean final validation accuracy (over seeds, then streams).

    `sources` is one results dict (`results.json`) or several, of one stream or of several;
    `families` keeps only those families; `assigned` maps a spec to a family by hand. Ties go to
    the recipe listed first. Only `validation_view` of each run is read.
    """
    sources = [sources] if isinstance(sources, Mapping) else list(sources)
    grouped: dict[tuple, list[Mapping]] = {}
    for results in sources:
        grouped.setdefault(_setting(results), []).append(results)
    averaged = _averaged({setting: _recipes(_validation_runs(group), assigned)
                          for setting, group in grouped.items()})
    recipes: dict[str, list[Recipe]] = {}
    for record in averaged.values():
        recipes.setdefault(record.family, []).append(record)
    if families:
        unknown = [f for f in families if f not in recipes]
        if unknown:
            raise UserError(f"no runs of families {unknown}; the results hold {sorted(recipes)}")
        recipes = {f: recipes[f] for f in families}
    choices = []
    for family, tried in recipes.items():
        seed_sets = {tuple(r.seeds) for r in tried}
        if len(seed_sets) > 1:
            log.warning("family %s: its recipes ran on different seeds %s; their means are not over the same runs",
                        family, sorted(seed_sets))
        ranked = sorted(tried, key=lambda r: -r.mean_val_acc)  # stable: ties keep the listed order
        choices.append(FamilyChoice(family=family, chosen=ranked[0], tried=ranked))
    return choices


def _pct(value: float) -> str:
    return f"{100.0 * value:.1f}"


def render_selection(choices: Sequence[FamilyChoice], sources: Sequence[str] = ()) -> str:
    """The selection as Markdown: chosen recipes, then every recipe tried."""
    lines = ["# Recipes chosen on validation accuracy", ""]
    if sources:
        lines += [f"From {', '.join(f'`{s}`' for s in sources)}. Each family's recipe is the one with the highest "
                  "mean final validation accuracy over its seeds; test accuracy was not read.", ""]
    lines += ["| family | chosen recipe | mean val acc (%) | seeds | configurations tried |",
              "| --- | --- | --- | --- | --- |"]
    for choice in choices:
        c = choice.chosen
        lines.append(f"| {choice.family} | `{c.spec}` | {_pct(c.mean_val_acc)} ± {_pct(c.std_val_acc)} | "
                     f"{c.n_seeds} | {choice.n_configurations} |")
    counts = {choice.family: choice.n_configurations for choice in choices}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{f} {n}" for f, n in counts.items())
        lines += ["", f"The families tried different numbers of configurations ({listed}): a family with more "
                      "tries had more chances at a lucky validation score."]
    streams = list(dict.fromkeys(name for c in choices for r in c.tried for name in r.per_stream))
    if streams:
        lines += ["", f"Averaged over {len(streams)} streams: a recipe's score is the mean of its mean over seeds "
                      "on each (± the std over the streams' means)."]
    heads = "".join(f" {name} |" for name in streams)
    lines += ["", "## Every recipe tried", "",
              f"| family | recipe | mean val acc (%) |{heads} seeds | chosen |",
              "| --- | --- | --- |" + " --- |" * len(streams) + " --- | --- |"]
    for choice in choices:
        for r in choice.tried:
            mark = "yes" if r is choice.chosen else ""
            cells = "".join(f" {_pct(r.per_stream[name])} |" for name in streams)
            lines.append(f"| {choice.family} | `{r.spec}` | {_pct(r.mean_val_acc)} ± {_pct(r.std_val_acc)} |{cells} "
                         f"{', '.join(str(s) for s in r.seeds)} | {mark} |")
    return "\n".join(lines) + "\n"


def selection_dict(choices: Sequence[FamilyChoice]) -> dict:
    """The selection as plain data (selection.json)."""
    return {"families": [{"family": c.family, "chosen": c.chosen.spec, "n_configurations": c.n_configurations,
                          "chosen_record": asdict(c.chosen), "tried": [asdict(r) for r in c.tried]}
                         for c in choices]}


def select(results_dirs: Sequence[str | Path], families: Optional[Sequence[str]] = None,
           assigned: Optional[Mapping[str, str]] = None, write: bool = True) -> tuple[list[FamilyChoice], str]:
    """Select on the results folders (`ali-replay select`); write selection.md/.json into the first; return both.

    A folder of a comparison over several streams (`benchmarks: [...]`) stands for its streams' folders.
    """
    if not results_dirs:
        raise UserError("select needs at least one results folder (the output_dir of a comparison)")
    first = Path(results_dirs[0])
    dirs = [sub for d in map(Path, results_dirs) for sub in ([d / n for n in stream_folders(d)] or [d])]
    choices = select_recipes([read_results(d) for d in dirs], families, assigned)
    text = render_selection(choices, [str(d) for d in dirs])
    if write:
        atomic_write_text(first / SELECTION_MD, text)
        atomic_write_text(first / SELECTION_JSON, json.dumps(selection_dict(choices), indent=2) + "\n")
        log.info("wrote %s and %s", first / SELECTION_MD, first / SELECTION_JSON)
    return choices, text


def parse_assignments(items: Sequence[str]) -> dict[str, str]:
    """'SPEC=FAMILY' strings as a mapping, or a UserError naming the malformed one."""
    out = {}
    for item in items:
        spec, sep, family = str(item).partition("=")
        if not sep or not spec.strip() or not family.strip():
            raise UserError(f"--family-of expects SPEC=FAMILY (e.g. vae_replay@tuned=dgr), got {item!r}")
        out[spec.strip()] = family.strip()
    return out
