"""Quiet windows: workers computing in parallel (`--jobs N`), timings taken as if each were alone.

A timing taken while other workers compute measures the machine's contention, not the framework.
So a worker about to time enters the run's quiet window: it takes the room's lock (one timer at a
time) and stops every other worker of the run on this machine (SIGSTOP to its process group, so a
case's own subprocesses stop too) for the length of the measurement, then continues them
(SIGCONT). A stopped worker loses nothing but wall time; the pauses are logged, and a worker's own
one-shot durations (the first call: trace and compile) leave out any pause that fell inside them
(``paused``). Correctness checks never wait for each other: only timings are serialised.

Workers of one run meet in a folder (``ENV`` names it, set by the runner; Ray tasks of one run on a
node share the node's). A worker joins on start and leaves on exit; the runner also removes a
worker it reaps and continues every member whenever one dies or is killed, so a timer that
crashes inside its window never leaves the others stopped. Without the folder (one worker,
in-process runs) or without SIGSTOP (Windows) a window is a plain block: nothing to stop.
"""
from __future__ import annotations

import contextlib
import functools
import os
import signal
import time
from pathlib import Path

#: the environment variable that hands a worker its room's folder
ENV = "HARNESS_QUIET_DIR"
SUPPORTED = hasattr(signal, "SIGSTOP") and hasattr(os, "killpg")


class Room:
    """The folder where the workers of one run on one machine meet: ``workers/<pid>`` per member
    (a worker's pid is its process group: workers start in a session of their own), ``lock``, and
    ``pauses`` (one ``start end`` line per window that stopped anyone, perf_counter seconds)."""

    def __init__(self, path):
        self.path = Path(path)
        (self.path / "workers").mkdir(parents=True, exist_ok=True)
        self._pauses: list = []     # the pauses read so far: the file only grows, so each call
        self._read = 0              # parses the lines appended since the last (bytes consumed)

    def join(self, pid: int) -> None:
        (self.path / "workers" / str(pid)).touch()

    def leave(self, pid: int) -> None:
        with contextlib.suppress(OSError):
            (self.path / "workers" / str(pid)).unlink()

    def members(self) -> list:
        try:
            return sorted(int(p.name) for p in (self.path / "workers").iterdir() if p.name.isdigit())
        except OSError:
            return []

    @contextlib.contextmanager
    def window(self):
        """Hold the machine for this worker: the others of the run stopped until the block ends.
        Yields how many were stopped."""
        import fcntl

        with open(self.path / "lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            me, stopped = os.getpid(), []
            start = time.perf_counter()
            try:
                for pid in self.members():
                    if pid != me and _signal(pid, signal.SIGSTOP):
                        stopped.append(pid)
                yield len(stopped)
            finally:
                for pid in stopped:
                    _signal(pid, signal.SIGCONT)
                if stopped:
                    with contextlib.suppress(OSError), open(self.path / "pauses", "a") as fh:
                        fh.write(f"{start!r} {time.perf_counter()!r}\n")
                fcntl.flock(lock, fcntl.LOCK_UN)

    def paused(self, start: float, end: float) -> float:
        """Seconds of other workers' windows inside [start, end] (perf_counter: one clock for every
        process on the machine), which a worker stopped meanwhile did not run for."""
        try:
            with open(self.path / "pauses", "rb") as fh:
                fh.seek(self._read)
                new = fh.read()
        except OSError:
            new = b""
        complete = new[:new.rfind(b"\n") + 1]   # a line still being written waits for the next call
        self._read += len(complete)
        for line in complete.decode(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                a, b = (float(x) for x in line.split())
                self._pauses.append((a, b))
        return float(sum(max(0.0, min(b, end) - max(a, start)) for a, b in self._pauses))

    def resume_all(self) -> None:
        """Continue every member (a timer died inside its window)."""
        for pid in self.members():
            _signal(pid, signal.SIGCONT)


def _signal(pid: int, signum) -> bool:
    try:
        os.killpg(pid, signum)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def current() -> Room | None:
    """This worker's room (from ``ENV``), or None: windows are then plain blocks."""
    path = os.environ.get(ENV)
    return _room(path) if path and SUPPORTED else None


@functools.lru_cache(maxsize=None)
def _room(path: str) -> Room | None:
    """One Room per folder for the life of the process (its folder made once, not per window)."""
    try:
        return Room(path)
    except OSError:
        return None


@contextlib.contextmanager
def window():
    """The quiet window of this process's room, or a plain block where it has none."""
    room = current()
    if room is None:
        yield 0
        return
    with room.window() as stopped:
        yield stopped


def paused(start: float, end: float) -> float:
    room = current()
    return room.paused(start, end) if room is not None else 0.0


__all__ = ["ENV", "Room", "SUPPORTED", "current", "paused", "window"]
