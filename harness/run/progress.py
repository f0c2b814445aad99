"""Progress of a run on stderr: a bar with the current case/framework and an ETA.

On a terminal it is a tqdm bar (an in-house one-line bar when tqdm is missing); elsewhere (CI
logs, a file) one plain line per finished task, with the same ETA, so logs stay readable.
`--quiet` turns it all off. The ETA weighs each task by its estimated cost (a reference task
with finite differences costs more than a float32 task), so it does not swing as cheap and
expensive tasks alternate.

A task that does not finish `ok` is always printed on its own line with its reason.
"""
from __future__ import annotations

import sys
import time
from collections import OrderedDict, deque

from harness.plan.tasks import task_costs


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _label(task) -> str:
    extra = "" if task.precision == "default" else f" {task.precision}"
    return f"{task.case} · {task.framework} {task.device} {task.dtype} {task.mode}{extra}"


class Progress:
    """Fed by the run: ``start(tasks, cases)``, ``update(task, row)`` per finished task, ``close()``."""

    def __init__(self, stream=None, bar: bool | None = None, min_interval: float = 0.2):
        self.stream = stream if stream is not None else sys.stderr
        self.bar = self.stream.isatty() if bar is None else bar
        self.min_interval = min_interval
        self._tqdm = None
        self._last_draw = 0.0

    # ---- the run's side ------------------------------------------------------------------------
    def start(self, tasks, cases=None, run_dir=None, already: int = 0, costs: dict | None = None) -> None:
        """``costs``: task id -> estimated cost (harness.plan.tasks.task_costs), computed here if not given."""
        self.weight = costs if costs is not None else task_costs(tasks, cases or {})
        self.total_weight = sum(self.weight.values()) or 1.0
        self.total = len(tasks)
        self.already = already
        self.done = 0
        self.done_weight = 0.0
        self.started = time.perf_counter()
        # what each worker group runs next, in plan order: "current" is the next task of the
        # group that just answered, or the first of the next group to start
        self.pending: OrderedDict = OrderedDict()
        for t in tasks:
            self.pending.setdefault(t.group, deque()).append(t)
        self.current = _label(tasks[0]) if tasks else ""
        where = f" → {run_dir}" if run_dir else ""
        head = f"running {self.total} task(s){f', {already} already done' if already else ''} in " \
               f"{len(self.pending)} worker group(s){where}"
        self.stream.write(head + "\n")
        if self.bar:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._tqdm = tqdm(total=round(self.total_weight, 3), file=self.stream, leave=True, unit="",
                                  dynamic_ncols=True, mininterval=self.min_interval,
                                  bar_format="{percentage:3.0f}%|{bar:28}| {desc} [{elapsed}<{remaining}]")
                self._tqdm.set_description_str(self._postfix(), refresh=True)
            else:
                self._draw(force=True)
        self.stream.flush()

    def update(self, task, row: dict) -> None:
        self.done += 1
        w = self.weight.get(task.id, 1.0)
        self.done_weight += w
        queue = self.pending.get(task.group)
        if queue is not None:
            try:
                queue.remove(task)
            except ValueError:
                pass
            if not queue:
                del self.pending[task.group]
                queue = None
        nxt = queue[0] if queue else next((q[0] for q in self.pending.values() if q), None)
        self.current = _label(nxt) if nxt is not None else "finishing"
        status = row.get("status", "?")
        line = None
        if status != "ok" or not self.bar:
            reason = "" if status == "ok" else f" — {str(row.get('reason', '')).splitlines()[0][:160] if row.get('reason') else ''}"
            line = (f"[{self.done}/{self.total}] {_label(task)}: {status} ({float(row.get('seconds') or 0):.1f}s)"
                    f"{reason}" + ("" if self.bar else f" · ETA {self._eta()}"))
        if self._tqdm is not None:
            if line:
                self._tqdm.write(line, file=self.stream)
            self._tqdm.set_description_str(self._postfix(), refresh=False)
            self._tqdm.update(w)
        elif self.bar:
            if line:
                self._clear()
                self.stream.write(line + "\n")
            self._draw(force=line is not None or self.done == self.total)
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None
        elif self.bar:
            self._draw(force=True)
            self.stream.write("\n")
        self.stream.flush()

    # ---- drawing ---------------------------------------------------------------------------------
    def _postfix(self) -> str:
        return f"{self.done}/{self.total} tasks · {self.current}"

    def _eta(self) -> str:
        elapsed = time.perf_counter() - self.started
        if not self.done_weight:
            return "?"
        return _clock(elapsed / self.done_weight * (self.total_weight - self.done_weight))

    def _clear(self) -> None:
        self.stream.write("\r\033[K")

    def _draw(self, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._last_draw < self.min_interval:
            return
        self._last_draw = now
        frac = self.done_weight / self.total_weight
        width = 24
        filled = int(round(frac * width))
        text = (f"{frac * 100:3.0f}%|{'#' * filled}{' ' * (width - filled)}| {self._postfix()} "
                f"[{_clock(now - self.started)}<{self._eta()}]")
        self._clear()
        self.stream.write(text[:200])
        self.stream.flush()


__all__ = ["Progress"]
