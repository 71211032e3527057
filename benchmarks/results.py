"""A comparison's results folder: results.json read and written atomically, and the names of its files."""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from ali_replay.errors import UserError

RESULTS_FILE = "results.json"


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file through a temporary file in the same folder and `os.replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def dump_json(data: Any) -> str:
    """The canonical JSON text of results (stable key order as given, 2-space indent)."""
    return json.dumps(data, indent=2, allow_nan=True) + "\n"


def read_results(results_dir: str | Path) -> dict:
    """The parsed `results.json` of a results folder, or a UserError saying what is wrong."""
    path = Path(results_dir) / RESULTS_FILE
    if not path.is_file():
        raise UserError(f"no {RESULTS_FILE} in {Path(results_dir)}: pass the output_dir of a comparison "
                        f"(e.g. runs/compare)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"{path} is not readable JSON ({err}); re-run the comparison with --overwrite") from err
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise UserError(f"{path} has no 'runs' list; it was not written by `ali-replay compare`")
    return data


def safe_name(text: str) -> str:
    """A file-name-safe version of a strategy spec."""
    return re.sub(r"[^A-Za-z0-9_.@-]+", "_", str(text))


def strategy_order(results: dict) -> list[str]:
    """Strategies in config order, then any others found among the runs."""
    listed = list((results.get("config") or {}).get("strategies") or [])
    for run in results["runs"]:
        if run["strategy"] not in listed:
            listed.append(run["strategy"])
    return [s for s in listed if any(r["strategy"] == s for r in results["runs"])]


STREAMS_FILE = "streams.json"  # a comparison over several streams: their names, in the config's order


def stream_folders(out: Path) -> list[str]:
    """The streams of a comparison over several (its streams.json), where `out` holds no results.json itself."""
    out = Path(out)
    if (out / RESULTS_FILE).is_file() or not (out / STREAMS_FILE).is_file():
        return []
    names = json.loads((out / STREAMS_FILE).read_text(encoding="utf-8"))
    return [name for name in names if (out / name / RESULTS_FILE).is_file()]
