"""Worker process: one framework on one device, tasks as JSON lines in, observations out.

    python -m harness.worker FRAMEWORK DEVICE_KIND PRECISION THREADS

The parent sets the environment (CUDA_VISIBLE_DEVICES, JAX_PLATFORMS, thread counts) before
this process imports anything. The protocol travels on the original stdout, duplicated before
anything can print: fd 1 is then pointed at stderr, so a stray print from a case or a framework
(Python or C) lands in the worker's log instead of corrupting the protocol.
"""
from __future__ import annotations

import functools
import json
import os
import sys
import time
import traceback

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


def _tail(exc: BaseException, lines: int = 6) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-lines:]).strip()


def save_arrays(path: str, arrays: dict) -> None:
    """Write atomically: a reader never sees half an .npz."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, path)


def main(argv=None) -> int:
    framework, device, precision, threads = (argv or sys.argv[1:])[:4]
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    from adapters import load
    from adapters.base import Unsupported
    from . import execute, loader

    try:
        adapter = load(framework)
        policy = adapter.setup(device, int(threads), precision)
        hello = {"type": "hello", "version": adapter.version(), "device_name": adapter.device_name(),
                 "policy": policy, "devices": adapter.devices(), "pid": os.getpid()}
    except Unsupported as exc:
        _send(protocol, {"type": "fatal", "status": "skipped", "reason": str(exc)})
        return 0
    except Exception as exc:  # noqa: BLE001 - the parent turns this into error records
        _send(protocol, {"type": "fatal", "status": "error",
                         "reason": f"{framework} failed to start: {type(exc).__name__}: {exc}",
                         "traceback": _tail(exc)})
        return 1
    _send(protocol, hello)

    find = functools.lru_cache(maxsize=None)(loader.find)
    for line in sys.stdin:
        if not line.strip():
            continue
        task = json.loads(line)
        start = time.perf_counter()
        reply = {"type": "result", "id": task["id"]}
        try:
            case = find(task["case"], task["source"])
            observation, arrays = execute.run(adapter, case, task)
            if arrays:
                save_arrays(task["arrays"], arrays)
                reply["arrays"] = os.path.basename(task["arrays"])
            reply.update(observation, status="ok")
        except Unsupported as exc:
            reply.update(status="skipped", reason=str(exc))
        except Exception as exc:  # noqa: BLE001 - any failure of a case is a record, not a crash
            reply.update(status="error", reason=f"{type(exc).__name__}: {exc}".strip(),
                         traceback=_tail(exc))
        reply["policy"] = adapter.precision_policy()
        reply["seconds"] = time.perf_counter() - start
        _send(protocol, reply)
    return 0


if __name__ == "__main__":
    sys.exit(main())
