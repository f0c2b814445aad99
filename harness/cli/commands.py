"""The CLI beyond `run` and `list`: `report`, `compare`, `merge`, and the fan-out, progress and
exit-code options of `run` (`--shard`, `--executor`, `--fail-on`), and the CI outputs of `run`,
`merge` and `report` (`--junit-xml`; the job summary appended to the file GITHUB_STEP_SUMMARY names,
read here and nowhere else). harness/cli/main.py hooks these in; they live here so the run's own
lifecycle (cli.py, session.py) stays small.

Exit codes: 0 nothing to fail on; 1 what --fail-on names happened; 2 bad usage (one line on stderr).
"""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from harness.define.loader import did_you_mean
from harness.errors import OutputError, UsageError
from harness.store.records import atomic_write_text, read_observations
from harness.vocab import DEFAULT_FAIL_ON, VERDICTS

COMMANDS = ("report", "compare", "merge")
#: --fail-on words beside the verdicts: a failing check no expected entry explains, an entry no
#: longer seen (harness/judge/known.py)
GATES = ("new", "vanished")


def _csv(value: str) -> list:
    return [t.strip() for t in value.split(",") if t.strip()]


def choose(value: str, allowed, what: str) -> list:
    """A comma-separated choice from ``allowed``; ``both`` names both of a two-way choice."""
    picked = _csv(value)
    if picked == ["both"] and len(allowed) == 2:
        return list(allowed)
    unknown = [p for p in picked if p not in allowed]
    if unknown:
        raise UsageError(f"unknown {what} {unknown[0]!r} (choose from {', '.join(allowed)})")
    if not picked:
        raise UsageError(f"no {what} given")
    return picked


# ---- run options -------------------------------------------------------------------------------------
def add_run_options(run) -> None:
    run.add_argument("--shard", metavar="K/N",
                     help="run only shard K of N: whole cases, balanced by estimated cost, the same split "
                          "in every shard whatever the order of --cases; join the shard folders with "
                          "`python -m harness merge`")
    run.add_argument("--executor", default="local", choices=("local", "ray"),
                     help="where worker groups run: local processes (default) or Ray tasks on the cluster "
                          "at RAY_ADDRESS (else a local Ray); needs pip install 'gradharness[ray]'")
    run.add_argument("--ray-chunks", type=int, default=None, metavar="N",
                     help="with --executor ray: split the worker groups into N Ray tasks of whole cases, "
                          "balanced by cost (default: the cluster's CPUs for CPU groups, its GPUs for GPU groups)")
    run.add_argument("--fail-on", default=DEFAULT_FAIL_ON, metavar="VERDICTS", type=_fail_on_arg,
                     help=f"comma-separated verdicts that make the exit code 1, from {', '.join(VERDICTS)}; "
                          "new (a failing check no expected entry explains) and vanished (an expected "
                          "entry no longer seen); or none alone; empty is an error, not none (default: "
                          f"{DEFAULT_FAIL_ON}: every failing check but a known upstream framework bug)")
    add_expected_option(run)
    add_junit_option(run)


def add_junit_option(parser) -> None:
    parser.add_argument("--junit-xml", metavar="FILE",
                        help="also write the checks as JUnit XML for CI test reporters, whatever the exit code: "
                             "one testcase per case x framework x setting, failed by a divergence or NaN (the "
                             "report's line for it, known ones marked), errored by an error. (Where "
                             "GITHUB_STEP_SUMMARY is set, run and merge also append the report's summary to it.)")


def check_junit_xml(args) -> None:
    """--junit-xml, refused (UsageError) before anything runs or is written: empty, a folder, or
    under a file. An empty value (an unset CI variable) is an error, not "no file"."""
    path = getattr(args, "junit_xml", None)
    if path is None:
        return
    if not path.strip():
        raise UsageError("--junit-xml is empty: name the file to write")
    check_out_file(path, "--junit-xml")


def add_expected_option(parser) -> None:
    parser.add_argument("--expected", metavar="FILE", action="append", default=[],
                        help="a table of your own known divergences (cases/expected_divergences.toml's format: "
                             "case, frameworks, check, param, cause, reason, optional version pins), added to the "
                             "built-in one for the built-in cases; repeatable. The report and console split new "
                             "from known; gate with --fail-on new")


def fail_on_verdicts(text: str) -> tuple:
    """'diverge,nan' -> ('diverge', 'nan'); 'none' -> (). Empty is an error, not none: an unset CI
    variable must not turn the gate off."""
    picked = [t.strip() for t in (text or "").split(",")]
    if not any(picked):
        raise UsageError(f"--fail-on {text!r} is empty: name verdicts ({', '.join(VERDICTS)}) or none")
    if not all(picked):
        raise UsageError(f"--fail-on {text!r}: an empty item between commas")
    words = (*VERDICTS, *GATES)
    unknown = [p for p in picked if p not in words and p != "none"]
    if unknown:
        raise UsageError(f"--fail-on: unknown verdict {unknown[0]!r}{did_you_mean(unknown[0], words)} "
                           f"(choose from {', '.join(words)} or none)")
    if "none" in picked and len(set(picked)) > 1:
        raise UsageError(f"--fail-on {text!r}: none cannot be combined with verdicts")
    return tuple(p for p in picked if p != "none")


def _fail_on_arg(text: str) -> str:
    """argparse type: checked while parsing, so a bad value is a usage error before anything runs."""
    import argparse

    try:
        fail_on_verdicts(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--fail-on: ").removeprefix("--fail-on ")) from None
    return text


def apply_run_options(settings, args) -> None:
    """--shard (keep this shard's cases) and --executor (--fail-on is checked by argparse)."""
    from harness.run import executors
    from harness.plan.tasks import parse_shard, shard_cases

    executors.check(args.executor)
    if args.executor != "local":
        settings.executor = args.executor
    if args.ray_chunks is not None:
        if args.executor != "ray":
            raise UsageError("--ray-chunks goes with --executor ray")
        if args.ray_chunks < 1:
            raise UsageError("--ray-chunks must be at least 1")
        settings.ray_chunks = args.ray_chunks
    if args.shard:
        try:
            index, count = parse_shard(args.shard)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
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
    from harness.run.progress import Progress

    return Progress()


def say(text: str) -> None:
    """Write ``text`` and a newline to stdout. A reader that stops early (`| head`) is no error: the
    rest is dropped quietly (stdout pointed at /dev/null) and the command keeps its own exit code."""
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        silence_stdout()


def silence_stdout() -> None:
    """Point stdout at /dev/null, so nothing more (nor the flush at exit) meets a closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def check_out_folder(path, flag: str = "--out") -> Path:
    """A run folder to create: refused (UsageError) when it is a file or holds files; checked
    before anything runs. One that cannot be created (under a file, read-only) is refused where
    it is created, which removes whatever it made."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path} is a file, not a folder")
    if path.is_dir() and any(path.iterdir()):
        raise UsageError(f"{flag} {path} exists and is not empty")
    return path


def check_out_file(path, flag: str = "--out", given=None) -> Path:
    """A file to write (``given``: what the user typed, for the message): refused when it is a folder
    or sits under a file."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{flag} {given or path} is a folder, not a file")
    above = next((p for p in path.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise UsageError(f"{flag} {given or path}: {above} is a file, not a folder")
    return path


def command_line(argv) -> str:
    """The command as run.json and the report record it: ``python -m harness`` + the shell-quoted argv."""
    return "python -m harness " + " ".join(shlex.quote(a) for a in argv)


def finish(run_dir, records, meta, args) -> int:
    """The closing lines of `run` and `merge` (summary, report and results paths) and their CI
    outputs (the job summary, --junit-xml: written whatever the exit code); the exit code."""
    from harness.render.console import console_summary

    append_job_summary(run_dir, records, meta)
    if getattr(args, "junit_xml", None):
        write_junit(args.junit_xml, run_dir, records, meta, args.fail_on)
    say(console_summary(records, meta))
    say(f"report: {run_dir / 'report.md'}\nresults: {run_dir / 'results.jsonl'}")
    if getattr(args, "junit_xml", None):
        say(f"junit: {args.junit_xml}")
    return 1 if failed(records, args, meta) else 0


def write_junit(path, run_dir, records, meta, fail_on: str = DEFAULT_FAIL_ON) -> None:
    """--junit-xml: the records as JUnit XML (harness.render.junit), failed where --fail-on
    ``fail_on`` fails (``gate``), with each task's seconds from the run folder's observations where
    it has them."""
    from harness.render import junit

    try:
        seconds = junit.task_seconds(read_observations(Path(run_dir) / "observations.jsonl"))
    except OSError:
        seconds = {}
    write_out_file(path, junit.render(records, meta, seconds, gated=gate(fail_on)))


def append_job_summary(run_dir, records, meta, environ=None) -> None:
    """Where GITHUB_STEP_SUMMARY names a file (GitHub Actions; ``environ``: os.environ), append the
    report's first screen (its headline and Summary) and where the whole report is. A failure is a
    warning: a job summary never changes a run's outcome."""
    target = (os.environ if environ is None else environ).get("GITHUB_STEP_SUMMARY")
    if not target:
        return
    from harness.render.report import summary_markdown

    text = (summary_markdown(records, meta) + f"\nFull report: `{run_dir / 'report.md'}` "
            f"(results: `{run_dir / 'results.jsonl'}`)\n\n")
    try:
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(text)
    except (OSError, ValueError) as exc:
        print(f"warning: cannot append the summary to GITHUB_STEP_SUMMARY ({target}): "
              f"{getattr(exc, 'strerror', None) or exc}", file=sys.stderr)


def failed(records, args, meta=None) -> bool:
    """Does --fail-on make this run's exit code 1? A verdict named fails wherever it occurs, but a
    known upstream framework bug (an expected entry naming it: only its framework can fix it) does
    not keep the gate red; `new` fails on a failing check no expected entry explains, `vanished` on
    an expected entry the run no longer sees (run.json's "expected")."""
    picked = fail_on_verdicts(args.fail_on)
    fails = gate(args.fail_on)
    if any(fails(r) for r in records if r.get("check") != "timing"):
        return True
    return "vanished" in picked and bool(((meta or {}).get("expected") or {}).get("vanished"))


def gate(fail_on: str):
    """record -> does --fail-on ``fail_on`` fail on it (``failed``'s rule for one record; the JUnit
    file's failures are exactly these)."""
    from harness.judge.known import is_new

    picked = fail_on_verdicts(fail_on)

    def fails(r) -> bool:
        return (r["verdict"] in picked and not r.get("upstream")) or ("new" in picked and is_new(r))
    return fails


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
    add_junit_option(rep)

    cmp_ = sub.add_parser("compare", help="what changed between two runs: gradients, verdicts, cases, timings",
                          description="Compare two runs (folders or results.jsonl files): verdicts that flipped, "
                                      "errors and gradients that moved beyond tolerance, new/removed cases, "
                                      "timings slower or faster beyond noise. Markdown on stdout.",
                          epilog="exit codes: 0 nothing that --fail-on names, 1 something it names, 2 bad usage, "
                                 "or runs of different inputs (seed, cases) without --verdicts-only")
    cmp_.add_argument("old", metavar="OLD")
    cmp_.add_argument("new", metavar="NEW")
    cmp_.add_argument("--out", metavar="FILE", help="also write the markdown to FILE")
    cmp_.add_argument("--fail-on", default="diverge", metavar="WHAT",
                      help="comma-separated: diverge (a verdict got worse, or an error or gradient moved "
                           "beyond tolerance; 'divergence' is read as the old spelling), change (any gradient "
                           "change), slowdown[=X] (a timing slower beyond noise by more than X: 10%% or 0.10, "
                           "default the --min-change), removed (a case or check gone), or none alone "
                           "(default: diverge)")
    cmp_.add_argument("--alpha", type=float, default=None,
                      help="significance level of the timing test (default 0.01)")
    cmp_.add_argument("--min-change", default=None, metavar="PCT",
                      help="smallest timing change reported: 5%% or 0.05 (default 5%%)")
    cmp_.add_argument("--no-arrays", action="store_true",
                      help="compare records only, not the gradient arrays (faster for large runs)")
    cmp_.add_argument("--verdicts-only", action="store_true",
                      help="compare verdicts, cases and checks only (no errors, gradients or timings): the "
                           "one comparison that means something between runs of different inputs (another "
                           "seed, changed cases), which compare otherwise refuses")

    mer = sub.add_parser("merge", help="join shard runs (run --shard K/N) into one run and report",
                         description="Join shard run folders into one run: observations and arrays copied, every "
                                     "check judged again over all shards (so framework-vs-framework checks across "
                                     "shards are made), results.jsonl and report.md written. A missing shard of the "
                                     "split is an error unless --allow-partial.")
    mer.add_argument("dirs", nargs="+", metavar="DIR", help="shard run folders")
    mer.add_argument("--out", metavar="DIR", help="the merged run folder (default: reports/<new run id>)")
    mer.add_argument("--fail-on", default=DEFAULT_FAIL_ON, metavar="VERDICTS", type=_fail_on_arg,
                     help=f"verdicts (and new, vanished) that make the exit code 1, as for run (default: "
                          f"{DEFAULT_FAIL_ON})")
    add_expected_option(mer)
    mer.add_argument("--allow-partial", action="store_true",
                     help="merge even when shards of the split are missing (the report's headline says the run "
                          "is partial); without it a missing shard is an error (exit 2)")
    add_junit_option(mer)


def dispatch(args, argv) -> int:
    if args.command == "report":
        return cmd_report(args)
    if args.command == "compare":
        return cmd_compare(args)
    return cmd_merge(args, argv)


def rerender(results, out=None, plots: bool = True, junit_xml=None) -> Path:
    """report.md (and plots) from a run's results, and the JUnit XML at ``junit_xml``; returns the
    report's path."""
    from harness.run.run_folder import write_run
    from harness.store import runs

    run = runs.load(results)
    if out is None:
        target = run.folder / "report.md"
    else:
        out = Path(out)
        target = check_out_file(out if out.suffix.lower() == ".md" else out / "report.md", given=out)
    meta = dict(run.meta)
    if run.derived:
        meta["derived"] = True
    records = run.records
    if run.has_observations():
        # the completeness invariant, re-checked: a check the observations imply but the results
        # lack (a results file edited, truncated or written by a buggy version) is an error row
        from harness.judge import coverage
        from harness.store.records import normalise

        gaps = [normalise(r, run.run_id) for r in coverage.gap_records(records, run.observations(), {})]
        if gaps:
            records = records + gaps
            run.notes.append(f"{len(gaps)} check(s) the observations imply have no record in the results: "
                             "reported as errors")
            meta["notes"] = list(meta.get("notes") or []) + [run.notes[-1]]
    created = [p for p in target.parents if not p.exists()]
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_run(target.parent, records, meta, results=False, plots=plots, report_file=target)
    except OSError as exc:
        remove_created(created)
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from None
    if junit_xml:
        write_junit(junit_xml, run.folder, records, meta)   # `report` has no --fail-on: the default gate
    for note in run.notes:
        print(f"note: {note}", file=sys.stderr)
    return target


def remove_created(created: list) -> None:
    """Undo the folders a failed write created (``created``: deepest first), each only if empty."""
    for p in created:
        try:
            p.rmdir()
        except OSError:
            break


def write_out_file(path, text: str) -> None:
    """``text`` into the file ``path`` (checked by check_out_file), whole or not at all; folders it
    had to create are removed again when the write fails (OutputError)."""
    path = Path(path)
    created = [p for p in path.parents if not p.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    except OSError as exc:
        remove_created(created)
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


def cmd_report(args) -> int:
    check_junit_xml(args)
    target = rerender(args.results, args.out, plots=not args.no_plots, junit_xml=args.junit_xml)
    say(f"report: {target}")
    if args.junit_xml:
        say(f"junit: {args.junit_xml}")
    return 0


def cmd_compare(args) -> int:
    """Two runs of different inputs (seed, cases' parameters or inputs) are refused unless
    --verdicts-only: their gradients, errors and timings differ by construction, and a gate that
    reported them as regressions (or compared less without saying so) could not be trusted."""
    from harness.render import diff_report, run_diff
    from harness.store import runs

    fail_on = run_diff.parse_fail_on(args.fail_on)
    alpha = run_diff.DEFAULT_ALPHA if args.alpha is None else args.alpha
    if not 0 < alpha < 1:
        raise UsageError("--alpha must be between 0 and 1")
    min_change = run_diff.DEFAULT_MIN_CHANGE
    if args.min_change is not None:
        try:
            min_change = run_diff.parse_fraction(args.min_change)
        except ValueError as exc:
            raise UsageError(f"--min-change {args.min_change!r} {exc}") from None
    if args.verdicts_only and "slowdown" in fail_on:
        raise UsageError("--fail-on slowdown needs timings, and --verdicts-only compares none")
    if args.out:
        check_out_file(args.out)
    old, new = runs.load(args.old), runs.load(args.new)
    differ = run_diff.input_differences(old, new)
    if differ and not args.verdicts_only:
        raise UsageError(f"{old.folder} and {new.folder} ran different inputs ({'; '.join(differ)}), so their "
                         f"gradients, errors and timings do not compare: compare runs of the same seed and "
                         f"cases, or pass --verdicts-only to compare verdicts only")
    d = run_diff.compare_runs(old, new, alpha=alpha, min_change=min_change, arrays=not args.no_arrays,
                              verdicts_only=args.verdicts_only)
    text = diff_report.render(d)
    why = run_diff.failures(d, fail_on)
    if why:
        text += "\n**Fails** (`--fail-on " + args.fail_on + "`): " + "; ".join(why) + ".\n"
    if args.out:   # written before stdout: an unwritable --out fails before any output
        write_out_file(args.out, text)
    say(text.rstrip("\n"))
    return 1 if why else 0


def cmd_merge(args, argv) -> int:
    from harness.run import merge
    from harness.run.session import new_run_id

    check_junit_xml(args)
    run_id = new_run_id()
    out = check_out_folder(args.out) if args.out else Path("reports") / run_id
    run_dir, records, meta = merge.merge(args.dirs, out, command=command_line(argv), run_id=run_id,
                                         allow_partial=args.allow_partial, expected=args.expected)
    for note in meta.get("notes", []):
        print(f"note: {note}", file=sys.stderr)
    return finish(run_dir, records, meta, args)


__all__ = ["choose", "COMMANDS", "add_junit_option", "add_run_options", "add_subcommands", "append_job_summary",
           "apply_run_options", "check_junit_xml", "check_out_file", "check_out_folder", "command_line", "dispatch",
           "fail_on_verdicts", "failed", "finish", "progress_for", "remove_created", "rerender", "say",
           "silence_stdout", "write_junit", "write_out_file"]
