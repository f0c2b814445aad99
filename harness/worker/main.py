"""Worker process: one framework on one device, tasks as JSON lines in, observations out.

    python -m harness.worker.main FRAMEWORK DEVICE_KIND PRECISION THREADS [MEMORY_LIMIT_BYTES]

The parent sets the environment (CUDA_VISIBLE_DEVICES, JAX_PLATFORMS, thread counts) before
this process imports anything. The protocol travels on the original stdout, duplicated before
anything can print: fd 1 is then pointed at stderr, so a stray print from a case or a framework
(Python or C) lands in the worker's log instead of corrupting the protocol.

Faults stay inside the task that caused them: an exception is an `error` answer with the
traceback's last lines (an out-of-memory error says so first); a fatal signal (segfault, abort)
dumps the Python stack to the log (faulthandler) for the parent to quote; the worker dies with
its parent (PR_SET_PDEATHSIG), so a killed run leaves no worker behind; with a memory limit the
worker's address space is capped (RLIMIT_AS, CPU workers) so a runaway allocation fails here
instead of exhausting the machine.
"""
from __future__ import annotations

import faulthandler
import functools
import json
import os
import signal
import sys

import numpy as np


def _send(stream, message: dict) -> None:
    stream.write(json.dumps(message, default=_jsonable) + "\n")
    stream.flush()


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def save_arrays(path: str, arrays: dict) -> None:
    """Write atomically: a reader never sees half an .npz (nor a full disk half a file)."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _save_as_named(path: str, arrays: dict) -> str:
    """run_task's ``keep_arrays`` here: the file the parent named, which the answer names back."""
    save_arrays(path, arrays)
    return os.path.basename(path)


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker when the parent dies (even by SIGKILL), so no orphan is left
    running a hung case. Elsewhere the closed stdin ends the worker after its current task."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    parent = os.environ.get("HARNESS_PARENT_PID")
    if parent and os.getppid() != int(parent):  # the parent died before prctl took effect
        os._exit(1)


def limit_memory(limit_bytes: int, device: str) -> str:
    """Cap this process's address space (RLIMIT_AS) so an allocation beyond it fails with
    MemoryError / the framework's allocation error instead of exhausting the machine. CPU
    workers only: CUDA reserves far more address space than it uses."""
    if not limit_bytes:
        return ""
    if device != "cpu":
        return "memory limit not applied: CUDA reserves far more address space than it uses"
    try:
        import resource
    except ImportError:  # not on this OS
        return "memory limit not supported on this OS"
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = limit_bytes if hard == resource.RLIM_INFINITY else min(limit_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    return f"address space limited to {limit / 2**30:.2f} GiB"


def _start(framework: str, device: str, threads, precision: str):
    """Import the framework and set it up: (adapter, hello) or (None, a fatal message); the
    parent turns a fatal message into error (or skipped) records for every task."""
    from adapters import load
    from adapters.base import Unsupported
    from harness.worker.task import reason_for, traceback_tail

    try:
        adapter = load(framework)
    except Exception as exc:  # noqa: BLE001 - a broken install: every task of this worker an error
        return None, {"type": "fatal", "status": "error",
                      "reason": f"{framework} failed to import: {reason_for(exc)}", "traceback": traceback_tail(exc)}
    try:
        policy = adapter.setup(device, int(threads), precision)
        return adapter, {"type": "hello", "version": adapter.version(), "device_name": adapter.device_name(),
                         "policy": policy, "devices": adapter.devices(), "pid": os.getpid()}
    except Unsupported as exc:
        return None, {"type": "fatal", "status": "skipped", "reason": str(exc)}
    except Exception as exc:  # noqa: BLE001
        return None, {"type": "fatal", "status": "error",
                      "reason": f"{framework} failed to start: {reason_for(exc)}", "traceback": traceback_tail(exc)}


def main(argv=None) -> int:
    args = list(argv or sys.argv[1:])
    framework, device, precision, threads = args[:4]
    memory_limit = int(args[4]) if len(args) > 4 else 0
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    faulthandler.enable(file=sys.stderr, all_threads=False)
    _die_with_parent()
    print(f"[harness] {framework} worker on {device} ({precision} precision), pid {os.getpid()}",
          file=sys.stderr, flush=True)
    try:
        note = limit_memory(memory_limit, device)
    except (ValueError, OSError) as exc:
        note = f"memory limit not applied: {exc}"
    if note:
        print(f"[harness] {note}", file=sys.stderr, flush=True)

    # a framework's warning on import or setup (PYTHONWARNINGS=error) is recorded in the hello
    from harness.define import loader
    from harness.worker import quiet, warning_log
    room = quiet.current()   # --jobs N: joined from the start, so a timer stops this import too
    if room is not None:
        room.join(os.getpid())
    try:
        with warning_log.capture() as startup:
            adapter, answer = _start(framework, device, threads, precision)
        if startup and adapter is not None:
            answer["warnings"] = startup.rows()
        _send(protocol, answer)
        if adapter is None:
            return 0 if answer["status"] == "skipped" else 1
        _serve(protocol, adapter, functools.lru_cache(maxsize=None)(loader.find))
    finally:
        if room is not None:
            room.leave(os.getpid())
    return 0


def _serve(protocol, adapter, find) -> None:
    """Answer tasks from stdin until it closes."""
    from harness.worker.task import run_task

    for line in sys.stdin:
        if not line.strip():
            continue
        task = json.loads(line)
        print(f"[harness] task {task['id']}", file=sys.stderr, flush=True)
        reply = {"type": "result", "id": task["id"]}
        reply.update(run_task(adapter, task, lambda: find(task["case"], task["source"]),
                              lambda arrays: _save_as_named(task["arrays"], arrays)))
        _send(protocol, reply)


__all__ = ["limit_memory", "main", "save_arrays"]


if __name__ == "__main__":
    sys.exit(main())
