"""Running tasks in worker processes, one per (framework, device, precision), pyperf style.

Tasks go to a worker one at a time as JSON lines; each answer is awaited with a timeout. A
worker that dies (segfault, abort, out of memory) or stops answering is killed; the task it
was on becomes an `error` observation naming what happened, with the tail of the worker's
log, and a fresh worker takes the remaining tasks. A framework that cannot start turns its
whole group into `skipped` or `error` observations. The run always finishes.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker_env(framework: str, device: str, threads: int) -> dict:
    """The environment a worker starts with: its device pinned, memory not preallocated."""
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
    env["PYTHONUNBUFFERED"] = "1"
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(threads)
        if threads == 1:  # XLA's CPU backend has no thread-count flag: one thread or all of them
            env["XLA_FLAGS"] = " ".join(filter(None, [env.get("XLA_FLAGS"), "--xla_cpu_multi_thread_eigen=false"]))
    return env


class Worker:
    """One worker process and a thread that turns its protocol lines into a queue."""

    def __init__(self, framework, device, precision, threads, log_path: Path):
        kind = "cpu" if device == "cpu" else "cuda"
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness.worker", framework, kind, precision, str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
            env=worker_env(framework, device, threads), cwd=str(ROOT), start_new_session=True)
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
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return "timeout"

    def death(self) -> str:
        """Why the worker is gone, in words."""
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return "worker stopped answering"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"worker crashed ({name})"
        return f"worker exited with code {code}"

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
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


def _log_tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    interesting = [t for t in text if t.strip()][-lines:]
    return " | ".join(t.strip()[:200] for t in interesting)


class Runner:
    """Runs a plan's worker groups (``jobs`` at a time) and hands each observation to ``emit``."""

    def __init__(self, run_dir: Path, emit, threads: int, jobs: int = 1,
                 task_timeout: float = 600.0, start_timeout: float = 180.0):
        self.run_dir = run_dir
        self.emit = emit
        self.threads = threads
        self.jobs = max(1, jobs)
        self.task_timeout = task_timeout
        self.start_timeout = start_timeout
        self.workers_info: dict = {}
        self._lock = threading.Lock()
        (run_dir / "arrays").mkdir(parents=True, exist_ok=True)
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)

    def run(self, groups: dict) -> None:
        if self.jobs == 1:
            for key, tasks in groups.items():
                self._run_group(key, tasks)
            return
        with ThreadPoolExecutor(self.jobs) as pool:
            for future in [pool.submit(self._run_group, k, t) for k, t in groups.items()]:
                future.result()

    def _emit(self, task, message: dict):
        message.setdefault("id", task.id)
        with self._lock:
            self.emit(task, message)

    def _run_group(self, key, tasks) -> None:
        framework, device, precision = key
        log_path = self.run_dir / "logs" / f"{framework}-{device.replace(':', '')}-{precision}.log"
        pending = list(tasks)
        while pending:
            worker = Worker(framework, device, precision, self.threads, log_path)
            hello = worker.receive(self.start_timeout)
            if not isinstance(hello, dict) or hello.get("type") != "hello":
                if hello == "timeout":
                    reason = f"{framework} worker did not start within {self.start_timeout:.0f}s"
                elif hello is None:
                    reason = f"{framework} {worker.death()} while starting: {_log_tail(log_path)}"
                else:
                    reason = hello.get("reason", "worker failed to start")
                status = hello.get("status", "error") if isinstance(hello, dict) else "error"
                worker.kill()
                worker.close()
                for task in pending:
                    self._emit(task, {"status": status, "reason": reason,
                                      "traceback": hello.get("traceback", "") if isinstance(hello, dict) else ""})
                return
            with self._lock:
                self.workers_info[key] = hello
            while pending:
                task = pending[0]
                arrays = self.run_dir / "arrays" / (task.id.replace("/", "__") + ".npz")
                if not worker.send(task.message(str(arrays))):
                    message = None
                else:
                    message = worker.receive(self.task_timeout)
                if isinstance(message, dict):
                    pending.pop(0)
                    message.setdefault("version", hello.get("version"))
                    message.setdefault("device_name", hello.get("device_name"))
                    self._emit(task, message)
                    continue
                # the worker died or hung on this task: record it, start afresh for the rest
                if message == "timeout":
                    worker.kill()
                    reason = f"timed out after {self.task_timeout:.0f}s (worker killed)"
                else:
                    reason = worker.death()
                    tail = _log_tail(log_path)
                    reason = f"{reason}: {tail}" if tail else reason
                pending.pop(0)
                self._emit(task, {"status": "error", "reason": reason, "version": hello.get("version"),
                                  "device_name": hello.get("device_name"), "policy": hello.get("policy")})
                break
            else:
                worker.close()
                return
            worker.close()
