"""What `harness fuzz` leaves behind: fuzz.md, findings.jsonl, fuzz.json and one folder per finding
with its case file (for `harness run --cases`) and one standalone script per framework involved.

Each finding's scripts get what its check compares: the framework's own finite differences (fd),
forward vs reverse mode (jvp), compiled vs eager (compiled), computed in the script; the
framework's float64 gradient (reference) or the other framework's result (pairwise, forward),
embedded from the run that showed the divergence. Written atomically, file by file.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from harness.fuzz.batch import Item, write_programs
from harness.fuzz.standalone import SCRIPT_NAMES, script
from harness.render.markdown import table
from harness.store.records import atomic_write_text

#: the fields of a record a finding keeps
_RECORD_FIELDS = ("check", "framework", "other_framework", "device", "dtype", "mode", "precision", "param", "verdict", "cause",
                  "max_abs_err", "max_rel_err", "worst_index", "got", "expected", "atol", "rtol", "message")


def checks_for(finding, rng) -> dict:
    """framework -> the standalone script's check for each framework the finding involves."""
    r = finding.record
    device, precision = r.get("device") or "cpu", r.get("precision") or "default"
    base = {"dtype": r["dtype"], "mode": r["mode"], "param": r["param"], "atol": float(r["atol"] or 0.0),
            "rtol": float(r["rtol"] or 0.0), "device": device, "precision": precision,
            "note": f"harness fuzz {finding.id}: {r.get('message') or r['check']}"}
    fw, other = r["framework"], r.get("other_framework")
    kind = r["check"]
    if kind in ("fd", "compiled"):
        return {fw: {**base, "kind": kind}}
    if kind == "jvp":
        wrt = getattr(finding, "wrt", ()) or tuple(finding.point.params)   # a traced case's inputs stay put
        direction = {k: (rng.standard_normal(v.shape) if k in wrt else 0.0 * v).tolist()
                     for k, v in finding.point.params.items()}
        return {fw: {**base, "kind": "jvp", "direction": direction}}
    if kind == "reference":   # the framework's float64 eager CPU gradient, whatever device the record's
        expected = finding.batch.gradients(finding.case, fw, "float64", "eager", "cpu")
        return {fw: {**base, "kind": "reference", "expected": _lists(expected),
                     "other": f"{fw} float64 eager cpu"}} if expected else {}
    if kind == "pairwise":
        a = finding.batch.gradients(finding.case, fw, r["dtype"], r["mode"], device, precision)
        b = finding.batch.gradients(finding.case, other, r["dtype"], r["mode"], device, precision)
        if not (a and b):
            return {}
        return {fw: {**base, "kind": "pairwise", "expected": _lists(b), "other": other},
                other: {**base, "kind": "pairwise", "expected": _lists(a), "other": fw}}
    if kind == "forward":
        return {fw: {**base, "kind": "forward", "expected": float(r["expected"]), "other": other},
                other: {**base, "kind": "forward", "expected": float(r["got"]), "other": fw}}
    return {}


def _lists(arrays: dict) -> dict:
    return {k: np.asarray(v, dtype=np.float64).tolist() for k, v in arrays.items()}


def write_finding(folder: Path, finding, extra_ops: str | None = None) -> dict:
    """case.py (+ programs.json) and the repro scripts of one finding; returns its findings.jsonl row.
    ``extra_ops``: the user's ops file the program may use (the case and the scripts import it)."""
    folder.mkdir(parents=True, exist_ok=True)
    item = Item(finding.id, finding.program, finding.point, ("finding",))
    case_file = write_programs(folder, [item], extra_ops)
    rng = np.random.default_rng(int(finding.id[1:]))
    scripts = {}
    for fw, check in checks_for(finding, rng).items():
        path = folder / SCRIPT_NAMES[fw]
        atomic_write_text(path, script(fw, finding.program, finding.point, check, extra_ops=extra_ops))
        scripts[fw] = str(path)
    r = finding.record
    frameworks = sorted({r["framework"], r.get("other_framework")} - {None})
    dtypes = sorted({"float64", r["dtype"]})
    modes = sorted({"eager", r["mode"]})
    device = r.get("device") or "cpu"
    devices = ["cpu"] + ([device] if device != "cpu" else [])
    return {"id": finding.id, "check": r["check"], "framework": r["framework"], "other_framework": r.get("other_framework"),
            "device": device, "dtype": r["dtype"], "mode": r["mode"], "precision": r.get("precision") or "default",
            "cause": finding.label, "ops": list(finding.ops),
            "program": finding.program.to_json(), "point": finding.point.to_json(), "text": finding.program.text(),
            "record": {k: r.get(k) for k in _RECORD_FIELDS}, "size": list(finding.program.size()),
            "found_size": list(finding.original), "steps": finding.steps, "minimised": finding.minimised,
            "duplicates": finding.duplicates, "case_file": str(case_file), "scripts": scripts,
            "run": f"python -m harness run --cases {case_file} --frameworks {','.join(frameworks)} "
                   + (f"--devices {','.join(devices)} " if device != "cpu" else "")
                   + ("--precision default,highest " if r.get("precision") == "highest" else "")
                   + f"--dtypes {','.join(dtypes)} --modes {','.join(modes)} --timing off"}


def setting(row: dict) -> str:
    """A finding's dtype and mode, and its device and precision where they are not the defaults."""
    return (f"{row['dtype']} {row['mode']}" + (f" {row['device']}" if row.get("device", "cpu") != "cpu" else "")
            + (" (precision highest)" if row.get("precision") == "highest" else ""))


def severity(row: dict) -> tuple:
    """Worst first: a wrong gradient at a smooth point before a difference between frameworks,
    then by relative error."""
    order = {"fd": 0, "jvp": 1, "compiled": 2, "reference": 3, "pairwise": 4, "forward": 5, "hvp": 6}
    return (order.get(row["check"], 9), -(row["record"].get("max_rel_err") or 0.0), row["id"])


def write(out: Path, outcome, versions: dict, classes=None) -> list:
    """Every output of a fuzz run; returns the findings' rows, worst first."""
    out = Path(out)
    extra = outcome.settings.extra_ops
    rows = sorted((write_finding(out / "findings" / f.id, f, extra) for f in outcome.findings), key=severity)
    atomic_write_text(out / "findings.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    summary = _summary(outcome, versions, rows, classes)
    atomic_write_text(out / "fuzz.json", json.dumps(summary, indent=2, default=str))
    atomic_write_text(out / "fuzz.md", render(summary, rows))
    return rows


def _summary(outcome, versions, rows, classes) -> dict:
    s = outcome.settings
    apart = Counter((o.kind, o.label) for o in outcome.observed)
    groups: dict = {}
    for o in outcome.observed:
        key = (o.kind, o.label, o.record["check"], o.record["framework"], o.record.get("other_framework"),
               (o.why or "")[:160] if o.label == "error" else "", o.record.get("device") or "cpu")
        n, smallest = groups.get(key, (0, o.program))
        groups[key] = (n + 1, o.program if _size(o.program) < _size(smallest) else smallest)
    return {
        "settings": {"budget_s": s.budget, "frameworks": s.frameworks, "devices": s.devices, "dtypes": s.dtypes,
                     "modes": s.modes, "seed": s.seed, "round_size": s.round_size, "max_ops": s.max_ops},
        "versions": versions, "seconds": round(outcome.seconds, 1), "interrupted": outcome.interrupted,
        "programs": outcome.programs, "rounds": outcome.rounds,
        "programs_per_minute": round(60.0 * outcome.programs / outcome.seconds, 1) if outcome.seconds else 0.0,
        "discarded": dict(outcome.discarded), "findings": len(rows),
        "filtered": [{"kind": k, "label": lab, "records": n} for (k, lab), n in sorted(apart.items())],
        "not_run": [{"framework": fw, "device": dev, "reason": why, "tasks": n}
                    for (fw, dev, why), n in sorted(outcome.not_run.items())],
        "groups": [{"kind": k[0], "label": k[1], "check": k[2], "framework": k[3], "other_framework": k[4],
                    "message": k[5], "device": k[6], "records": n, "smallest": p.text() if p else "(in a pack: not attributed)"} for k, (n, p) in sorted(
                        groups.items(), key=lambda kv: (kv[0][0], kv[0][1], -kv[1][0], str(kv[0])))],
        "rediscovery": [{"case": c.case, "cause": c.cause, "ops": sorted(c.ops), "out_of_reach": c.why_out,
                         "found": None if hit is None else {"label": hit[1], "program": hit[2].text(),
                                                            "where": hit[3]}}
                        for c, hit in (classes or [])],
    }


def render(summary: dict, rows: list) -> str:
    """fuzz.md: a pure function of the summary and the findings' rows."""
    s = summary["settings"]
    lines = ["# harness fuzz", ""]
    if summary["interrupted"]:
        lines += ["**Interrupted**: what was found until then, minimised as far as it got.", ""]
    lines += [f"{summary['programs']} programs in {summary['rounds']} round(s), {summary['seconds']:.0f} s "
              f"(budget {s['budget_s']:.0f} s): **{summary['programs_per_minute']} programs per minute**; "
              f"frameworks {', '.join(f'{k} {v}' for k, v in summary['versions'].items())}; dtypes "
              f"{', '.join(s['dtypes'])}; modes {', '.join(s['modes'])}; devices {', '.join(s.get('devices') or ['cpu'])}; "
              f"seed {s['seed']}.", ""]
    if summary.get("not_run"):
        lines += ["**Not run** (these tasks were skipped: nothing was checked there):", "",
                  table([[g["framework"], g["device"], str(g["tasks"]), g["reason"]] for g in summary["not_run"]],
                        ["framework", "device", "tasks", "reason"]), ""]
    lines += [f"**{len(rows)} finding(s)**, unique and minimised, worst first. Each folder under `findings/` has "
              "`case.py` (`harness run --cases` reproduces it) and one standalone script per framework "
              "(exit 1: it reproduces).", ""]
    for row in rows:
        r = row["record"]
        pair = f" vs {row['other_framework']}" if row["other_framework"] else ""
        lines += [f"## {row['id']}: {row['check']} · {row['framework']}{pair} · {setting(row)} · "
                  f"{row['cause']}", "", "```", row["text"], "```", "",
                  f"- at `{r['param']}`{list(r['worst_index']) if r.get('worst_index') else ''}: got "
                  f"{_num(r['got'])}, expected {_num(r['expected'])} (abs err {_num(r['max_abs_err'])}, rel "
                  f"{_num(r['max_rel_err'])}; atol {_num(r['atol'])}, rtol {_num(r['rtol'])})",
                  *([f"- {r['message']}"] if r.get("message") else []),
                  f"- minimised from {row['found_size'][0]} op(s), {row['found_size'][1]} element(s) to "
                  f"{row['size'][0]} op(s), {row['size'][1]} element(s) in {row['steps']} step(s)"
                  + ("" if row["minimised"] else " (stopped by the budget)")
                  + (f"; {row['duplicates']} duplicate(s) seen" if row["duplicates"] else ""),
                  *[f"- `python {path}`" for path in row["scripts"].values()],
                  f"- `{row['run']}`", ""]
    lines += ["## Kept apart: conventions, shared NaN, nondeterminism, errors (not bugs)", ""]
    lines += _groups(summary, "apart") or ["none", ""]
    lines += ["## Dropped by the filters: precision", ""]
    lines += _groups(summary, "dropped") or ["none", ""]
    if summary["discarded"]:
        lines += ["## Programs discarded before running", "",
                  table([[k, str(v)] for k, v in sorted(summary["discarded"].items(), key=lambda kv: -kv[1])],
                        ["reason", "programs"]), ""]
    if summary["rediscovery"]:
        found = [c for c in summary["rediscovery"] if c["found"]]
        reach = [c for c in summary["rediscovery"] if not c["out_of_reach"]]
        lines += ["## Documented classes rediscovered (cases/expected_divergences.toml)", "",
                  f"{len(found)} of the {len(reach)} classes within the fuzzer's opset found "
                  f"({len(summary['rediscovery']) - len(reach)} out of its reach).", "",
                  table([[c["case"], c["cause"], ", ".join(c["ops"]) or "-",
                           c["found"]["label"] + f" ({c['found']['where']})" if c["found"] else
                           ("out of reach: " + c["out_of_reach"] if c["out_of_reach"] else "**not found**"),
                           c["found"]["program"].replace("\n", "; ") if c["found"] else ""]
                          for c in summary["rediscovery"]], ["case", "cause", "ops", "found as", "smallest program"]), ""]
    return "\n".join(lines) + "\n"


def _groups(summary: dict, kind: str) -> list:
    rows = [g for g in summary["groups"] if g["kind"] == kind]
    if not rows:
        return []
    return [table([[g["label"], g["check"], g["framework"] + (f" vs {g['other_framework']}" if g["other_framework"] else "")
                     + (f" ({g['device']})" if g.get("device", "cpu") != "cpu" else ""),
                     str(g["records"]), g["smallest"].replace("\n", "; "), g["message"]] for g in rows],
                  ["class", "check", "frameworks", "records", "smallest program", "message"]), ""]


def _size(program) -> tuple:
    return program.size() if program is not None else (float("inf"),)


def _num(value) -> str:
    return "-" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)


__all__ = ["checks_for", "render", "setting", "severity", "write", "write_finding"]
