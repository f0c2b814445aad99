"""One `harness run`: plan, run the workers, stream observations to disk, judge, report.

Everything a user can get wrong is checked before the run folder is created, so a bad
command leaves nothing behind. Observations are appended to observations.jsonl as they
arrive (an interrupted run keeps what finished); results.jsonl and report.md are written
once at the end, each atomically.
"""
from __future__ import annotations

import json
import os
import platform
import secrets
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from adapters import FRAMEWORKS

from . import compare, plots, report
from .plan import make_plan
from .records import atomic_write_text, normalise, write_jsonl
from .runner import Runner


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
    jobs: int = 1
    threads: int = 0
    timeout: float = 600.0
    fd_mode: str = "auto"
    timing: str | None = "quick"
    quiet: bool = False
    command: str = ""
    missing: dict = field(default_factory=dict)   # framework -> install hint (requested, absent)


def new_run_id() -> str:
    """Sortable by time, distinct for runs started in the same second."""
    return datetime.now().strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def run_dir_for(settings: Settings, run_id: str) -> Path:
    if settings.out is not None:
        return Path(settings.out)
    return Path("reports") / run_id


def environment() -> dict:
    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "numpy": np.__version__}


def execute(settings: Settings, log=print) -> tuple:
    """Run everything; returns (run_dir, records)."""
    run_id = new_run_id()
    run_dir = run_dir_for(settings, run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    cases = {c.name: c for c in settings.cases}
    installed = [fw for fw in settings.frameworks if fw not in settings.missing]
    plan = make_plan(settings.cases, installed, settings.devices, settings.dtypes, settings.modes,
                     settings.precisions, settings.seed, settings.fd_mode, settings.timing)
    meta = {"run_id": run_id, "command": settings.command,
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "seed": settings.seed,
            "cases": sorted(cases), "frameworks": {fw: FRAMEWORKS[fw].version() for fw in settings.frameworks},
            "devices": settings.devices, "dtypes": settings.dtypes, "modes": settings.modes,
            "precisions": settings.precisions, "timing": settings.timing, "threads": settings.threads,
            "environment": environment()}
    atomic_write_text(run_dir / "run.json", json.dumps(meta, indent=2))

    rows = []
    obs_path = run_dir / "observations.jsonl"
    total = len(plan.tasks)
    with open(obs_path, "a") as obs_file:
        def emit(task, message):
            row = {"case": task.case, "source": task.source, "framework": task.framework,
                   "device": task.device, "dtype": task.dtype, "mode": task.mode,
                   "precision": task.precision, "fd": None, **message}
            row["fd"] = message.get("fd")
            rows.append(row)
            obs_file.write(json.dumps(row, default=str) + "\n")
            obs_file.flush()
            if not settings.quiet:
                status = row.get("status")
                extra = "" if status == "ok" else f" — {str(row.get('reason', ''))[:120]}"
                log(f"[{len(rows)}/{total}] {task.case} {task.framework} {task.device} {task.dtype} "
                    f"{task.mode}{'' if task.precision == 'default' else ' ' + task.precision}: "
                    f"{status} ({row.get('seconds', 0):.1f}s){extra}")

        runner = Runner(run_dir, emit, threads=settings.threads, jobs=settings.jobs,
                        task_timeout=settings.timeout)
        if not settings.quiet:
            log(f"running {total} tasks in {len(plan.groups())} worker(s) → {run_dir}")
        runner.run(plan.groups())

    records = compare.build_records(rows, cases, run_dir / "arrays")
    for case_name, fw, reason in plan.skipped:
        records.append(_skip(case_name, fw, reason))
    for fw, hint in settings.missing.items():
        for case_name in sorted(cases):
            records.append(_skip(case_name, fw, f"{fw} is not installed: {hint}"))
    records = [normalise(r, run_id) for r in records]
    meta["seconds"] = time.perf_counter() - start
    meta["workers"] = [{"framework": k[0], "device": k[1], "precision": k[2], **v}
                       for k, v in runner.workers_info.items()]
    atomic_write_text(run_dir / "run.json", json.dumps(meta, indent=2, default=str))
    write_jsonl(run_dir / "results.jsonl", records)
    meta["plots"] = plots.render_all(records, run_dir)
    atomic_write_text(run_dir / "report.md", report.render(records, meta))
    if settings.out is None:
        _point_latest(run_dir)
    return run_dir, records, meta


def _skip(case_name, fw, reason) -> dict:
    return {"case": case_name, "framework": fw, "framework_version": None, "device": "-", "dtype": "-",
            "mode": "-", "precision": "-", "check": "run", "param": "*", "verdict": "skipped",
            "message": reason}


def _point_latest(run_dir: Path) -> None:
    """reports/latest -> this run, replaced atomically (a symlink where the OS allows)."""
    link = run_dir.parent / "latest"
    tmp = run_dir.parent / f".latest.{os.getpid()}"
    try:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        tmp.symlink_to(run_dir.name)
        os.replace(tmp, link)
    except OSError:
        pass
