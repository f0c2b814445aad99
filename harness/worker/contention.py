"""Was the machine quiet while a timing ran? Contention is detected, so it is not published.

Spread (IQR) cannot see steady contention: another process sharing the worker's cores for the
whole measurement slows every block alike. Four signals, each absolute (no quiet baseline needed):

- **run-queue wait** (Linux): the scheduler's own account (/proc/self/task/*/schedstat) of how long
  the worker's threads were runnable but waiting for a CPU during the measurement, over its wall
  time: how many threads were queued, on average. A framework can queue its own threads (XLA's
  pool beside the dispatching thread), which is its own speed, not contention; so a cell is
  contended above MAX_WAIT only when other processes also used more than MAX_OTHERS of this
  process's CPUs meanwhile (/proc/stat's idle time of those CPUs and this process's CPU time;
  the idle time counts whole clock ticks, so the estimate is less a tick a CPU: a lower bound).
- **calibration loop**, framework-free, before and after the measurement: one thread running
  numpy's exp over a small array until it has used SECONDS of its own CPU (one thread: two would
  queue on the GIL, which is no contention). On a quiet machine it gets a whole CPU (thread CPU
  time / wall ~ 1); contended when it got less than MIN_SHARE, or ran MAX_SLOWDOWN slower at the
  end than at the start. (One thread, and a loop this short that often runs inside one scheduler
  slice even on a loaded machine: it sees heavy or changing load; the run-queue wait sees what
  the timing's own threads went through.)
- **steal time** (/proc/stat, a virtual machine): the hypervisor running other machines on the
  worker's CPUs, which no guest scheduler sees; over MAX_STOLEN CPUs is contended.
- **median vs fastest block**: more than MAX_MEDIAN_OVER_MIN apart, something ran during part of it.

The load average is recorded beside every timing but decides nothing: it lags by a minute and
counts the worker's own threads.
"""
from __future__ import annotations

import os
import time

import numpy as np

#: the hypervisor running other machines on more than this many of the worker's CPUs (steal time)
MAX_STOLEN = 0.1
#: more than this many of the worker's threads queued for a CPU, on average over the measurement,
#: while other processes used more than MAX_OTHERS of its CPUs
MAX_WAIT = 0.2
MAX_OTHERS = 0.25
#: the calibration thread with less than this share of a CPU (over all repeats): more runnable
#: threads than CPUs, twice over
MIN_SHARE = 0.5
#: the calibration loop this much slower at the end than at the start: the machine changed
MAX_SLOWDOWN = 1.5
#: the median block this many times the fastest: something else ran during part of the timing
MAX_MEDIAN_OVER_MIN = 1.5
#: calibration repeats at each end of a timing, and seconds of each
REPEATS = 3
SECONDS = 2e-3


def _cpus() -> set:
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


def load() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def calibrate(repeats: int = REPEATS, seconds: float = SECONDS) -> dict:
    """Run the calibration loop ``repeats`` times in this thread (a thread started for it would
    first wait to be scheduled: on a VM, waking an idle CPU takes milliseconds), each until it used
    ``seconds`` of CPU. ``share``: its CPU time over what it could have had, all repeats together:
    the wall time, less the CPU this process's other threads took meanwhile (a framework's pool
    spinning after its work, maybe on this CPU, is this process's own doing, not contention);
    ``shares`` per repeat; ``rate``: iterations per second of that capacity, per repeat."""
    a = np.linspace(-1.0, 1.0, 8192)
    out = np.empty_like(a)
    shares, rates, used, capacity = [], [], 0.0, 0.0
    for _ in range(repeats):
        wall, cpu, mine = time.perf_counter(), time.process_time(), time.thread_time()
        n = 0
        while True:
            np.exp(a, out=out)
            n += 1
            spent = time.thread_time() - mine
            if spent >= seconds:
                break
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        could = max(wall - max(0.0, cpu - spent), spent, 1e-9)
        shares.append(min(1.0, spent / could))
        rates.append(n / could)
        used, capacity = used + spent, capacity + could
    return {"share": min(1.0, used / capacity), "shares": shares, "rate": rates}


def tasks() -> dict | None:
    """{thread id: (seconds on a CPU, seconds runnable but waiting for one)} of this process, from
    /proc/self/task/*/schedstat; None where the OS keeps no such account."""
    out = {}
    try:
        names = os.listdir("/proc/self/task")
    except OSError:
        return None
    for tid in names:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                on_cpu, waiting, _ = f.read().split()
        except (OSError, ValueError):
            continue   # a thread that ended meanwhile
        out[tid] = (int(on_cpu) / 1e9, int(waiting) / 1e9)
    return out or None


def usage() -> tuple | None:
    """(idle seconds since boot of the CPUs this process may use, from /proc/stat; this process's
    CPU seconds; wall clock; those CPUs' steal seconds) for others() and stolen(); None where the
    OS has no /proc/stat."""
    cpus = {f"cpu{n}" for n in _cpus()}
    try:
        with open("/proc/stat") as f:
            rows = [line.split() for line in f if line.startswith("cpu")]
        tick = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None
    idle = sum(int(r[4]) + int(r[5]) for r in rows if r[0] in cpus and len(r) > 5) / tick
    steal = sum(int(r[8]) for r in rows if r[0] in cpus and len(r) > 8) / tick
    return idle, time.process_time(), time.perf_counter(), steal


def others(before: tuple | None, after: tuple | None) -> float | None:
    """CPUs that other processes (and the hypervisor) used, at least, on average between two
    usage(): the CPUs' time neither idle nor this process's, less the idle count's resolution
    (it reads whole clock ticks: under one tick a CPU off over the interval), never below zero."""
    if not before or not after or after[2] <= before[2]:
        return None
    n, wall = len(_cpus()), after[2] - before[2]
    used = n * wall - (after[0] - before[0]) - (after[1] - before[1])
    margin = n / os.sysconf("SC_CLK_TCK")
    return max(0.0, used - margin) / wall


def stolen(before: tuple | None, after: tuple | None) -> float | None:
    """CPUs the hypervisor gave to other machines (steal time), at least, on average between two
    usage(), the count's resolution taken off as in others()."""
    if not before or not after or after[2] <= before[2] or len(before) < 4:
        return None
    n, wall = len(_cpus()), after[2] - before[2]
    return max(0.0, after[3] - before[3] - n / os.sysconf("SC_CLK_TCK")) / wall


def waited(before: dict | None, after: dict | None) -> float | None:
    """Seconds the threads spent runnable but waiting for a CPU between two tasks(), all threads
    together (threads started meanwhile count from zero, threads ended meanwhile are lost)."""
    if not before or not after:
        return None
    return sum(wait - before.get(tid, (0.0, 0.0))[1] for tid, (_, wait) in after.items())


def assess(times, start: dict | None, end: dict | None, wait: float | None = None,
           busy: float | None = None, steal: float | None = None) -> list:
    """Why a timing's figures are not the machine's own (empty: quiet). ``times``: per-call time
    of each block; ``start``, ``end``: calibrate() before and after; ``wait``: waited() over the
    measurement, per second of its wall time; ``busy``, ``steal``: others() and stolen() over it
    (None: unknown)."""
    reasons = []
    if steal is not None and steal > MAX_STOLEN:
        reasons.append(f"the hypervisor gave {steal:.1f} of its CPUs to other machines, on average (steal time)")
    if wait is not None and wait > MAX_WAIT and (busy is None or busy > MAX_OTHERS):
        reasons.append(f"its threads queued for a CPU ({wait:.2f} of them on average)"
                       + ("" if busy is None else f" while other processes used {busy:.1f} of its CPUs"))
    for where, cal in (("start", start), ("end", end)):
        if cal and cal.get("share") is not None and cal["share"] < MIN_SHARE:
            reasons.append(f"the calibration loop got {cal['share']:.0%} of a CPU at the {where}")
    if start and end and start.get("rate") and end.get("rate"):
        slowdown = float(np.median(start["rate"])) / max(float(np.median(end["rate"])), 1e-300)
        if slowdown > MAX_SLOWDOWN:
            reasons.append(f"the calibration loop ran {slowdown:.1f}× slower at the end than at the start")
    if len(times) and min(times) > 0:
        spread = float(np.median(times)) / float(min(times))
        if spread > MAX_MEDIAN_OVER_MIN:
            reasons.append(f"the median block took {spread:.1f}× the fastest")
    return reasons


class Watch:
    """The probes around one measurement, as a context manager: the load average and the
    calibration loop before and after, the run-queue and CPU accounts across; ``assess(times)``
    judges them. ``calibrate``, ``tasks``, ``usage``: the probes (replaceable in tests)."""

    def __init__(self, calibrate=calibrate, tasks=tasks, usage=usage, start: dict | None = None):
        """``start``: a calibration just taken (the end of the measurement before this one, with
        nothing run between), used as this one's start instead of running the loop again."""
        self._calibrate, self._tasks, self._usage = calibrate, tasks, usage
        self._given = start
        self.loads, self.start, self.end = [], None, None
        self.cpu_wait = self.cpu_others = self.cpu_stolen = None

    def __enter__(self):
        self.loads.append(load())
        self.start = self._given if self._given is not None else self._calibrate()
        self._before = (self._tasks(), self._usage(), time.perf_counter())
        return self

    def __exit__(self, *exc):
        threads, used, began = self._before
        queued, after = waited(threads, self._tasks()), self._usage()
        wall = time.perf_counter() - began
        self.cpu_wait = None if queued is None or wall <= 0 else queued / wall
        self.cpu_others, self.cpu_stolen = others(used, after), stolen(used, after)
        self.end = self._calibrate()
        self.loads.append(load())
        return False

    def assess(self, times) -> list:
        return assess(times, self.start, self.end, self.cpu_wait, self.cpu_others, self.cpu_stolen)


__all__ = ["MAX_MEDIAN_OVER_MIN", "MAX_OTHERS", "MAX_SLOWDOWN", "MAX_STOLEN", "MAX_WAIT", "MIN_SHARE", "Watch",
           "assess", "calibrate", "load", "others", "stolen", "tasks", "usage", "waited"]
