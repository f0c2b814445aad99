"""Finished runs, read back: a run folder or a results.jsonl path -> records, metadata, files.

Used by `harness report` (re-render), `harness compare` (two runs) and `harness merge` (shards).
Nothing here re-runs anything, imports a framework, or executes anything found in the files:
results, run.json and observations are plain JSON, arrays are loaded with numpy without pickle.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import RunFolderError
from harness.store.records import SCHEMA, read_jsonl, read_observations


@dataclass
class Run:
    folder: Path                 # the run folder (the results file's folder)
    records: list
    meta: dict
    #: True when run.json was absent (or belongs to another run) and ``meta`` was derived from records
    derived: bool = False
    notes: list = field(default_factory=list)
    #: observations() read once (compare and merge each look at them more than once)
    cached_observations: list | None = field(default=None, repr=False)

    @property
    def run_id(self) -> str:
        return self.meta.get("run_id") or ""

    @property
    def observations_path(self) -> Path:
        return self.folder / "observations.jsonl"

    @property
    def arrays_dir(self) -> Path:
        return self.folder / "arrays"

    def has_observations(self) -> bool:
        return self.observations_path.is_file() and self.arrays_dir.is_dir()

    def observations(self) -> list:
        """The raw observation rows (one per task id, the last answer winning); a torn last line
        (a run killed mid-write) is ignored, any other line that is not JSON is a RunFolderError."""
        if self.cached_observations is None:
            if not self.observations_path.is_file():
                return []
            try:
                self.cached_observations = read_observations(self.observations_path, strict=True)
            except ValueError as exc:
                raise RunFolderError(str(exc)) from None
            except OSError as exc:
                raise RunFolderError(f"cannot read {self.observations_path}: {exc.strerror or exc}") from None
        return self.cached_observations


def load(spec) -> Run:
    """A run from a folder (holding results.jsonl) or a results file (run.json read beside it)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        folder, results = path, path / "results.jsonl"
        if not results.is_file():
            raise RunFolderError(f"{path} has no results.jsonl (is it a run folder?)")
    elif path.is_file():
        folder, results = path.parent, path
    else:
        raise RunFolderError(f"no run folder or results file at {path}")
    try:
        records = read_jsonl(results)
    except ValueError as exc:
        raise RunFolderError(str(exc)) from None
    except OSError as exc:
        raise RunFolderError(f"cannot read {results}: {exc.strerror or exc}") from None
    bad = [r for r in records if not isinstance(r, dict) or "check" not in r or "case" not in r]
    if bad:
        raise RunFolderError(f"{results}: not a gradharness results file (a line without case/check)")
    schemas = {r.get("schema") for r in records}
    unknown = sorted(str(s) for s in schemas if s != SCHEMA)
    if unknown:
        raise RunFolderError(f"{results}: results schema {', '.join(unknown)}; this gradharness reads schema {SCHEMA}")
    for r in records:          # fields the report expects on every record
        r.setdefault("param", "*")
        r.setdefault("verdict", "error")
    notes = []
    meta, derived = None, False
    run_json = folder / "run.json"
    ids = Counter(r.get("run_id") for r in records)
    run_id = ids.most_common(1)[0][0] if ids else None
    if run_json.is_file():
        try:
            meta = json.loads(run_json.read_text())
        except (ValueError, OSError):
            notes.append("run.json is unreadable; run metadata derived from the results")
            meta = None
        if meta is not None and run_id and meta.get("run_id") not in (None, run_id):
            notes.append(f"run.json belongs to run {meta.get('run_id')}, not {run_id}; ignored")
            meta = None
    if meta is None:
        meta, derived = derive_meta(records), True
    return Run(folder=folder, records=records, meta=meta, derived=derived, notes=notes)


def _ordered(values, order=None) -> list:
    seen = []
    for v in values:
        if v not in seen and v not in (None, "-"):
            seen.append(v)
    if order:
        seen.sort(key=lambda v: (order.index(v) if v in order else len(order), str(v)))
    return seen


def derive_meta(records) -> dict:
    """What run.json would say, as far as the records tell (no command, start time or wall time)."""
    ids = Counter(r.get("run_id") for r in records)
    versions = {}
    for r in records:
        if r.get("framework") and r["framework"] not in versions or (
                r.get("framework") and r.get("framework_version") and not versions.get(r["framework"])):
            versions[r["framework"]] = r.get("framework_version")
    timing = next((r.get("timing_preset") for r in records if r.get("check") == "timing"), None)
    threads = next((r.get("threads") for r in records if r.get("check") == "timing" and r.get("threads")), None)
    return {
        "run_id": ids.most_common(1)[0][0] if ids else "",
        "cases": sorted({r["case"] for r in records}),
        "frameworks": versions,
        "devices": _ordered((r.get("device") for r in records), ["cpu"]),
        "dtypes": _ordered((r.get("dtype") for r in records), ["float64", "float32", "bfloat16", "float16"]),
        "modes": _ordered((r.get("mode") for r in records), ["eager", "compiled"]),
        "precisions": _ordered((r.get("precision") for r in records), ["default", "highest"]),
        "timing": timing,
        "threads": threads,
    }


__all__ = ["Run", "derive_meta", "load"]
