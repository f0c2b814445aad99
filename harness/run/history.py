"""What each task took last time, kept in the cache folder, so chunks are balanced by measurement.

The planner's cost model (harness.plan.tasks.task_cost) is a guess from a task's settings: it
cannot know that a TensorFlow task of one case takes ten times a torch task of another on this
machine. Chunks balanced on a wrong guess leave one lane running long after the others. So every
run records the seconds each task took (``record``) in ``task-seconds.json`` under the cache folder
(harness.run.cache: the same folder, cleared the same way), and the next run's chunks are balanced
on those measurements where it has them (``refine``), the model filling in the rest, scaled to the
same units. A task is known by its id and what it was asked to check (fd, timing preset), never by
the run: a cost, not a result, so nothing a run reports depends on it.
"""
from __future__ import annotations

import json
from pathlib import Path

from harness.store.records import atomic_write_text

FILE = "task-seconds.json"


def _key(task) -> str:
    return f"{task.id}|fd={int(bool(task.fd))}|{task.fd_mode}|timing={task.timing}"


def _load(cache_dir) -> dict:
    try:
        data = json.loads((Path(cache_dir) / FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def refine(costs: dict, tasks, cache_dir) -> dict:
    """``costs`` (task id -> model cost) with every task measured before replaced by its seconds,
    scaled so measured and modelled tasks are in one unit (the ratio of their totals over the tasks
    that have both). Unchanged without a cache folder or any measurement."""
    if not cache_dir:
        return costs
    seen = _load(cache_dir)
    measured = {}
    for t in tasks:
        seconds = seen.get(_key(t))
        if t.id in costs and isinstance(seconds, (int, float)) and seconds > 0:
            measured[t.id] = float(seconds)
    if not measured:
        return costs
    scale = sum(costs[i] for i in measured) / sum(measured.values())
    return {i: measured[i] * scale if i in measured else c for i, c in costs.items()}


def record(tasks, rows, cache_dir) -> None:
    """Keep the seconds of every task that finished (``rows``: observations) for the next run;
    best effort (a cache folder that cannot be written costs only the balance)."""
    if not cache_dir:
        return
    by_id = {t.id: t for t in tasks}
    seen = _load(cache_dir)
    for row in rows:
        task = by_id.get(row.get("id"))
        seconds = row.get("seconds")
        if task is not None and row.get("status") == "ok" and isinstance(seconds, (int, float)) and seconds > 0:
            seen[_key(task)] = round(float(seconds), 4)
    path = Path(cache_dir) / FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(seen, sort_keys=True))
    except OSError:
        pass


__all__ = ["FILE", "record", "refine"]
