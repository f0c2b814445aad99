"""Running tasks in worker processes, one per (framework, device, precision), pyperf style.

Tasks go to a worker one at a time as JSON lines; each answer is awaited with a timeout. A
worker that dies (segfault, abort, out of memory) or stops answering is killed with its whole
process group; the task it was on becomes an `error` observation naming what happened (the
signal, the case's frame from the worker's faulthandler dump, or the tail of its log), and a
fresh worker takes the remaining tasks. A group may also have a budget for all its tasks
together (``worker_timeout``): past it the running task is killed and the rest are recorded
as not run. A framework that cannot import or start turns its whole group into `error` (or
`skipped`) observations. The run always finishes, unless ``stop()`` is called (an interrupted
run): then every worker is killed and nothing more is recorded.
"""
from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness.run import cache
from harness.plan.tasks import CHUNKS_PER_LANE, Chunk, chunk_groups
from harness.worker import quiet

ROOT = Path(__file__).resolve().parents[2]   # the repository: harness/run/local.py


class Interrupted(BaseException):
    """SIGINT/SIGTERM/SIGHUP reached the parent: workers are killed, the partial report written."""

    def __init__(self, signum: int, run_dir: Path | None = None, finished: int = 0, total: int = 0):
        super().__init__(signum)
        self.signum, self.run_dir, self.finished, self.total = signum, run_dir, finished, total

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def worker_env(framework: str, device: str, threads: int, quiet_dir=None, cache_dir=None) -> dict:
    """The environment a worker starts with: its device pinned, memory not preallocated; the run's
    quiet room (harness.worker.quiet) and the compilation cache folder (harness.run.cache) where
    there are."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
        env["JAX_PLATFORMS"] = "cpu"
    else:
        env["CUDA_VISIBLE_DEVICES"] = device.split(":", 1)[1] if ":" in device else "0"
        env["JAX_PLATFORMS"] = "cuda"
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONHASHSEED"] = "0"
    # Keras 3 fixes its backend at import: a Keras model in this worker runs on its framework
    env["KERAS_BACKEND"] = framework
    env["HARNESS_PARENT_PID"] = str(os.getpid())
    env["PYTHONUNBUFFERED"] = "1"
    env.pop(quiet.ENV, None)
    if quiet_dir:
        env[quiet.ENV] = str(quiet_dir)
    env.update(cache.worker_env(framework, cache_dir))
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(threads)
        if threads == 1:  # XLA's CPU backend has no thread-count flag: one thread or all of them
            env["XLA_FLAGS"] = " ".join(filter(None, [env.get("XLA_FLAGS"), "--xla_cpu_multi_thread_eigen=false"]))
    return env


class Worker:
    """One worker process and a thread that turns its protocol lines into a queue."""

    def __init__(self, framework, device, precision, threads, log_path: Path, memory_limit: int = 0,
                 quiet_dir=None, cache_dir=None):
        kind = "cpu" if device == "cpu" else "cuda"
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness.worker.main", framework, kind, precision, str(threads),
             str(int(memory_limit or 0))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
            env=worker_env(framework, device, threads, quiet_dir, cache_dir), cwd=str(ROOT),
            start_new_session=True)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in self.proc.stdout:
            try:
                self.lines.put(json.loads(raw))
            except json.JSONDecodeError:
                continue
        self.lines.put(None)  # end of stream: the worker exited

    def send(self, message: dict) -> bool:
        try:
            self.proc.stdin.write((json.dumps(message) + "\n").encode())
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError):
            return False

    def receive(self, timeout: float):
        """The next message, None if the worker died, 'timeout' if it said nothing in time."""
        try:
            return self.lines.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return "timeout"

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def death(self, since: int = 0) -> tuple:
        """Why the worker is gone: (one line, the log excerpt that shows it)."""
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return "worker stopped answering", ""
        summary, excerpt = crash_report(_read_log(self.log_path, since))
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            reason = f"worker crashed ({name})"
            if -code == signal.SIGKILL:
                reason = ("worker killed (SIGKILL) from outside the harness, most likely out of memory "
                          "(the kernel's OOM killer)")
        else:
            reason = f"worker exited with code {code}"
        if summary and any(p in summary.lower() for p in ("bad_alloc", "out of memory", "cannot allocate")):
            reason = f"out of memory: {reason}"
        return (f"{reason}: {summary}" if summary else reason), excerpt

    def kill(self):
        """SIGKILL the worker's whole process group (anything a case started goes too)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            if self.proc.poll() is None:
                self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def close(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
        self.log.close()


def _read_log(path: Path, since: int = 0, limit: int = 200_000) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(since, 0))
            data = fh.read()
    except OSError:
        return ""
    return data[-limit:].decode(errors="replace")


_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+) in (?P<func>\S+)')


def crash_report(text: str) -> tuple:
    """(one line, excerpt) from what a worker wrote to its log while on a task. A faulthandler
    dump (segfault, abort) is summarised by its first line and the innermost frame."""
    lines = [t.rstrip() for t in text.splitlines() if t.strip() and not t.startswith("[harness]")]
    fatal = next((i for i, t in enumerate(lines) if t.startswith("Fatal Python error")), None)
    if fatal is None:
        tail = lines[-3:]
        return " | ".join(t.strip()[:200] for t in tail), "\n".join(lines[-20:])
    block = [t for t in lines[fatal:] if not t.startswith("Extension modules")][:30]
    summary = block[0]
    frames = [m for m in map(_FRAME.search, block) if m]
    if frames:
        summary += " in " + _frame_text(frames[0])
        own = next((m for m in frames if not _library_file(m["file"])), None)
        if own is not None and own is not frames[0]:
            summary += " called from " + _frame_text(own)
    before = lines[max(0, fatal - 3):fatal]
    return summary, "\n".join(before + block)


def _frame_text(match) -> str:
    return f"{match['func']} ({Path(match['file']).name}:{match['line']})"


def _library_file(path: str) -> bool:
    """Python's own library, installed packages, or the harness: not where a case's fault is."""
    import sysconfig

    roots = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots |= {str(ROOT / "harness"), str(ROOT / "adapters")}
    return path.startswith("<") or any(path.startswith(r.rstrip("/") + "/") for r in roots if r)


def as_chunks(groups) -> list:
    """Runner.run's argument: chunks (harness.plan.tasks.chunk_groups), or {key: tasks}, one chunk a group."""
    if isinstance(groups, dict):
        return [Chunk(key, list(tasks)) for key, tasks in groups.items()]
    return list(groups)


class Runner:
    """Runs a plan's chunks of worker groups (``jobs`` at a time, largest first) and hands each
    observation to ``emit``.

    ``task_timeout`` bounds one task, ``worker_timeout`` (None: no bound) all the tasks of one
    chunk together (a whole worker group with --jobs 1), ``memory_limit`` (bytes, 0: none) each CPU
    worker's address space. With more than one job the workers meet in a quiet room
    (harness.worker.quiet; ``quiet_dir``, else a temporary folder of the run's own) so timings are
    taken with the others stopped; ``cache_dir``: the compilation caches' folder (None: none).
    """

    #: its workers are processes of this machine (they meet in its quiet room)
    starts_workers = True

    def __init__(self, run_dir: Path, emit, threads: int, jobs: int = 1,
                 task_timeout: float = 600.0, start_timeout: float = 180.0,
                 worker_timeout: float | None = None, memory_limit: int = 0,
                 quiet_dir=None, cache_dir=None):
        self.run_dir = Path(run_dir).absolute()  # workers run in the project root, not here
        self.emit = emit
        self.threads = threads
        self.jobs = max(1, jobs)
        self.task_timeout = task_timeout
        self.start_timeout = start_timeout
        self.worker_timeout = worker_timeout
        self.memory_limit = memory_limit
        self.quiet_dir, self.cache_dir = quiet_dir, cache_dir
        self.room: quiet.Room | None = None
        self.workers_info: dict = {}
        self.chunk_log: list = []   # one row per chunk run (run.json's "chunks")
        self._lock = threading.Lock()
        self._live: set = set()
        self._stopping = threading.Event()
        (run_dir / "arrays").mkdir(parents=True, exist_ok=True)
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)

    # ---- lifecycle ---------------------------------------------------------------------
    def chunks(self, groups: dict, costs: dict) -> list:
        """The plan's worker groups as the chunks this runner runs: with ``jobs`` lanes, about
        CHUNKS_PER_LANE a lane, so unequal groups even out; one a group with one lane."""
        parts = self.jobs * CHUNKS_PER_LANE if self.jobs > 1 else 1
        return chunk_groups(groups, costs, parts)

    def run(self, groups) -> None:
        """Run every chunk (``as_chunks``), ``jobs`` at a time in the order given; on any exception
        (an interrupt, a failed write) stop all workers first, then re-raise."""
        chunks = as_chunks(groups)
        lanes = min(self.jobs, len(chunks))
        own_room = None
        if self.starts_workers and (lanes > 1 or self.quiet_dir) and quiet.SUPPORTED:
            if self.quiet_dir is None:
                own_room = tempfile.mkdtemp(prefix="gradharness-quiet-")
            self.room = quiet.Room(self.quiet_dir or own_room)
        pool = ThreadPoolExecutor(lanes) if lanes > 1 else None
        try:
            if pool is None:
                for chunk in chunks:
                    if self.stopping:
                        break
                    self._run_chunk(chunk)
            else:
                for future in [pool.submit(self._run_chunk, c) for c in chunks]:
                    future.result()
        except BaseException:
            self.stop()
            raise
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            if own_room is not None:
                shutil.rmtree(own_room, ignore_errors=True)
                self.room = None

    def stop(self) -> None:
        """Kill every live worker (with its process group); record nothing more but results
        that had already arrived."""
        self._stopping.set()
        with self._lock:
            live = list(self._live)
        for worker in live:
            worker.kill()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def _start(self, framework, device, precision, log_path) -> Worker:
        worker = Worker(framework, device, precision, self.threads, log_path, self.memory_limit,
                        self.room.path if self.room is not None else None, self.cache_dir)
        with self._lock:
            self._live.add(worker)
        if self._stopping.is_set():  # stop() ran while this worker was starting
            worker.kill()
        return worker

    def _finish(self, worker: Worker, kill: bool = False) -> None:
        if kill:
            worker.kill()
        worker.close()
        with self._lock:
            self._live.discard(worker)
        if self.room is not None:
            # out of the quiet room; one that did not end cleanly may have died inside its own
            # window, so the others it stopped go on (a clean exit leaves others' windows alone)
            self.room.leave(worker.proc.pid)
            if kill or worker.proc.returncode != 0:
                self.room.resume_all()

    def _log_chunk(self, chunk: Chunk, seconds: float, **where) -> None:
        """run.json's account of a chunk: which group, how much of it, how long, where."""
        framework, device, precision = chunk.key
        with self._lock:
            self.chunk_log.append({"framework": framework, "device": device, "precision": precision,
                                   "chunk": chunk.index + 1, "of": chunk.count, "cases": len(chunk.cases),
                                   "tasks": len(chunk.tasks), "cost": round(chunk.cost, 3),
                                   "seconds": round(seconds, 3), **where})

    def _emit(self, task, message: dict):
        message.setdefault("id", task.id)
        with self._lock:
            self.emit(task, message)

    # ---- one chunk -----------------------------------------------------------------------
    def _run_chunk(self, chunk: Chunk) -> None:
        started = time.monotonic()
        try:
            self._run_tasks(chunk, started)
        finally:
            if not self.stopping:
                self._log_chunk(chunk, time.monotonic() - started)

    def _run_tasks(self, chunk: Chunk, started: float) -> None:
        """Serve the chunk's tasks to a worker, a fresh one after each crash or hang."""
        key, tasks = chunk.key, chunk.tasks
        framework, device, precision = key
        who = f"{framework} {device}" + ("" if precision == "default" else f" ({precision})")
        log_path = self.run_dir / "logs" / chunk.log_name
        deadline = started + self.worker_timeout if self.worker_timeout else None
        pending = list(tasks)
        while pending and not self.stopping:
            if deadline is not None and time.monotonic() >= deadline:
                break
            worker = self._start(framework, device, precision, log_path)
            hello = worker.receive(self._wait(self.start_timeout, deadline)[0])
            if self.stopping:
                self._finish(worker, kill=True)
                return
            if not isinstance(hello, dict) or hello.get("type") != "hello":
                status, reason, trace = self._start_failure(hello, worker, framework, who, deadline)
                self._finish(worker, kill=True)
                for task in pending:
                    self._emit(task, {"status": status, "reason": reason, "traceback": trace})
                return
            with self._lock:
                self.workers_info[key] = hello
            self._serve(worker, hello, pending, who, deadline)
            self._finish(worker, kill=self.stopping)
        if pending and not self.stopping:  # the group's time ran out between tasks
            for task in pending:
                self._emit(task, {"status": "error",
                                  "reason": f"not run: the {who} worker's tasks exceeded --worker-timeout "
                                            f"{self.worker_timeout:g}s before this one started"})

    def _start_failure(self, hello, worker, framework, who, deadline) -> tuple:
        """(status, reason, traceback) of a worker that did not say hello: it timed out, died, or
        answered with its own reason (a framework that cannot load, a device it cannot see)."""
        trace = hello.get("traceback", "") if isinstance(hello, dict) else ""
        if hello == "timeout":   # the caller kills the worker
            if deadline is not None and time.monotonic() >= deadline:
                reason = (f"timed out after {self.worker_timeout:g}s: the {who} worker did not start "
                          f"within --worker-timeout (worker killed)")
            else:
                reason = f"{framework} worker did not start within {self.start_timeout:.0f}s (worker killed)"
        elif hello is None:
            reason, trace = worker.death()
            reason = f"{framework} failed to start: {reason}"
        else:
            reason = hello.get("reason", "worker failed to start")
        status = hello.get("status", "error") if isinstance(hello, dict) else "error"
        return status, reason, trace

    def _serve(self, worker, hello: dict, pending: list, who: str, deadline) -> None:
        """Send ``pending`` tasks to one started worker until all are done, the group's deadline
        passes, the run stops, or the worker dies or hangs on one (recorded; the caller starts a
        fresh worker for the rest). Finished tasks are popped from ``pending``."""
        while pending:
            if deadline is not None and time.monotonic() >= deadline:
                return  # the rest are recorded as not run by the caller
            task = pending[0]
            arrays = self.run_dir / "arrays" / task.arrays_name
            since, sent = worker.log_size(), time.monotonic()
            wait, group_bound = self._wait(self.task_timeout, deadline)
            message = worker.receive(wait) if worker.send(task.message(str(arrays))) else None
            if isinstance(message, dict):  # a finished result is kept, even while stopping
                pending.pop(0)
                message.setdefault("version", hello.get("version"))
                message.setdefault("device_name", hello.get("device_name"))
                self._emit(task, message)
                if self.stopping:
                    return
                continue
            if self.stopping:  # the worker died because the run is being interrupted
                return
            # the worker died or hung on this task: record it, start afresh for the rest
            trace = ""
            if message == "timeout":
                worker.kill()
                if group_bound:
                    reason = (f"timed out after {self.worker_timeout:g}s: the {who} worker's tasks "
                              f"together exceeded --worker-timeout (worker killed)")
                else:
                    reason = f"timed out after {self.task_timeout:g}s (worker killed)"
            else:
                reason, trace = worker.death(since)
            pending.pop(0)
            self._emit(task, {"status": "error", "reason": reason, "traceback": trace,
                              "seconds": time.monotonic() - sent, "version": hello.get("version"),
                              "device_name": hello.get("device_name"), "policy": hello.get("policy")})
            return

    @staticmethod
    def _wait(limit: float, deadline) -> tuple:
        """(seconds to wait, whether the group's deadline is what bounds it)."""
        if deadline is None:
            return limit, False
        remaining = deadline - time.monotonic()
        return (remaining, True) if remaining < limit else (limit, False)


__all__ = ["ROOT", "as_chunks", "crash_report", "Interrupted", "Runner", "Worker", "worker_env"]
