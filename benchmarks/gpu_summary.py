"""The figures a GPU check is for, read from its folder (benchmarks/gpu_check.sh): one markdown page.

    python benchmarks/gpu_summary.py FOLDER [--out summary.md]

FOLDER holds what gpu_check.sh writes (any part may be missing: a step that timed out is named as
missing, not skipped): the main run (results.jsonl, run.json), jit/, port/, fuzz/ and the
timing-fidelity outputs. Sections:

- timing fidelity: max_deviation_pct per device (target <= 5) and each framework's line;
- precision policy: per case and framework on each GPU, the float32 gradient's worst relative error
  against the float64 reference under the default policy and under --precision highest, the
  judge's cause and whether the twin under highest passes (confirmed) — the TF32 findings;
- CPU vs GPU: the float64 GPU gradients against the CPU float64 reference, per framework, and every
  failing GPU record the precision policy does not explain (a finding);
- JAX eager vs jit, fuzzing (CPU vs GPU, eager vs compiled) and the ported models, in counts, the
  layer each divergence of a module case is located at, and the failing GPU records.

A pure function of the files (the same folder gives the same page); imports no framework.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness.render.markdown import table  # noqa: E402
from harness.store.records import read_jsonl  # noqa: E402
from harness.vocab import DIVERGING, FAILING  # noqa: E402

#: a float32 gradient this close to float64 (relative) is IEEE float32 rounding, not a policy
IEEE_LEVEL = 1e-5


def records(path: Path) -> list | None:
    return read_jsonl(path) if path.is_file() else None


def run_meta(folder: Path) -> dict:
    return json.loads((folder / "run.json").read_text()) if (folder / "run.json").is_file() else {}


def _rel(value) -> str:
    return "-" if value is None else f"{value:.1e}"


def _gpu(rec: dict) -> bool:
    return str(rec.get("device") or "").startswith("cuda")


def fidelity(folder: Path) -> list:
    lines = ["## Timing fidelity (harness vs each framework's own timer)", ""]
    found = sorted(folder.glob("timing_fidelity_*.txt"))
    if not found:
        return lines + ["missing: no timing_fidelity_*.txt (the step did not run or timed out)", ""]
    rows = []
    for path in found:
        device = path.stem.split("_")[-1]
        text = path.read_text()
        worst = re.search(r"max_deviation_pct=(nan|[\d.]+)(.*)", text)
        for line in text.splitlines():
            m = re.match(r"(\S+)\s+(\S+)\s+on (.+?): harness ([\d.]+) ms, own tool ([\d.]+) ms, deviation ([\d.]+)%"
                         r" \(median over (.*?);", line)
            if m:
                rows.append([device, m.group(1), m.group(2), m.group(3), m.group(4), m.group(5), m.group(6),
                             m.group(7)])
            m = re.match(r"(\S+)\s+not measured on \S+: (.*)", line)
            if m:
                rows.append([device, m.group(1), "", "", "", "", "not measured", m.group(2)])
        figure = ("missing (the benchmark did not finish)" if worst is None else
                  "not measured" if worst.group(1) == "nan" else f"**{worst.group(1)}**")
        rows.append([device, "**max_deviation_pct**", "", "", "", "", figure, worst.group(2).strip() if worst else ""])
    return lines + [table(rows, ["device", "framework", "mode", "on", "harness ms", "own tool ms", "deviation %",
                                 "rounds"]), ""]


def policies(recs: list) -> list:
    """Each framework's float32 policy on each GPU, as its worker reported it (default precision)."""
    seen = {}
    for r in recs:
        if _gpu(r) and r.get("precision") == "default" and r.get("policy"):
            seen.setdefault((r["framework"], r["device"]), r["policy"])
    rows = [[fw, dev, ", ".join(f"{k}={v}" for k, v in sorted(p.items()) if k != "threads")]
            for (fw, dev), p in sorted(seen.items())]
    return [table(rows, ["framework", "device", "float32 policy under the default precision"]), ""] if rows else []


def precision_policy(recs: list) -> list:
    lines = ["## Precision policy: float32 gradients on the GPU against float64", ""]
    lines += policies(recs)
    ref = [r for r in recs if r["check"] == "reference" and _gpu(r) and r["dtype"] == "float32"
           and r.get("max_rel_err") is not None]
    if not ref:
        return lines + ["no float32 reference records on a GPU", ""]
    worst: dict = {}
    policy: dict = defaultdict(list)    # the precision-policy records of each setting
    for r in ref:
        key = (r["case"], r["framework"], r["device"], r["mode"], r["precision"])
        if key not in worst or r["max_rel_err"] > worst[key]["max_rel_err"]:
            worst[key] = r
        if r.get("cause") == "precision-policy":
            policy[key].append(r)
    rows = []
    for (case, fw, dev, mode, precision), r in sorted(worst.items()):
        if precision != "default":
            continue
        twin = worst.get((case, fw, dev, mode, "highest"))
        labelled = policy[(case, fw, dev, mode, precision)]
        confirmed = [x for x in labelled if "; confirmed:" in (x.get("message") or "")]   # causes._confirm_policy
        verdict = ("confirmed" if labelled and len(confirmed) == len(labelled) else
                   f"{len(confirmed)} of {len(labelled)} confirmed" if labelled else
                   "within float32 (IEEE)" if r["max_rel_err"] <= IEEE_LEVEL else r["verdict"])
        rows.append([case, fw, dev, f"{r['param']}", _rel(r["max_rel_err"]),
                     _rel(twin["max_rel_err"]) if twin else "not run", len(labelled), verdict])
    lines += [table(rows, ["case", "framework", "device", "worst param", "rel err (default)", "rel err (highest)",
                           "precision-policy records", "under highest"]), ""]
    return lines


def cross_device(recs: list) -> list:
    lines = ["## CPU vs GPU", ""]
    f64 = [r for r in recs if r["check"] == "reference" and _gpu(r) and r["dtype"] == "float64"]
    if not f64:
        return lines + ["no float64 reference records on a GPU (was the run on a GPU?)", ""]
    per: dict = defaultdict(list)
    for r in f64:
        per[(r["framework"], r["device"], r["mode"])].append(r)
    rows = [[fw, dev, mode, len(rs), sum(r["verdict"] == "pass" for r in rs),
             _rel(max((r["max_rel_err"] or 0.0) for r in rs))] for (fw, dev, mode), rs in sorted(per.items())]
    lines += ["float64 gradients on the GPU against the same framework's CPU float64 ones:", "",
              table(rows, ["framework", "device", "mode", "records", "pass", "worst rel err"]), ""]
    return lines + findings(recs, "Failing GPU records the precision policy does not explain")


def findings(recs: list, title: str) -> list:
    bad = [r for r in recs if _gpu(r) and r["verdict"] in FAILING and r.get("cause") != "precision-policy"
           and not r.get("known")]
    lines = [f"{title}: **{len(bad)}**", ""]
    if bad:
        rows = [[r["case"], r["check"], r["framework"] + (f" vs {r['other_framework']}" if r.get("other_framework")
                                                          else ""),
                 f"{r['device']} {r['dtype']} {r['mode']} {r['precision']}", r.get("param") or "", r["verdict"],
                 _rel(r.get("max_rel_err")), r.get("cause") or "", (r.get("message") or "").split("\n")[0][:160]]
                for r in sorted(bad, key=lambda r: (r["case"], r["check"], r["framework"], str(r.get("param"))))]
        lines += [table(rows, ["case", "check", "frameworks", "setting", "param", "verdict", "rel err", "cause",
                               "message"]), ""]
    return lines


def interrupted(meta: dict) -> list:
    """A run stopped by the time bound says how far it got."""
    cut = meta.get("interrupted")
    return [f"**Stopped by the time bound ({cut['signal']}): {cut['finished']} of {cut['tasks']} tasks finished**; "
            "the rest are `skipped` run records.", ""] if cut else []


def counts(folder: Path, title: str) -> list:
    lines = [f"## {title}", ""]
    recs = records(folder / "results.jsonl")
    if recs is None:
        return lines + [f"missing: no {folder.name}/results.jsonl (the step did not run or timed out)", ""]
    lines += interrupted(run_meta(folder))
    tally = Counter((r["check"], r["verdict"]) for r in recs)
    checks = sorted({c for c, _ in tally}, key=str)
    verdicts = ("pass",) + DIVERGING + ("error", "skipped")
    rows = [[c] + [tally.get((c, v), 0) for v in verdicts] for c in checks]
    return lines + [table(rows, ["check", *verdicts]), ""] + located(recs) + \
        findings(recs, "Failing GPU records (not precision policy)")


def located(recs: list) -> list:
    """Module cases: the layer each setting's layer records mark as the first divergence (a port
    mistake is found at the same layer on every device)."""
    marks = sorted({(r["case"], r["device"], r["dtype"], r["precision"], r["check"], r.get("layer") or r["param"])
                    for r in recs if r.get("first_divergence")})
    if not marks:
        return []
    return ["Where the layer records locate each divergence (first divergence, forward and backward):", "",
            table([list(m) for m in marks], ["case", "device", "dtype", "precision", "check", "layer"]), ""]


def fuzzing(folder: Path) -> list:
    lines = ["## Fuzzing: CPU vs GPU, eager vs compiled", ""]
    path = folder / "fuzz.json"
    if not path.is_file():
        return lines + ["missing: no fuzz/fuzz.json (the step did not run or timed out)", ""]
    s = json.loads(path.read_text())
    st = s["settings"]
    lines += [f"{s['programs']} programs in {s['seconds']:.0f} s ({s['programs_per_minute']} per minute) on "
              f"{', '.join(st.get('devices') or ['cpu'])}, {', '.join(st['frameworks'])}, {', '.join(st['dtypes'])}, "
              f"{', '.join(st['modes'])}: **{s['findings']} finding(s)**"
              + (" (interrupted)" if s.get("interrupted") else ""), ""]
    rows = [json.loads(x) for x in (folder / "findings.jsonl").read_text().splitlines()] \
        if (folder / "findings.jsonl").is_file() else []
    if rows:
        lines += [table([[r["id"], r["check"], r["framework"] + (f" vs {r['other_framework']}" if r["other_framework"]
                                                                  else ""), r.get("device", "cpu"), r["dtype"],
                          r["mode"], r["cause"], _rel(r["record"].get("max_rel_err")),
                          r["text"].replace("\n", "; ")[:120]] for r in rows],
                        ["id", "check", "frameworks", "device", "dtype", "mode", "cause", "rel err", "program"]), ""]
    if s.get("not_run"):
        lines += [table([[g["framework"], g["device"], g["tasks"], g["reason"]] for g in s["not_run"]],
                        ["not run: framework", "device", "tasks", "reason"]), ""]
    return lines


def summary(folder: Path) -> str:
    folder = Path(folder)
    meta = run_meta(folder)
    main = records(folder / "results.jsonl")
    names = sorted({f"{r['device']}: {r['device_name']}" for r in main or [] if r.get("device_name")})
    versions = sorted({f"{r['framework']} {r['framework_version']}" for r in main or [] if r.get("framework_version")})
    lines = ["# GPU check summary", "", f"- devices: {'; '.join(names) or 'unknown'}",
             f"- frameworks: {', '.join(versions) or 'unknown'}",
             f"- main run: `{meta.get('command', '(run.json missing)')}`", ""]
    lines += fidelity(folder)
    if main is None:
        lines += ["## Precision policy and CPU vs GPU", "", "missing: no results.jsonl (the main run did not finish)",
                  ""]
    else:
        lines += interrupted(meta) + precision_policy(main) + cross_device(main)
    lines += counts(folder / "jit", "JAX eager vs jit on the GPU")
    lines += fuzzing(folder / "fuzz")
    lines += counts(folder / "port", "Ported models, CPU and GPU")
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--out", help="write here as well as to stdout")
    args = parser.parse_args()
    text = summary(Path(args.folder))
    if args.out:
        Path(args.out).write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
