"""Run a batch of generated programs through the harness, as `harness run --cases` would.

A batch is a folder: programs.json (name, program, point per case) and a cases.py that loads
it, so every worker imports the programs the way it imports any user's case file, and the run
beneath it (``run/``) is an ordinary run folder a user can open, report and compare. One batch
is one session of worker processes: the fuzzer sends every program of a round, and every
reduction of every finding being minimised, in one batch, so the workers start once per step.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from harness.define.loader import load_file
from harness.fuzz import triage
from harness.fuzz.program import Point, Program, case_file_text
from harness.judge.observation import Observation
from harness.run.session import Settings, execute
from harness.store.records import atomic_write_text, read_observations


@dataclass(frozen=True)
class Item:
    """One program at one point, named for the batch; or a pack of them (``members``: (program,
    point) pairs, harness.fuzz.program.pack_case), checked as one case."""
    name: str
    program: Program | None
    point: Point | None
    tags: tuple = ()
    members: tuple = ()

    def to_json(self) -> dict:
        if self.members:
            return {"name": self.name, "members": [{"program": p.to_json(), "point": pt.to_json()}
                                                   for p, pt in self.members], "tags": list(self.tags)}
        return {"name": self.name, "program": self.program.to_json(), "point": self.point.to_json(),
                "tags": list(self.tags)}


@dataclass
class Batch:
    """A finished run's records, and its folder for the arrays (any run folder will do)."""
    run_dir: Path
    records: list

    @functools.cached_property
    def context(self) -> dict:
        """harness.fuzz.triage.context of the records, for judging many of them."""
        return triage.context(self.records)

    def failing(self, name: str) -> list:
        return [r for r in self.records if r["case"] == name]

    def gradients(self, name: str, framework: str, dtype: str, mode: str, device: str = "cpu",
                  precision: str = "default") -> dict:
        """The gradient arrays one task computed (leaf -> float64 array); {} when it has none."""
        want = (name, framework, device, dtype, mode, precision)
        for row in read_observations(self.run_dir / "observations.jsonl"):
            got = (row["case"], row["framework"], row.get("device", "cpu"), row["dtype"], row["mode"],
                   row.get("precision", "default"))
            if got == want:
                return Observation(row, self.run_dir / "arrays").grads if row.get("status") == "ok" else {}
        return {}


def write_programs(folder: Path, items: list, extra_ops: str | None = None) -> Path:
    """programs.json and cases.py in ``folder``; returns the case file's path."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "programs.json", json.dumps([i.to_json() for i in items]))
    atomic_write_text(folder / "cases.py", case_file_text("programs.json", extra_ops))
    return folder / "cases.py"


def run(folder: Path, items: list, frameworks: list, dtypes: list, modes: list, *, seed: int = 0, jobs: int = 2,
        timeout: float = 120.0, within: float | None = None, extra_ops: str | None = None,
        devices: list = ("cpu",)) -> Batch:
    """Run ``items`` on every framework in every device, dtype and mode (default precision, no
    timing); ``within``: seconds each worker may take for all its tasks (the rest are recorded as
    not run)."""
    cases = load_file(str(write_programs(folder, items, extra_ops)))
    settings = Settings(cases=cases, frameworks=list(frameworks), devices=list(devices), dtypes=list(dtypes),
                        modes=list(modes), precisions=["default"], seed=seed, out=folder / "run", jobs=jobs,
                        timeout=timeout, timing=None, quiet=True, command="harness fuzz", plots=False,
                        worker_timeout=within)
    _, records, _ = execute(settings)
    return Batch(folder / "run", records)


__all__ = ["Batch", "Item", "run", "write_programs"]
