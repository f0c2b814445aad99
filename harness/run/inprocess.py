"""Run cases inside the current process: for tests and for users' own pytest suites.

The CLI isolates each framework in a worker; here the adapters are loaded into this process
(all three frameworks import together), which is what a test suite wants: no subprocesses,
results in seconds. Each task runs through the worker's own run_task (harness/worker/task.py)
and is judged by the CLI's judge, from arrays held in memory: a case agrees here exactly when it
agrees in a report, fails with the same text, and no array file is written.
"""
from __future__ import annotations

from adapters import FRAMEWORKS, load
from harness.judge import known, verdicts
from harness.plan.tasks import REFERENCE
from harness.worker import warning_log
from harness.worker.task import run_task

_ADAPTERS: dict = {}
#: warnings each framework raised on import and setup, recorded rather than raised
SETUP_WARNINGS: dict = {}


def adapter(framework: str):
    """One CPU adapter per framework for the life of the process."""
    if framework not in _ADAPTERS:
        with warning_log.capture() as caught:
            a = load(framework)
            a.setup("cpu", threads=0, precision="default")
        SETUP_WARNINGS[framework] = caught.rows()
        _ADAPTERS[framework] = a
    return _ADAPTERS[framework]


def installed() -> list:
    """The frameworks importable here (in-process runs load every one of them together)."""
    return [fw for fw, info in FRAMEWORKS.items() if info.installed()]


def run_case(case, frameworks=None, dtypes=("float64", "float32"), modes=("eager",), seed=0,
             fd_mode="auto", observations: list | None = None) -> list:
    """Check records for one case on CPU (same records as `harness run` would write);
    ``observations``, a list, receives the observation rows they were judged from.

    Each task runs through the worker's own run_task, so its error text, seeding and warnings
    are a worker's; its arrays stay in memory for the judge (no file is written)."""
    frameworks = [fw for fw in (frameworks or installed()) if fw in case.frameworks([fw])]
    combos = [(d, m) for d in dtypes for m in modes]
    if (REFERENCE["dtype"], REFERENCE["mode"]) not in combos:
        combos.insert(0, (REFERENCE["dtype"], REFERENCE["mode"]))
    rows, held = [], {}
    for fw in frameworks:
        rows += [_observe(adapter(fw), case, dtype, mode, seed, fd_mode, held) for dtype, mode in combos]
    if observations is not None:
        observations.extend(rows)
    records = verdicts.build_records(rows, {case.name: case}, held)
    known.apply(records, known.entries_for([case]))
    return records


def _observe(a, case, dtype: str, mode: str, seed: int, fd_mode: str, held: dict) -> dict:
    """One task's observation row, as a worker's answer would make it; its arrays go to ``held``
    under the name the row gives them."""
    is_ref = (dtype, mode) == (REFERENCE["dtype"], REFERENCE["mode"])
    name = f"{a.name}-{dtype}-{mode}"

    def keep(arrays: dict) -> str:
        held[name] = arrays
        return name

    task = {"case": case.name, "dtype": dtype, "mode": mode, "seed": seed, "fd": is_ref, "fd_mode": fd_mode,
            "timing": None}
    row = {"case": case.name, "framework": a.name, "device": "cpu", "dtype": dtype, "mode": mode,
           "precision": "default", "version": a.version(), "task": {"fd": is_ref, "fd_mode": fd_mode, "timing": None}}
    row.update(run_task(a, task, lambda: case, keep, reference=adapter))
    return row


__all__ = ["SETUP_WARNINGS", "adapter", "installed", "run_case"]
