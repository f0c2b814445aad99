"""One `harness run`: plan, run the workers, stream observations to disk, judge, report.

Everything a user can get wrong is checked before the run folder is created, so a bad
command leaves nothing behind; an output folder that cannot be created or written is one line
(exit 2) and nothing is left there either. Observations are appended to observations.jsonl
and flushed as each task finishes (a run killed at any moment keeps everything finished; its
arrays are written atomically by the worker); run.json, results.jsonl and report.md are each
written atomically (temporary file, fsync, rename).

An interrupted run (SIGINT, SIGTERM, SIGHUP) kills its workers, writes a partial report marked
interrupted (unfinished tasks listed as not run) and exits 128 + the signal. run.json stores
the run's settings, so ``harness run --resume RUN_DIR`` re-plans the same tasks, runs only
those without an observation and writes the results and report an uninterrupted run would have.
"""
from __future__ import annotations

import json
import os
import platform
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from adapters import FRAMEWORKS
from adapters.base import cpu_name
from harness.errors import OutputError, RunError
from harness.judge import known, verdicts
from harness.plan.tasks import Plan, make_plan, task_costs
from harness.run import history
from harness.run.executors import runner_class, runner_options
from harness.run.local import Interrupted
from harness.run.run_folder import write_run
from harness.store.records import atomic_write_text, normalise, read_observations, write_jsonl


@dataclass
class Settings:
    cases: list
    frameworks: list
    devices: list
    dtypes: list
    modes: list
    precisions: list
    seed: int = 0
    out: Path | None = None
    jobs: int = 1                                 # lanes: worker processes at once (harness.run.local)
    threads: int = 0
    timeout: float = 600.0
    fd_mode: str = "auto"
    timing: str | None = "quick"
    quiet: bool = False
    command: str = ""
    missing: dict = field(default_factory=dict)   # framework -> install hint (requested, absent)
    worker_timeout: float | None = None           # seconds for all the tasks of one worker group
    memory_limit: int = 0                         # bytes of address space per CPU worker (0: none)
    shard: dict | None = None                     # --shard K/N: {"index", "count", "of_cases", ...}
    executor: str = "local"                       # --executor: local processes or ray (harness.run.executors)
    expected: list = field(default_factory=list)  # --expected FILE...: a project's known divergences
    plots: bool = True                            # the run folder's plots (harness fuzz's batches: none)
    cache_dir: str | None = None                  # the compilation caches' folder (harness.run.cache); None: none
    ray_chunks: int | None = None                 # --executor ray: Ray tasks (None: the cluster's CPUs and GPUs)


#: Settings fields that do not change what a run computes: --resume may not carry them over
_NOT_STORED = ("cases", "out", "quiet")


def settings_record(settings: Settings) -> dict:
    """The settings as JSON (cases by (name, source)), stored in run.json for --resume."""
    out = {"cases": [[c.name, c.source] for c in settings.cases]}
    for f in fields(Settings):
        if f.name not in _NOT_STORED:
            value = getattr(settings, f.name)
            out[f.name] = str(value) if isinstance(value, Path) else value
    return out


def load_settings(run_dir) -> Settings:
    """The settings of the run in ``run_dir`` (from its run.json), cases loaded again."""
    from harness.case import CaseError
    from harness.define.loader import cases_in

    run_dir = Path(run_dir)
    try:
        meta = json.loads((run_dir / "run.json").read_text())
        stored = meta["settings"]
    except FileNotFoundError:
        raise RunError(f"--resume {run_dir}: no run.json there (is it a run folder?)") from None
    except (json.JSONDecodeError, KeyError, TypeError, OSError) as exc:
        raise RunError(f"--resume {run_dir}: run.json has no readable settings ({type(exc).__name__}: {exc})") from None
    pools: dict = {}
    cases = []
    for name, source in stored["cases"]:
        if source not in pools:
            try:
                pools[source] = {c.name: c for c in cases_in(source)}
            except CaseError as exc:
                raise RunError(f"--resume {run_dir}: {exc}") from None
        if name not in pools[source]:
            raise RunError(f"--resume {run_dir}: case {name!r} is no longer in {source}")
        cases.append(pools[source][name])
    known = {f.name for f in fields(Settings)} - set(_NOT_STORED)
    values = {k: v for k, v in stored.items() if k in known}
    return Settings(cases=cases, out=run_dir, **values)


def new_run_id() -> str:
    """Sortable by time, distinct for runs started in the same second."""
    return datetime.now().strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def run_dir_for(settings: Settings, run_id: str) -> Path:
    if settings.out is not None:
        return Path(settings.out)
    return Path("reports") / run_id


def environment() -> dict:
    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "processor": cpu_name(""), "cpus": os.cpu_count(),
            "numpy": np.__version__}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _create_run_dir(run_dir: Path, meta: dict) -> None:
    """Create the run folder and write run.json into it; on failure remove what was created
    and raise OutputError (one line)."""
    created = [p for p in [run_dir, *run_dir.parents] if not p.exists()]
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "run.json", json.dumps(meta, indent=2, default=str))
    except OSError as exc:
        for p in created:  # deepest first; only what this run made, and only if empty
            try:
                p.rmdir()
            except OSError:
                break
        raise OutputError(f"cannot write the run folder {run_dir}: {exc.strerror or exc}") from None


def execute(settings: Settings, resume: Path | None = None, progress=None) -> tuple:
    """Run everything; returns (run_dir, records, meta). With ``resume`` (a run folder whose
    settings are ``settings``), run only the tasks without an observation there."""
    start = time.perf_counter()
    cases = {c.name: c for c in settings.cases}
    installed = [fw for fw in settings.frameworks if fw not in settings.missing]
    plan = make_plan(settings.cases, installed, settings.devices, settings.dtypes, settings.modes,
                     settings.precisions, settings.seed, settings.fd_mode, settings.timing)
    order = {task.id: i for i, task in enumerate(plan.tasks)}
    if resume is None:
        run_dir, meta, rows = _new_run(settings, cases)
    else:
        run_dir, meta, rows = _resumed_run(Path(resume), settings, order)
    done = {r["id"] for r in rows}
    todo = Plan(tasks=[t for t in plan.tasks if t.id not in done])
    runner, interrupted = _run_tasks(settings, run_dir, todo, rows, cases, progress, already=len(done))
    rows.sort(key=lambda r: order[r["id"]])
    records = _records(rows, cases, plan, settings, run_dir, interrupted, meta["run_id"])
    meta["expected"] = {"files": [str(p) for p in settings.expected],
                        **known.apply(records, known.entries_for(cases.values(), settings.expected))}
    # wall time of the whole run: a resumed run adds this session's to the earlier ones'
    # (a new run's meta has no "seconds" yet)
    meta["seconds"] = (meta.get("seconds") or 0.0) + time.perf_counter() - start
    meta["workers"] = _workers(meta.get("workers", []), runner.workers_info)
    # how the groups were split and where each chunk ran (--jobs lanes, Ray tasks)
    meta["chunks"] = sorted(runner.chunk_log, key=lambda c: (c["framework"], c["device"], c["precision"], c["chunk"]))
    if interrupted is not None:
        # report.render puts the banner (and `harness report` keeps it) from this
        meta["interrupted"] = {"signal": interrupted.name, "finished": len(rows), "tasks": len(plan.tasks),
                               "run_dir": str(run_dir)}
    try:
        write_run(run_dir, records, meta, plots=settings.plots)
    except OSError as exc:
        raise OutputError(f"writing the results in {run_dir} failed: {exc.strerror or exc}; the observations "
                          f"are kept: make room, then `python -m harness run --resume {run_dir}`") from None
    if interrupted is not None:
        interrupted.run_dir, interrupted.finished, interrupted.total = run_dir, len(rows), len(plan.tasks)
        raise interrupted
    if meta.get("latest"):
        _point_latest(run_dir.resolve())   # resolved: `--resume reports/latest` must not link latest to itself
    return run_dir, records, meta


def _new_run(settings: Settings, cases: dict) -> tuple:
    """A new run's folder and run.json: (run_dir, meta, rows=[])."""
    run_id = new_run_id()
    run_dir = run_dir_for(settings, run_id)
    meta = {"run_id": run_id, "command": settings.command, "started": _now(), "seed": settings.seed,
            "cases": sorted(cases), "frameworks": {fw: FRAMEWORKS[fw].version() for fw in settings.frameworks},
            "devices": settings.devices, "dtypes": settings.dtypes, "modes": settings.modes,
            "precisions": settings.precisions, "timing": settings.timing, "threads": settings.threads,
            "environment": environment(), "settings": settings_record(settings),
            "latest": settings.out is None, "shard": settings.shard, "executor": settings.executor}
    _create_run_dir(run_dir, meta)
    return run_dir, meta, []


def _resumed_run(run_dir: Path, settings: Settings, order: dict) -> tuple:
    """A resumed run's folder, its run.json (the resumption noted) and the observations it keeps:
    one per planned task; a torn last line (a killed run) is dropped."""
    meta = json.loads((run_dir / "run.json").read_text())
    meta.pop("interrupted", None)
    meta.setdefault("resumed", []).append({"at": _now(), "command": settings.command})
    rows = [r for r in read_observations(run_dir / "observations.jsonl") if r.get("id") in order]
    try:
        write_jsonl(run_dir / "observations.jsonl", rows)
        atomic_write_text(run_dir / "run.json", json.dumps(meta, indent=2, default=str))
    except OSError as exc:
        raise OutputError(f"cannot write the run folder {run_dir}: {exc.strerror or exc}") from None
    return run_dir, meta, rows


def _run_tasks(settings: Settings, run_dir: Path, todo: Plan, rows: list, cases: dict, progress,
               already: int) -> tuple:
    """Run ``todo`` on the executor, each observation appended to observations.jsonl as it comes
    (and to ``rows``). Returns (runner, the Interrupted that stopped it or None)."""
    obs_path = run_dir / "observations.jsonl"

    def emit(task, message):
        row = {"case": task.case, "source": task.source, "framework": task.framework,
               "device": task.device, "dtype": task.dtype, "mode": task.mode,
               "precision": task.precision, "fd": None, "task": task.settings, **message}
        try:
            obs_file.write(json.dumps(row, default=str) + "\n")
            obs_file.flush()
        except OSError as exc:
            raise OutputError(f"writing {obs_path} failed: {exc.strerror or exc}; the {len(rows)} observation(s) "
                              f"before it are kept: make room, then finish with "
                              f"`python -m harness run --resume {run_dir}`") from None
        rows.append(row)
        if progress is not None:  # harness.run.progress: a bar with the current task and an ETA
            progress.update(task, row)

    runner_type = runner_class(settings.executor)   # harness.run.local.Runner, or the Ray executor's
    runner = runner_type(run_dir, emit, threads=settings.threads, jobs=settings.jobs, task_timeout=settings.timeout,
                         worker_timeout=settings.worker_timeout, memory_limit=settings.memory_limit,
                         cache_dir=settings.cache_dir, **runner_options(settings))
    try:
        obs_file = open(obs_path, "a")
    except OSError as exc:
        raise OutputError(f"cannot write {obs_path}: {exc.strerror or exc}") from None
    interrupted = None
    try:
        # the model's estimates, measured seconds from earlier runs where there are (harness.run.history)
        costs = history.refine(task_costs(todo.tasks, cases, settings.seed), todo.tasks, settings.cache_dir)
        if progress is not None:
            progress.start(todo.tasks, cases, run_dir, already=already, costs=costs)
        runner.run(runner.chunks(todo.groups(), costs))
        history.record(todo.tasks, rows, settings.cache_dir)
    except KeyboardInterrupt:
        interrupted = Interrupted(signal.SIGINT)
    except Interrupted as exc:
        interrupted = exc
    finally:
        try:
            obs_file.close()
        except OSError:
            pass
        if progress is not None:
            progress.close()
    return runner, interrupted


def _records(rows, cases, plan, settings, run_dir, interrupted, run_id) -> list:
    """The run's records: the verdicts over every observation, then a record for each case a
    framework cannot run, each framework not installed and each task an interruption left."""
    records = verdicts.build_records(rows, cases, run_dir / "arrays")
    for case_name, fw, reason in plan.skipped:
        records.append(_skip(case_name, fw, reason))
    for fw, hint in settings.missing.items():
        for case_name in sorted(cases):
            records.append(_skip(case_name, fw, f"{fw} is not installed: {hint}"))
    if interrupted is not None:
        finished = {r["id"] for r in rows}
        records += [_not_run(task, interrupted.name) for task in plan.tasks if task.id not in finished]
    return [normalise(r, run_id) for r in records]


def _workers(before: list, info: dict) -> list:
    """run.json's workers: this session's, plus those of an earlier session not rerun now."""
    now = [{"framework": k[0], "device": k[1], "precision": k[2], **v} for k, v in info.items()]
    seen = {(w["framework"], w["device"], w["precision"]) for w in now}
    return [w for w in before if (w.get("framework"), w.get("device"), w.get("precision")) not in seen] + now


def _not_run(task, signame) -> dict:
    return {"case": task.case, "framework": task.framework, "framework_version": None, "device": task.device,
            "dtype": task.dtype, "mode": task.mode, "precision": task.precision, "check": "run", "param": "*",
            "verdict": "skipped", "message": f"not run: the run was interrupted ({signame}); finish with --resume"}


def _skip(case_name, fw, reason) -> dict:
    return {"case": case_name, "framework": fw, "framework_version": None, "device": "-", "dtype": "-",
            "mode": "-", "precision": "-", "check": "run", "param": "*", "verdict": "skipped",
            "message": reason}


def _point_latest(run_dir: Path) -> None:
    """reports/latest -> this run, replaced atomically (a symlink where the OS allows): two runs
    finishing together each rename their own temporary link, so latest is always one whole link."""
    link = run_dir.parent / "latest"
    tmp = run_dir.parent / f".latest.{os.getpid()}.{secrets.token_hex(3)}"
    try:
        tmp.symlink_to(run_dir.name)
        os.replace(tmp, link)
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass


__all__ = ["environment", "execute", "load_settings", "new_run_id", "run_dir_for", "Settings",
           "settings_record"]
