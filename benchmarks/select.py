"""Choose each strategy family's recipe on validation accuracy, never on test accuracy.

A comparison run with `benchmark.validation` > 0 records, per run, `final_avg_val_acc`: the final
average accuracy on images held out of the training data. `select_recipes` groups the runs into
families (the strategy name before `@` or `+`: `ali_replay@filtered_long` and `ali_replay` are both
`ali_replay`; `dgr@z32+lr` is `dgr`), averages each recipe's validation accuracy over its seeds and
picks, per family, the recipe with the highest mean. It reads only `strategy`, `seed` and
`final_avg_val_acc` of each run (`validation_view`), so test figures cannot sway the choice; the
test accuracy of the chosen recipes is then reported once, over fresh seeds if possible.

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
from benchmarks.results import atomic_write_text, read_results

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
    mean_val_acc: float
    std_val_acc: float
    n_seeds: int
    seeds: list[int]


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


def _check_same_setting(sources: Sequence[Mapping]) -> None:
    """UserError when results folders differ in benchmark, scenario or validation share."""
    def setting(results: Mapping) -> tuple:
        bench = (results.get("config") or {}).get("benchmark") or {}
        return (results.get("benchmark"), results.get("scenario"), bench.get("validation"))

    settings = {setting(r) for r in sources}
    if len(settings) > 1:
        raise UserError(f"the results folders hold different settings (benchmark, scenario, validation share): "
                        f"{sorted(settings, key=str)}; select within one setting")


def select_recipes(
    sources: Mapping | Sequence[Mapping],
    families: Optional[Sequence[str]] = None,
    assigned: Optional[Mapping[str, str]] = None,
) -> list[FamilyChoice]:
    """Per family, the recipe with the highest mean final validation accuracy over its seeds.

    `sources` is one results dict (`results.json`) or several; `families` keeps only those
    families; `assigned` maps a spec to a family by hand. Ties go to the recipe listed first.
    Only `validation_view` of each run is read.
    """
    sources = [sources] if isinstance(sources, Mapping) else list(sources)
    _check_same_setting(sources)
    views = _validation_runs(sources)
    order: list[str] = []
    for view in views:
        if view["strategy"] not in order:
            order.append(str(view["strategy"]))
    recipes: dict[str, list[Recipe]] = {}
    for spec in order:
        values = [(int(v["seed"]), float(v["final_avg_val_acc"])) for v in views if v["strategy"] == spec]
        accs = np.asarray([a for _, a in values], dtype=np.float64)
        family = family_of(spec, assigned)
        recipes.setdefault(family, []).append(Recipe(
            spec=spec, family=family, mean_val_acc=float(accs.mean()),
            std_val_acc=float(accs.std(ddof=1)) if len(accs) > 1 else 0.0,
            n_seeds=len(accs), seeds=sorted(s for s, _ in values)))
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
    lines += ["", "## Every recipe tried", "",
              "| family | recipe | mean val acc (%) | seeds | chosen |", "| --- | --- | --- | --- | --- |"]
    for choice in choices:
        for r in choice.tried:
            mark = "yes" if r is choice.chosen else ""
            lines.append(f"| {choice.family} | `{r.spec}` | {_pct(r.mean_val_acc)} ± {_pct(r.std_val_acc)} | "
                         f"{', '.join(str(s) for s in r.seeds)} | {mark} |")
    return "\n".join(lines) + "\n"


def selection_dict(choices: Sequence[FamilyChoice]) -> dict:
    """The selection as plain data (selection.json)."""
    return {"families": [{"family": c.family, "chosen": c.chosen.spec, "n_configurations": c.n_configurations,
                          "chosen_record": asdict(c.chosen), "tried": [asdict(r) for r in c.tried]}
                         for c in choices]}


def select(results_dirs: Sequence[str | Path], families: Optional[Sequence[str]] = None,
           assigned: Optional[Mapping[str, str]] = None, write: bool = True) -> tuple[list[FamilyChoice], str]:
    """Select on the results folders (`ali-replay select`); write selection.md/.json into the first; return both."""
    if not results_dirs:
        raise UserError("select needs at least one results folder (the output_dir of a comparison)")
    dirs = [Path(d) for d in results_dirs]
    choices = select_recipes([read_results(d) for d in dirs], families, assigned)
    text = render_selection(choices, [str(d) for d in dirs])
    if write:
        atomic_write_text(dirs[0] / SELECTION_MD, text)
        atomic_write_text(dirs[0] / SELECTION_JSON, json.dumps(selection_dict(choices), indent=2) + "\n")
        log.info("wrote %s and %s", dirs[0] / SELECTION_MD, dirs[0] / SELECTION_JSON)
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
