"""`harness repro RUN_DIR --case NAME`: the standalone scripts of a divergence of an ordinary run.

The case's neutral loss is traced into a program (harness.fuzz.trace) at the point the run
checked it at (its seed), and the case's worst failing record (of one framework, if asked) gets
the scripts a fuzz finding gets (harness.fuzz.outputs), with the arrays the run kept.
"""
from __future__ import annotations

from pathlib import Path

from harness.define.loader import cases_in
from harness.errors import UsageError
from harness.fuzz.batch import Batch
from harness.fuzz.driver import Finding
from harness.fuzz.outputs import write_finding
from harness.fuzz.trace import trace
from harness.fuzz.triage import signature
from harness.store import runs
from harness.vocab import DIVERGING

#: checks a standalone script can show
SCRIPTED = ("fd", "jvp", "compiled", "reference", "pairwise", "forward")


def repro(run_dir, case_name: str, framework: str | None = None, out=None) -> dict:
    """Write the scripts for the worst scripted divergence of ``case_name`` in the run; returns the
    findings.jsonl-style row (scripts, case file)."""
    run = runs.load(run_dir)
    rows = [r for r in run.records if r["case"] == case_name]
    if not rows:
        raise UsageError(f"case {case_name!r} is not in the run at {run.folder}")
    failing = [r for r in rows if r["verdict"] in DIVERGING and r["check"] in SCRIPTED
               and (framework is None or framework in (r["framework"], r.get("other_framework")))]
    if not failing:
        who = f" for {framework}" if framework else ""
        raise UsageError(f"case {case_name!r} has no divergence{who} a standalone script can show "
                         f"(checks {', '.join(SCRIPTED)})")
    record = dict(max(failing, key=lambda r: (r["check"] == "fd", r.get("max_rel_err") or 0.0)))
    source = dict((run.meta.get("settings") or {}).get("cases") or []).get(case_name)
    if source is None:
        raise UsageError(f"{run.folder}/run.json does not say where case {case_name!r} came from")
    case = next((c for c in cases_in(source) if c.name == case_name), None)
    if case is None:
        raise UsageError(f"case {case_name!r} is no longer in {source}")
    program, point, wrt = trace(case, int(run.meta.get("seed") or 0))
    if record["param"] not in wrt and record["param"] != "*":
        record["param"] = f"{record['param']}_" if f"{record['param']}_" in wrt else record["param"]
    finding = Finding("R001", signature(record), record.get("cause") or record["check"], program, point, record,
                      Batch(run.folder, run.records), case_name, program.size(), wrt=wrt)
    folder = Path(out) if out is not None else run.folder / "repro" / case_name
    return write_finding(folder, finding)


__all__ = ["SCRIPTED", "repro"]
