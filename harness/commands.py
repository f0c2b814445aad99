"""The CLI beyond `run` and `list`: `report`, `compare`, `merge`, and the fan-out, progress and
exit-code options of `run` (`--shard`, `--executor`, `--fail-on`). harness/cli.py hooks these in;
they live here so the run's own lifecycle (cli.py, session.py) stays small.

Exit codes: 0 nothing to fail on; 1 what --fail-on names happened; 2 bad usage (one line on stderr).
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

from .records import VERDICTS
from .runs import RunError

COMMANDS = ("report", "compare", "merge")
RUN_FAIL_ON_DEFAULT = "diverge,nan,error"


class CommandError(ValueError):
    """Bad usage of report/compare/merge or of the run options here: one line, exit 2."""


def errors() -> tuple:
    from .diff import DiffError
    from .executors import ExecutorError

    return (CommandError, RunError, DiffError, ExecutorError)


# ---- run options -------------------------------------------------------------------------------------
def add_run_options(run) -> None:
    run.add_argument("--shard", metavar="K/N",
                     help="run only shard K of N: whole cases, balanced by estimated cost, the same split "
                          "in every shard whatever the order of --cases; join the shard folders with "
                          "`python -m harness merge`")
    run.add_argument("--executor", default="local", choices=("local", "ray"),
                     help="where worker groups run: local processes (default) or Ray tasks on the cluster "
                          "at RAY_ADDRESS (else a local Ray); needs pip install 'gradharness[ray]'")
    run.add_argument("--fail-on", default=RUN_FAIL_ON_DEFAULT, metavar="VERDICTS", type=_fail_on_arg,
                     help=f"verdicts that make the exit code 1, from {', '.join(VERDICTS)} or none "
                          f"(default: {RUN_FAIL_ON_DEFAULT})")


def fail_on_verdicts(text: str) -> tuple:
    picked = [t.strip() for t in (text or "").split(",") if t.strip()]
    unknown = [p for p in picked if p not in VERDICTS and p != "none"]
    if unknown:
        raise CommandError(f"--fail-on: unknown verdict {unknown[0]!r} (choose from {', '.join(VERDICTS)} or none)")
    return tuple(p for p in picked if p != "none")


def _fail_on_arg(text: str) -> str:
    """argparse type: checked while parsing, so a bad value is a usage error before anything runs."""
    import argparse

    try:
        fail_on_verdicts(text)
    except CommandError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--fail-on: ")) from None
    return text


def apply_run_options(settings, args) -> None:
    """--shard (keep this shard's cases) and --executor (--fail-on is checked by argparse)."""
    from . import executors
    from .plan import parse_shard, shard_cases

    executors.check(args.executor)
    if args.executor != "local":
        settings.executor = args.executor
    if args.shard:
        try:
            index, count = parse_shard(args.shard)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        installed = [fw for fw in settings.frameworks if fw not in settings.missing]
        plan_args = {"frameworks": installed, "devices": settings.devices, "dtypes": settings.dtypes,
                     "modes": settings.modes, "precisions": settings.precisions, "seed": settings.seed,
                     "fd_mode": settings.fd_mode, "timing": settings.timing}
        mine, _owner, loads = shard_cases(settings.cases, index, count, plan_args)
        settings.shard = {"index": index, "count": count, "of_cases": [c.name for c in settings.cases],
                          "cost": round(loads[index - 1], 3), "costs": [round(x, 3) for x in loads]}
        settings.cases = mine
        if not mine:
            print(f"note: shard {index}/{count} has no case ({len(settings.shard['of_cases'])} case(s) over "
                  f"{count} shards); writing an empty run", file=sys.stderr)


def progress_for(settings):
    """The progress display for a run (None with --quiet)."""
    if settings.quiet:
        return None
    from .progress import Progress

    return Progress()


def command_line(argv) -> str:
    """The command as run.json and the report record it: ``python -m harness`` + the shell-quoted argv."""
    return "python -m harness " + " ".join(shlex.quote(a) for a in argv)


def finish(run_dir, records, meta, args) -> int:
    """The closing lines of `run` and `merge` (summary, report and results paths); the exit code."""
    from . import report

    print(report.console_summary(records, meta))
    print(f"report: {run_dir / 'report.md'}")
    print(f"results: {run_dir / 'results.jsonl'}")
    return 1 if failed(records, args) else 0


def failed(records, args) -> bool:
    """Does --fail-on (default diverge,nan,error) make this run's exit code 1? Known upstream
    framework bugs of the built-in library (``known``: cases/expected_divergences.toml) do not."""
    verdicts = fail_on_verdicts(args.fail_on)
    return any(r["verdict"] in verdicts for r in records if r.get("check") != "timing" and not r.get("known"))


# ---- report / compare / merge ------------------------------------------------------------------------------
def add_subcommands(sub) -> None:
    rep = sub.add_parser("report", help="re-render report.md (and plots) from a run's results, running nothing",
                         description="Re-render report.md and its plots from results.jsonl (and run.json beside "
                                     "it, if present) without running anything.")
    rep.add_argument("results", metavar="RESULTS", help="a run folder or a results.jsonl file")
    rep.add_argument("--out", metavar="PATH",
                     help="where to write: a .md file, or a folder (report.md and plots go in it); "
                          "default: report.md beside the results")
    rep.add_argument("--no-plots", action="store_true", help="do not render the PNG plots")

    cmp_ = sub.add_parser("compare", help="what changed between two runs: gradients, verdicts, cases, timings",
                          description="Compare two runs (folders or results.jsonl files): verdicts that flipped, "
                                      "errors and gradients that moved beyond tolerance, new/removed cases, "
                                      "timings slower or faster beyond noise. Markdown on stdout.",
                          epilog="exit codes: 0 nothing that --fail-on names, 1 something it names, 2 bad usage")
    cmp_.add_argument("old", metavar="OLD")
    cmp_.add_argument("new", metavar="NEW")
    cmp_.add_argument("--out", metavar="FILE", help="also write the markdown to FILE")
    cmp_.add_argument("--fail-on", default="divergence", metavar="WHAT",
                      help="comma-separated: divergence (a verdict got worse, or an error or gradient moved "
                           "beyond tolerance), change (any gradient change), slowdown[=X%%] (a timing slower "
                           "beyond noise by more than X, default the --min-change), removed (a case or check "
                           "gone), none (default: divergence)")
    cmp_.add_argument("--alpha", type=float, default=None,
                      help="significance level of the timing test (default 0.01)")
    cmp_.add_argument("--min-change", default=None, metavar="PCT",
                      help="smallest timing change reported, e.g. 5%% (default 5%%)")
    cmp_.add_argument("--no-arrays", action="store_true",
                      help="compare records only, not the gradient arrays (faster for large runs)")

    mer = sub.add_parser("merge", help="join shard runs (run --shard K/N) into one run and report",
                         description="Join shard run folders into one run: observations and arrays copied, every "
                                     "check judged again over all shards (so framework-vs-framework checks across "
                                     "shards are made), results.jsonl and report.md written.")
    mer.add_argument("dirs", nargs="+", metavar="DIR", help="shard run folders")
    mer.add_argument("--out", metavar="DIR", help="the merged run folder (default: reports/<new run id>)")
    mer.add_argument("--fail-on", default=RUN_FAIL_ON_DEFAULT, metavar="VERDICTS", type=_fail_on_arg,
                     help=f"verdicts that make the exit code 1 (default: {RUN_FAIL_ON_DEFAULT})")


def dispatch(args, argv) -> int:
    if args.command == "report":
        return cmd_report(args)
    if args.command == "compare":
        return cmd_compare(args)
    return cmd_merge(args, argv)


def rerender(results, out=None, plots: bool = True) -> Path:
    """report.md (and plots) from a run's results; returns the report's path."""
    from . import plots as plotting
    from . import report, runs
    from .records import atomic_write_text

    run = runs.load(results)
    if out is None:
        target = run.folder / "report.md"
    else:
        out = Path(out)
        target = out if out.suffix.lower() == ".md" else out / "report.md"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandError(f"cannot create {target.parent}: {exc.strerror or exc}") from None
    meta = dict(run.meta)
    if run.derived:
        meta["derived"] = True
    records = run.records
    if run.has_observations():
        # the completeness invariant, re-checked: a check the observations imply but the results
        # lack (a results file edited, truncated or written by a buggy version) is an error row
        from . import coverage
        from .records import normalise

        gaps = [normalise(r, run.run_id) for r in coverage.gap_records(records, run.observations(), {})]
        if gaps:
            records = records + gaps
            run.notes.append(f"{len(gaps)} check(s) the observations imply have no record in the results: "
                             "reported as errors")
            meta["notes"] = list(meta.get("notes") or []) + [run.notes[-1]]
    meta["plots"] = plotting.render_all(records, target.parent) if plots else []
    try:
        atomic_write_text(target, report.render(records, meta))
    except OSError as exc:
        raise CommandError(f"cannot write {target}: {exc.strerror or exc}") from None
    for note in run.notes:
        print(f"note: {note}", file=sys.stderr)
    return target


def cmd_report(args) -> int:
    target = rerender(args.results, args.out, plots=not args.no_plots)
    print(f"report: {target}")
    return 0


def _fraction(text, what) -> float:
    t = str(text).strip()
    try:
        return float(t[:-1]) / 100.0 if t.endswith("%") else float(t)
    except ValueError:
        raise CommandError(f"{what} {text!r}: give a number or a percentage") from None


def cmd_compare(args) -> int:
    from . import diff, runs

    fail_on = diff.parse_fail_on(args.fail_on)
    alpha = diff.DEFAULT_ALPHA if args.alpha is None else args.alpha
    if not 0 < alpha < 1:
        raise CommandError("--alpha must be between 0 and 1")
    min_change = diff.DEFAULT_MIN_CHANGE if args.min_change is None else _fraction(args.min_change, "--min-change")
    old, new = runs.load(args.old), runs.load(args.new)
    d = diff.compare_runs(old, new, alpha=alpha, min_change=min_change, arrays=not args.no_arrays)
    text = diff.render(d)
    why = diff.failures(d, fail_on)
    if why:
        text += "\n**Fails** (`--fail-on " + args.fail_on + "`): " + "; ".join(why) + ".\n"
    sys.stdout.write(text)
    if args.out:
        from .records import atomic_write_text

        try:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(Path(args.out), text)
        except OSError as exc:
            raise CommandError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    return 1 if why else 0


def cmd_merge(args, argv) -> int:
    from . import merge
    from .session import new_run_id

    run_id = new_run_id()
    out = Path(args.out) if args.out else Path("reports") / run_id
    run_dir, records, meta = merge.merge(args.dirs, out, command=command_line(argv), run_id=run_id)
    for note in meta.get("notes", []):
        print(f"note: {note}", file=sys.stderr)
    return finish(run_dir, records, meta, args)
