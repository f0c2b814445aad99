"""One task, start to answer: the code the worker process and the in-process runner share.

Both run a task through ``run_task``, so the error text, the traceback's format, the global RNG
seeding and the warnings capture are the same by construction, not by two copies kept in step;
they differ only in where a case comes from and where its arrays go (a worker saves them to the
run's arrays/ folder, the in-process runner keeps them in memory for the judge).
"""
from __future__ import annotations

import time
import traceback
from typing import Callable

from adapters.base import Unsupported
from harness.case import Case
from harness.define.seeding import global_rngs_seeded
from harness.worker import observe

#: fragments of framework messages that mean an allocation failed (torch CPU/CUDA, XLA, TF)
OOM_PATTERNS = ("out of memory", "can't allocate memory", "cannot allocate memory", "resource_exhausted",
                "oom when allocating", "bad_alloc", "resourceexhausted", "outofmemory")


def traceback_tail(exc: BaseException, lines: int = 12) -> str:
    """The traceback's last lines (innermost frames and the error), for the record."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return "\n".join(text.strip().splitlines()[-lines:])


def _one_line(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}".strip().rstrip(":")[:400]


def is_out_of_memory(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return isinstance(exc, MemoryError) or any(p in text for p in OOM_PATTERNS)


def reason_for(exc: BaseException) -> str:
    """One line for the report: what went wrong, out-of-memory named as such."""
    if is_out_of_memory(exc):
        return f"out of memory: {_one_line(exc)}"
    return _one_line(exc)


def run_task(adapter, task: dict, get_case: Callable[[], Case], keep_arrays: Callable[[dict], str],
             reference: Callable | None = None) -> dict:
    """Run ``task`` (observe.run's fields, plus ``case`` and ``seed``) on a set-up ``adapter``:
    the answer's fields, never an exception, since any failure of a case is a record.

    ``get_case`` is called inside the task, so a case that fails to load is that task's error;
    ``keep_arrays(arrays)`` stores a successful task's named arrays and returns the name the
    answer's ``arrays`` gives them (a failure to store them is the task's error too). Answer:
    status ok with the observation, or skipped / error with ``reason`` (error: ``traceback``, and
    ``cause`` for an autodiff failure); ``warnings`` of a failed task; ``policy``; ``seconds``.
    ``reference``: framework -> set-up adapter, where this process holds every framework (a
    module case's reference module is then built here rather than in a process of its own).
    """
    start = time.perf_counter()
    answer: dict = {}
    seen: list = []
    try:
        with global_rngs_seeded(task["seed"], task["case"]):
            observation, arrays = observe.run(adapter, get_case(), task, seen, reference)
        if arrays:
            answer["arrays"] = keep_arrays(arrays)
        answer.update(observation, status="ok")
    except Unsupported as exc:
        answer.update(status="skipped", reason=str(exc))
    except Exception as exc:  # noqa: BLE001 - any failure of a case is a record, not a crash
        answer.update(status="error", reason=reason_for(exc), traceback=traceback_tail(exc),
                      **({"cause": exc.cause} if isinstance(exc, observe.AutodiffError) else {}))
    if seen and answer["status"] != "ok":
        # an ok observation carries its warnings already (observe.run)
        answer["warnings"] = seen
    answer["policy"] = adapter.precision_policy()
    answer["seconds"] = time.perf_counter() - start
    return answer


__all__ = ["OOM_PATTERNS", "is_out_of_memory", "reason_for", "run_task", "traceback_tail"]
