"""Command line: `python -m harness run | list` (report, compare, merge: harness/cli/commands.py;
fuzz, repro: harness/cli/fuzzing.py).

Exit codes: 0 nothing diverged; 1 a gradient diverged, was NaN where its reference is not,
or a task failed with an error (what --fail-on names); 2 bad usage or input (unknown case,
framework, device, dtype or flag; a missing or malformed case file; no framework installed; an
output folder that cannot be written; a missing shard; runs that cannot be compared). Usage
errors are one line on stderr and leave nothing on disk: every command's errors end in main(),
an OSError that no command caught included, so none is a traceback read as exit 1. 130 / 143 /
129: the run was interrupted by SIGINT / SIGTERM / SIGHUP (partial report written; --resume
finishes it). A reader that closes stdout early (`| head`) ends output quietly.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from adapters import FRAMEWORKS
from harness.cli import commands, fuzzing
from harness.define.loader import BUILTIN, builtin_cases, select
from harness.define.ops_spec import OPS
from harness.errors import HarnessError, UsageError
from harness.judge import known
from harness.judge.tolerance import DTYPE_TOLERANCE
from harness.plan import devices as device_discovery
from harness.run import cache
from harness.run.interrupts import signals_interrupt
from harness.run.local import Interrupted

if TYPE_CHECKING:   # imported where used: `list` must not load the session machinery
    from harness.run.session import Settings

MODES = ("eager", "compiled")
PRECISIONS = ("default", "highest")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (exit 2), like every other usage error."""

    def error(self, message):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m harness",
        description="Do PyTorch, JAX and TensorFlow compute the same gradients? Each case runs on every "
                    "framework in its own worker; every gradient is held against finite differences, "
                    "forward mode, a float64 reference and the other frameworks.",
        epilog="exit codes: 0 all agree, 1 something diverged (or errored; what --fail-on names), 2 bad usage "
               "or input (one line on stderr, nothing written: e.g. an unwritable output folder, a missing "
               "shard), 130/143/129 interrupted (SIGINT/SIGTERM/SIGHUP; finish with run --resume RUN_DIR)")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run cases and write reports/<run-id>/report.md",
                         description="Run cases on every installed framework and write report.md, "
                                     "results.jsonl and observations under reports/<run-id>/ "
                                     "(reports/latest points at it).")
    _add_selection_arguments(run)
    _add_execution_arguments(run)
    commands.add_run_options(run)

    lst = sub.add_parser("list", help="cases, frameworks and devices this machine can run (imports no framework)")
    lst.add_argument("--cases", metavar="SPEC",
                     help="list only these cases (the --cases of run: names, tags, globs, FILE.py, "
                          "FILE.py::NAME), e.g. a case file's own")
    commands.add_subcommands(sub)
    fuzzing.add_commands(sub)
    return parser


def _add_selection_arguments(run) -> None:
    """What `run` checks: cases, frameworks, devices, dtypes, modes, precisions, seed, FD, timing."""
    run.add_argument("--cases", metavar="SPEC",
                     help="comma-separated built-in names, tags, globs, case files (.py) or one case of a "
                          "file (FILE.py::NAME, pytest's spelling); default: the cases tagged 'default'")
    run.add_argument("--all", action="store_true", help="every built-in case")
    run.add_argument("--quick", action="store_true", help="a small, fast subset (cases tagged 'quick')")
    run.add_argument("--frameworks", default=None,
                     help=f"comma-separated, from {', '.join(FRAMEWORKS)} (default: every installed one)")
    run.add_argument("--devices", default="cpu", help="cpu, cuda, cuda:N or all (default: cpu)")
    run.add_argument("--dtypes", default="float64,float32",
                     help=f"comma-separated, from {', '.join(DTYPE_TOLERANCE)} (default: float64,float32)")
    run.add_argument("--modes", default="eager", help="eager, compiled, or both (eager,compiled) (default: eager)")
    run.add_argument("--precision", default="default",
                     help="default (each framework's own float32 policy, e.g. TF32 on GPUs), highest "
                          "(full float32), or both (default,highest) to confirm precision-policy causes (default: default)")
    run.add_argument("--seed", type=int, default=0, help="seed for parameters, inputs and directions")
    run.add_argument("--fd", dest="fd_mode", default="auto", choices=("auto", "full", "directional", "complex"),
                     help="finite differences over every element (full), along random directions, "
                          "full up to 20000 elements (auto), or full plus the complex-step derivative "
                          "where the function is complex-analytic (complex)")
    run.add_argument("--timing", default="quick", choices=("off", "quick", "full"),
                     help="time forward and forward+backward per task: quick (adaptive: until the spread is within "
                          "5%%, 10-50 ms per phase), full (~1s per phase, for reporting) or off (default: quick)")


def _add_execution_arguments(run) -> None:
    """How `run` runs: where it writes, workers, threads, limits, resuming, progress."""
    run.add_argument("--out", metavar="DIR", help="write the run here instead of reports/<run-id>")
    run.add_argument("--jobs", default="auto", metavar="N",
                     help="worker processes at once; each framework's tasks are split into chunks of whole "
                          "cases over them, and timings are still taken one at a time with the other workers "
                          f"stopped (default auto: the CPUs this process may use, at most {MAX_AUTO_JOBS})")
    run.add_argument("--cache-dir", metavar="DIR", default=None,
                     help="keep the frameworks' compilation caches here between runs (JAX's persistent cache, "
                          "torch Inductor's); delete it to start cold (default: $GRADHARNESS_CACHE_DIR, else "
                          "~/.cache/gradharness)")
    run.add_argument("--no-cache", action="store_true",
                     help="no compilation cache: every compile happens (first-call times then measure compiles)")
    run.add_argument("--threads", type=int, default=None,
                     help="threads per worker, the same for every framework so timings compare "
                          "(default: the CPUs this process may use)")
    run.add_argument("--timeout", type=float, default=600.0,
                     help="seconds one task may take before its worker is killed (default 600)")
    run.add_argument("--worker-timeout", type=float, default=None, metavar="SECONDS",
                     help="seconds all the tasks of one worker (a framework's tasks on a device, or one "
                          "chunk of them with --jobs > 1) may take together; past it the running task is killed "
                          "and the rest recorded as not run (default: no limit)")
    run.add_argument("--memory-limit", default=None, metavar="SIZE",
                     help="cap each CPU worker's address space (e.g. 8G, 512M; a bare number is GiB): an "
                          "allocation beyond it becomes an 'out of memory' error record (default: no limit)")
    run.add_argument("--resume", metavar="RUN_DIR",
                     help="finish an interrupted run: the same tasks (settings from RUN_DIR/run.json), running "
                          "only those not yet done, then its results and report")
    run.add_argument("--quiet", action="store_true", help="no progress lines")


#: --jobs auto: at most this many lanes (each a worker process, ~1 GB for TensorFlow)
MAX_AUTO_JOBS = 8


def _jobs(text) -> int:
    """--jobs: a whole number >= 1, or auto (the CPUs this process may use, at most MAX_AUTO_JOBS)."""
    if str(text).strip().lower() == "auto":
        return max(1, min(_cpus(), MAX_AUTO_JOBS))
    try:
        jobs = int(text)
    except (TypeError, ValueError):
        raise UsageError(f"--jobs {text!r}: give a whole number or auto") from None
    if jobs < 1:
        raise UsageError("--jobs must be at least 1")
    return jobs


def _cpus() -> int:
    import os
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def settings_from(args, argv) -> "Settings":
    from harness.run.session import Settings

    if args.frameworks is None:
        frameworks = [fw for fw, info in FRAMEWORKS.items() if info.installed()]
        if not frameworks:
            raise UsageError("no framework is installed: " + "; ".join(i.install for i in FRAMEWORKS.values()))
        missing = {}
    else:
        frameworks = commands.choose(args.frameworks, FRAMEWORKS, "framework")
        missing = {fw: FRAMEWORKS[fw].install for fw in frameworks if not FRAMEWORKS[fw].installed()}
    try:
        devices = device_discovery.resolve(args.devices)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    jobs = _jobs(args.jobs)
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be at least 1")
    if args.worker_timeout is not None and args.worker_timeout <= 0:
        raise UsageError("--worker-timeout must be positive")
    memory_limit = _size(args.memory_limit) if args.memory_limit is not None else 0
    cases = select(args.cases, everything=args.all, quick=args.quick)
    if not cases:
        raise UsageError("the selection matches no case")
    known.entries_for(cases, args.expected)   # a malformed --expected table is refused before anything runs
    return Settings(
        cases=cases, frameworks=frameworks, devices=devices,
        dtypes=commands.choose(args.dtypes, DTYPE_TOLERANCE, "dtype"), modes=commands.choose(args.modes, MODES, "mode"),
        precisions=commands.choose(args.precision, PRECISIONS, "precision"), seed=args.seed, out=args.out,
        jobs=jobs, threads=args.threads if args.threads is not None else _cpus(), timeout=args.timeout,
        fd_mode=args.fd_mode, timing=None if args.timing == "off" else args.timing, quiet=args.quiet,
        command=commands.command_line(argv), missing=missing,
        worker_timeout=args.worker_timeout, memory_limit=memory_limit, expected=[str(p) for p in args.expected],
        cache_dir=None if args.no_cache else str(Path(args.cache_dir or cache.default_dir()).expanduser().absolute()))


def _size(text: str) -> int:
    """'8G', '512M', '1.5T', '2048K' (binary units) or a bare number of GiB -> bytes."""
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    scale = units.get(t[-1:], None)
    try:
        value = float(t[:-1] if scale else t) * (scale or 2**30)
    except ValueError:
        raise UsageError(f"--memory-limit {text!r}: give a size such as 8G or 512M") from None
    if value < 2**20:
        raise UsageError(f"--memory-limit {text!r} is too small to start a worker")
    return int(value)


#: options that may accompany --resume (they do not change what the run computes)
RESUME_OPTIONS = ("--resume", "--quiet", "--jobs", "--fail-on", "--junit-xml")


def resume_settings(args, argv) -> "Settings":
    from pathlib import Path

    from harness.run.session import load_settings

    others = sorted({a.split("=", 1)[0] for a in argv[1:] if a.startswith("--")} - set(RESUME_OPTIONS))
    if others:
        raise UsageError(f"--resume takes the run's own settings; drop {', '.join(others)}")
    run_dir = Path(args.resume)
    settings = load_settings(run_dir)
    settings.quiet = args.quiet
    if "--jobs" in argv[1:] or any(a.startswith("--jobs=") for a in argv[1:]):
        settings.jobs = _jobs(args.jobs)
    settings.command = commands.command_line(argv)
    return settings


def cmd_run(args, argv) -> int:
    from harness.run import session

    commands.check_junit_xml(args)
    if args.resume:
        settings = resume_settings(args, argv)
        resume = settings.out
    else:
        settings = settings_from(args, argv)
        commands.apply_run_options(settings, args)
        if settings.out is not None:
            settings.out = commands.check_out_folder(settings.out)
        for fw, hint in settings.missing.items():
            print(f"note: {fw} is not installed, its rows are skipped. Install: {hint}", file=sys.stderr)
        resume = None
    with signals_interrupt():
        run_dir, records, meta = session.execute(settings, resume=resume, progress=commands.progress_for(settings))
    return commands.finish(run_dir, records, meta, args)


def cmd_list(args) -> int:
    """The built-in cases, frameworks, devices and ops; with --cases, only the cases selected (a
    case file's own with --cases FILE.py)."""
    from tabulate import tabulate

    say = commands.say
    start = time.perf_counter()
    cases = select(args.cases) if args.cases else builtin_cases()
    if not cases:
        raise UsageError("the selection matches no case")
    rows = [[c.name, ", ".join(c.tags), c.summary()] for c in cases]
    headers = ["case", "tags", "description"]
    if args.cases and any(c.source != BUILTIN for c in cases):
        rows = [row + [c.source] for row, c in zip(rows, cases)]
        headers.append("source")
    say(tabulate(rows, headers=headers, tablefmt="simple"))
    tags = {}
    for c in cases:
        for t in c.tags:
            tags[t] = tags.get(t, 0) + 1
    say("\ntags: " + (", ".join(f"{t} ({n})" for t, n in sorted(tags.items())) or "none"))
    if args.cases:
        return 0
    rows = [[fw, "yes" if info.installed() else "no", info.version() or "", "" if info.installed() else info.install]
            for fw, info in FRAMEWORKS.items()]
    say("\n" + tabulate(rows, headers=["framework", "installed", "version", "install with"], tablefmt="simple"))
    names = dict(device_discovery.cuda_devices())
    say("\n" + tabulate([[d, names.get(d, "host CPU")] for d in device_discovery.available()],
                        headers=["device", "name"], tablefmt="simple"))
    say(f"\nneutral ops: {len(OPS)} ({', '.join(OPS)})")
    say(f"({time.perf_counter() - start:.2f}s, no framework imported)")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            return cmd_list(args)
        if args.command in commands.COMMANDS:
            return commands.dispatch(args, argv)
        if args.command in fuzzing.COMMANDS:
            return fuzzing.dispatch(args, argv)
        return cmd_run(args, argv)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Interrupted as exc:
        where = "" if exc.run_dir is None else (
            f": {exc.finished} of {exc.total} task(s) finished, kept in {exc.run_dir}; finish with "
            f"`python -m harness run --resume {exc.run_dir}`")
        print(f"interrupted ({exc.name}){where}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted (SIGINT)", file=sys.stderr)
        return 130
    except BrokenPipeError:   # stdout closed by its reader before the command knew its result
        commands.silence_stdout()
        return 141
    except OSError as exc:    # an input or output no command checked: still one line, exit 2
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2


__all__ = ["MODES", "PRECISIONS", "RESUME_OPTIONS", "UsageError", "build_parser", "main", "resume_settings",
           "settings_from"]
