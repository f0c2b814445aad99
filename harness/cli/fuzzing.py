"""`python -m harness fuzz` and `python -m harness repro`: their arguments and handlers."""
from __future__ import annotations

import re
import sys
from pathlib import Path

from adapters import FRAMEWORKS
from harness.cli.commands import choose
from harness.errors import UsageError
from harness.plan import devices as device_discovery
from harness.run.interrupts import signals_interrupt
from harness.judge.tolerance import DTYPE_TOLERANCE

COMMANDS = ("fuzz", "repro")
_UNITS = {"s": 1, "m": 60, "h": 3600}


def budget_seconds(text: str) -> float:
    """'10m', '90s', '1.5h' or a bare number of seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([smh]?)\s*", text or "")
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"--budget {text!r}: give a time such as 10m, 90s or 1h")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def add_commands(sub) -> None:
    fz = sub.add_parser(
        "fuzz", help="generate programs, find gradient divergences no case asks about, minimise each",
        description="Generate small programs over the neutral ops (1-6 ops, random and edge points), run them "
                    "on every framework, dtype and mode, filter what is not a bug (non-differentiable points, "
                    "nondeterminism, NaN alike everywhere, float32 rounding), confirm and minimise the rest. "
                    "Writes fuzz.md, findings.jsonl and per finding case.py and standalone repro_<fw>.py "
                    "scripts (exit 1 when they reproduce).",
        epilog="exit codes: 0 no finding, 1 findings, 2 bad usage, 130/143/129 interrupted by SIGINT/SIGTERM/SIGHUP "
               "(what was found is written)")
    fz.add_argument("--budget", default="10m", help="how long to fuzz: 10m, 90s, 1h (default: 10m)")
    fz.add_argument("--frameworks", default=None,
                    help=f"comma-separated, from {', '.join(FRAMEWORKS)} (default: every installed one)")
    fz.add_argument("--dtypes", default="float64,float32", help="comma-separated (default: float64,float32)")
    fz.add_argument("--modes", default="eager,compiled", help="eager, compiled or both (default: eager,compiled)")
    fz.add_argument("--devices", default="cpu",
                    help="cpu, cuda, cuda:N or all (default: cpu); on a GPU each gradient is also held against "
                         "the framework's CPU float64 one (CPU vs GPU)")
    fz.add_argument("--seed", type=int, default=0, help="seed of the generated programs and points (default 0)")
    fz.add_argument("--out", metavar="DIR", help="write here (default: reports/fuzz-<time>)")
    fz.add_argument("--ops", default=None, help="comma-separated ops to generate from (default: the whole opset)")
    fz.add_argument("--extra-ops", metavar="FILE.py", default=None,
                    help="your own ops to fuzz beside the built-in ones: FILE defines FUZZ_OPS, a list of dicts "
                         "with name, numpy (float64 forward) and one function per framework (see "
                         "harness/fuzz/extra_ops.py)")
    fz.add_argument("--max-ops", type=int, default=6, help="ops per program at most (default 6)")
    fz.add_argument("--round-size", type=int, default=48, help="programs per round (default 48)")
    fz.add_argument("--pack-size", type=int, default=8,
                    help="programs checked together as one case in a round's screen (default 8; 1: each alone)")
    fz.add_argument("--jobs", type=int, default=2, help="worker processes at once (default 2)")
    fz.add_argument("--quiet", action="store_true", help="no progress line")

    rp = sub.add_parser(
        "repro", help="standalone scripts (one per framework, numpy and that framework only) for a divergence",
        description="Write case.py and repro_<fw>.py for the worst divergence of a case of a finished run: the "
                    "case's loss traced to a program over the neutral ops at the run's exact point.")
    rp.add_argument("run_dir", metavar="RUN_DIR", help="a run folder")
    rp.add_argument("--case", required=True, help="the case whose divergence to reproduce")
    rp.add_argument("--framework", default=None, help="only a divergence involving this framework")
    rp.add_argument("--out", metavar="DIR", help="where to write (default: RUN_DIR/repro/CASE)")


def dispatch(args, argv) -> int:
    return cmd_fuzz(args) if args.command == "fuzz" else cmd_repro(args)


def cmd_fuzz(args) -> int:
    from harness.cli.commands import check_out_folder
    from harness.fuzz.driver import FuzzSettings
    from harness.fuzz.generate import OPSET
    from harness.run.session import new_run_id

    if args.frameworks is None:
        frameworks = [fw for fw, info in FRAMEWORKS.items() if info.installed()]
    else:
        frameworks = choose(args.frameworks, FRAMEWORKS, "framework")
        absent = [fw for fw in frameworks if not FRAMEWORKS[fw].installed()]
        if absent:
            raise UsageError(f"{absent[0]} is not installed: {FRAMEWORKS[absent[0]].install}")
    if not frameworks:
        raise UsageError("no framework is installed: " + "; ".join(i.install for i in FRAMEWORKS.values()))
    dtypes = choose(args.dtypes, DTYPE_TOLERANCE, "dtype")
    modes = choose(args.modes, ("eager", "compiled"), "mode")
    try:
        devices = device_discovery.resolve(args.devices)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    extra = None
    if args.extra_ops:
        from harness.fuzz import extra_ops

        extra = str(Path(args.extra_ops).resolve())
        extras = extra_ops.load(extra)   # a broken file is refused before anything runs
    ops = choose(args.ops, {**OPSET, **(extras if extra else {})}, "op") if args.ops else None
    if min(args.max_ops, args.round_size, args.pack_size, args.jobs) < 1:
        raise UsageError("--max-ops, --round-size, --pack-size and --jobs must be at least 1")
    budget = budget_seconds(args.budget)
    out = check_out_folder(Path(args.out) if args.out else Path("reports") / f"fuzz-{new_run_id()}")
    settings = FuzzSettings(budget=budget, frameworks=frameworks, dtypes=dtypes, modes=modes, out=out, devices=devices,
                            seed=args.seed, jobs=args.jobs, round_size=args.round_size, pack_size=args.pack_size,
                            max_ops=args.max_ops,
                            ops=ops, quiet=args.quiet, extra_ops=extra)
    return run_fuzz(settings)


def run_fuzz(settings) -> int:
    """Fuzz, write every output, print where they are; the exit code."""
    from harness.define.loader import builtin_cases
    from harness.fuzz import outputs, rediscovery
    from harness.fuzz.driver import Fuzzer

    Path(settings.out).mkdir(parents=True, exist_ok=True)
    progress = None if settings.quiet else _Progress()
    with signals_interrupt():   # a job's time limit (SIGTERM) stops it as Ctrl-C does: findings so far written
        outcome = Fuzzer(settings, progress).run()
    if progress is not None:
        progress.close()
    cases = {c.name: c for c in builtin_cases()}
    table = Path(__file__).resolve().parents[2] / "cases" / "expected_divergences.toml"
    classes = rediscovery.documented(table, cases) if table.is_file() else []
    seen = [(f.ops, f.label, f.program, f.id) for f in outcome.findings]
    seen += [(tuple(sorted(set(o.program.ops()))), o.label, o.program, o.kind) for o in outcome.observed
             if o.program is not None]
    versions = {fw: FRAMEWORKS[fw].version() for fw in settings.frameworks}
    rows = outputs.write(settings.out, outcome, versions, rediscovery.rediscovered(classes, seen))
    say = print
    say(f"{outcome.programs} programs in {outcome.seconds:.0f} s, {len(rows)} finding(s)"
        + (" (interrupted)" if outcome.interrupted else ""))
    for row in rows:
        pair = f" vs {row['other_framework']}" if row["other_framework"] else ""
        say(f"  {row['id']} {row['check']} {row['framework']}{pair} {outputs.setting(row)}: "
            f"{'; '.join(row['text'].splitlines()[len(row['program']['params']):-1])}")
    say(f"report: {Path(settings.out) / 'fuzz.md'}")
    if outcome.interrupted:
        return 128 + outcome.signal
    return 1 if rows else 0


def cmd_repro(args) -> int:
    from harness.fuzz.repro import repro

    if args.framework is not None and args.framework not in FRAMEWORKS:
        raise UsageError(f"unknown framework {args.framework!r} (choose from {', '.join(FRAMEWORKS)})")
    row = repro(args.run_dir, args.case, args.framework, args.out)
    print(f"{row['check']} {row['framework']}" + (f" vs {row['other_framework']}" if row["other_framework"] else "")
          + f" {row['dtype']} {row['mode']} at {row['record']['param']}")
    for path in row["scripts"].values():
        print(f"python {path}")
    print(f"case file: {row['case_file']}")
    return 0


class _Progress:
    """One line on stderr: stage, programs tried, findings, time left (rewritten in a terminal)."""

    def __init__(self):
        self.tty = sys.stderr.isatty()

    def __call__(self, stage: str, programs: int, findings: int, left: float) -> None:
        line = f"fuzz: {programs} programs, {findings} finding(s), {int(left) // 60}m{int(left) % 60:02d}s left | {stage}"
        sys.stderr.write("\r" + line[:120].ljust(120) if self.tty else line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


__all__ = ["COMMANDS", "add_commands", "budget_seconds", "dispatch", "run_fuzz"]
