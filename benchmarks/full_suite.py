"""Wall time of `python -m harness run --all` now against a baseline commit, in the same session.

    python benchmarks/full_suite.py [--baseline 422cf73] [--cases SPEC] [--skip-baseline]

The baseline commit is unpacked into a temporary folder (`git archive`: the checkout is not
touched) and runs the same cases with the same command-line settings as this tree: the cases that
`--all` selects in both (cases added since the baseline, which it cannot run, are left out of both;
`--cases` narrows further). This tree runs twice with a fresh, empty compilation-cache folder: cold
(nothing cached) and warm (what the cold run cached: a user's second run). The machine should be
otherwise idle; runs are sequential, never overlapping.

Prints per run the wall time and the task-seconds per framework (from observations.jsonl), then
`cache_speedup=` (cold / warm) and, last, `ratio_vs_baseline=` (cold / baseline).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: the commit issue 17 measured "today" at
BASELINE = "422cf73"
# (the loader moved into harness/define/ after the baseline: either place)
_ALL_CASES = ("import sys\ntry:\n    from harness.define.loader import select\nexcept ImportError:\n"
              "    from harness.loader import select\n"
              "print(','.join(c.name for c in select(sys.argv[1] if len(sys.argv) > 1 else None, everything=len(sys.argv) == 1)))")


def _env(tree: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GRADHARNESS_CACHE_DIR")}
    env["PYTHONPATH"] = str(tree)
    env.update(extra)
    return env


def case_names(tree: Path, spec: str | None) -> list:
    args = [sys.executable, "-c", _ALL_CASES] + ([spec] if spec else [])
    out = subprocess.run(args, cwd=tree, env=_env(tree), capture_output=True, text=True, check=True)
    return out.stdout.strip().split(",")


def run(tree: Path, cases: list, out: Path, extra=(), env_extra=None) -> dict:
    """One `harness run` of ``cases`` from ``tree``: wall seconds and task-seconds per framework."""
    cmd = [sys.executable, "-m", "harness", "run", "--cases", ",".join(cases), "--out", str(out), "--quiet",
           "--fail-on", "none", *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tree, env=_env(tree, **(env_extra or {})), capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"the run from {tree} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    per = collections.Counter()
    tasks = collections.Counter()
    for line in (out / "observations.jsonl").read_text().splitlines():
        row = json.loads(line)
        per[row["framework"]] += float(row.get("seconds") or 0.0)
        tasks[row["framework"]] += 1
    return {"wall": wall, "task_seconds": dict(per), "tasks": dict(tasks)}


def show(name: str, result: dict) -> None:
    parts = ", ".join(f"{fw} {s:.0f} s/{result['tasks'][fw]} tasks" for fw, s in sorted(result["task_seconds"].items()))
    print(f"{name:9s} wall {result['wall']:7.1f} s   task-seconds: {parts}", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default=BASELINE, help=f"the commit to compare with (default {BASELINE})")
    parser.add_argument("--cases", default=None, help="a --cases spec to run instead of --all (both trees)")
    parser.add_argument("--skip-baseline", action="store_true", help="only the cold and warm runs of this tree")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="full-suite-"))
    try:
        base = work / "baseline"
        base.mkdir()
        archive = subprocess.run(["git", "archive", "--format=tar", args.baseline], cwd=ROOT, capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
        mine = case_names(ROOT, args.cases)
        theirs = set(case_names(base, args.cases))
        cases = [c for c in mine if c in theirs]
        print(f"{len(cases)} cases ({len(mine) - len(cases)} newer than {args.baseline} left out), "
              f"{os.cpu_count()} CPUs", flush=True)
        results = {}
        if not args.skip_baseline:
            results["baseline"] = run(base, cases, work / "run-baseline")
            show(f"{args.baseline}", results["baseline"])
        cache = work / "cache"
        results["cold"] = run(ROOT, cases, work / "run-cold", ("--cache-dir", str(cache)))
        show("cold", results["cold"])
        results["warm"] = run(ROOT, cases, work / "run-warm", ("--cache-dir", str(cache)))
        show("warm", results["warm"])
        print(f"cache_speedup={results['cold']['wall'] / results['warm']['wall']:.2f}")
        if "baseline" in results:
            print(f"warm_ratio_vs_baseline={results['warm']['wall'] / results['baseline']['wall']:.3f}")
            print(f"ratio_vs_baseline={results['cold']['wall'] / results['baseline']['wall']:.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
