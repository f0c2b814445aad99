"""Seed stability: does the set of divergences of the built-in cases depend on the seed?

Runs the chosen built-in cases in-process (CPU, float64 with finite differences and float32,
every installed framework) at several seeds and prints, per seed, the failing checks that
differ from the first seed's — the verdict flips — split into those the expected table
(cases/expected_divergences.toml) declares and those it does not. A flip outside the table
means a verdict hangs on where the random point landed (a tolerance on the edge of a tier, a
point near a kink): the harness's result would then change with --seed.

    python benchmarks/seed_stability.py                     # every built-in case, seeds 0..4
    python benchmarks/seed_stability.py --seeds 0 1 2 --cases op_gelu_exact op_tanh_saturated
    python benchmarks/seed_stability.py --tags edge --cases classifier_xent   # edge points + one

Exit status 1 when a flip is outside the expected table. Takes ~8 min per seed for every case on
two CPU cores.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cases import expected  # noqa: E402
from harness.define.loader import builtin_cases  # noqa: E402
from harness.run.inprocess import run_case  # noqa: E402


def failing_keys(records: list) -> set:
    """The identity of every failing record (verdict included): what a flip is measured on."""
    return {(r["case"], r["check"], r["framework"], r.get("other_framework"), r["dtype"], r["param"],
             r.get("method"), r["verdict"]) for r in records if r["verdict"] in expected.FAILING}


def declared(key: tuple, entries: list) -> bool:
    case, check, fw, other, _dtype, param, _method, _verdict = key
    rec = {"case": case, "check": check, "framework": fw, "other_framework": other, "param": param}
    return any(e.matches(rec) for e in entries)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--cases", nargs="*", help="case names (with --tags: either selects; neither: every "
                                                   "built-in case)")
    parser.add_argument("--tags", nargs="*", help="cases carrying one of these tags")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    every = not args.cases and not args.tags
    cases = [c for c in builtin_cases() if every or c.name in (args.cases or ())
             or set(args.tags or ()) & set(c.tags)]
    if not cases:
        print("no case selected", file=sys.stderr)
        return 2
    entries = expected.load()
    per_seed = {}
    for seed in args.seeds:
        start = time.perf_counter()
        records = [r for c in cases for r in run_case(c, seed=seed)]
        per_seed[seed] = failing_keys(records)
        print(f"seed {seed}: {len(records)} records, {len(per_seed[seed])} failing "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    first = args.seeds[0]
    undeclared = 0
    for seed in args.seeds[1:]:
        flips = per_seed[first] ^ per_seed[seed]
        outside = sorted(k for k in flips if not declared(k, entries))
        undeclared += len(outside)
        print(f"seed {first} vs {seed}: {len(flips)} verdict flips, {len(outside)} outside the expected table")
        for k in sorted(flips):
            side = f"only at seed {first}" if k in per_seed[first] else f"only at seed {seed}"
            where = "OUTSIDE the table" if k in outside else "declared"
            print(f"    {k[0]} {k[1]} {k[2]}{'~' + k[3] if k[3] else ''} {k[4]} {k[5]} {k[7]} ({side}; {where})")
    print(f"{len(cases)} cases x {len(args.seeds)} seeds: {undeclared} flips outside the expected table")
    return 1 if undeclared else 0


if __name__ == "__main__":
    sys.exit(main())
