"""Run cases inside the current process: for tests and for users' own pytest suites.

The CLI isolates each framework in a worker; here the adapters are loaded into this process
(all three frameworks import together), which is what a test suite wants: no subprocesses,
results in seconds. Verdicts come from the same compare module as the CLI's, so a case agrees
here exactly when it agrees in a report.
"""
from __future__ import annotations

import tempfile
import traceback
from pathlib import Path

from adapters import FRAMEWORKS, load

from harness.judge import verdicts

from harness.worker import observe

from harness.judge import known

from harness.worker import warning_log
from harness.plan.tasks import REFERENCE
from harness.worker.main import save_arrays

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
    return [fw for fw, info in FRAMEWORKS.items() if info.installed()]


def run_case(case, frameworks=None, dtypes=("float64", "float32"), modes=("eager",), seed=0,
             fd_mode="auto", observations: list | None = None) -> list:
    """Check records for one case on CPU (same records as `harness run` would write);
    ``observations``, a list, receives the observation rows they were judged from."""
    from adapters.base import Unsupported

    frameworks = [fw for fw in (frameworks or installed()) if fw in case.frameworks([fw])]
    rows = []
    with tempfile.TemporaryDirectory(prefix="gradharness-") as tmp:
        arrays_dir = Path(tmp)
        for fw in frameworks:
            a = adapter(fw)
            combos = [(d, m) for d in dtypes for m in modes]
            if (REFERENCE["dtype"], REFERENCE["mode"]) not in combos:
                combos.insert(0, (REFERENCE["dtype"], REFERENCE["mode"]))
            for dtype, mode in combos:
                is_ref = (dtype, mode) == (REFERENCE["dtype"], REFERENCE["mode"])
                task = {"dtype": dtype, "mode": mode, "seed": seed, "fd": is_ref, "fd_mode": fd_mode}
                row = {"case": case.name, "framework": fw, "device": "cpu", "dtype": dtype, "mode": mode,
                       "precision": "default", "version": a.version(), "policy": a.precision_policy(),
                       "task": {"fd": is_ref, "fd_mode": fd_mode, "timing": None}}
                seen: list = []
                try:
                    obs, arrays = observe.run(a, case, task, seen)
                    name = f"{fw}-{dtype}-{mode}.npz"
                    save_arrays(str(arrays_dir / name), arrays)
                    row.update(obs, status="ok", arrays=name)
                except Unsupported as exc:
                    row.update(status="skipped", reason=str(exc))
                except Exception as exc:  # noqa: BLE001 - reported as an error record
                    row.update(status="error", reason=f"{type(exc).__name__}: {exc}",
                               traceback="".join(traceback.format_exception(exc)[-4:]),
                               **({"cause": exc.cause} if isinstance(exc, observe.AutodiffError) else {}))
                if seen:
                    row["warnings"] = seen
                rows.append(row)
        if observations is not None:
            observations.extend(rows)
        records = verdicts.build_records(rows, {case.name: case}, arrays_dir)
        known.apply(records, known.entries_for([case]))
        return records
