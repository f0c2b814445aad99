"""Warnings raised while a check runs are facts about the run, not the user's failure.

Under a strict setting (``pytest -W error::DeprecationWarning``, ``PYTHONWARNINGS=error``) a
framework's own deprecation (torch's ``torch.jit.script is deprecated``, raised inside torch on
its first forward-mode call) would otherwise become an exception in the middle of a gradient and
fail a correct case. ``capture`` records every warning instead, whatever the filters say, and
restores the caller's filters on exit; the distinct ones travel with the observation.
"""
from __future__ import annotations

import contextlib
import os
import warnings

#: distinct warnings kept per capture (the rest are counted): a message carrying a varying
#: number must not grow an observation without bound
MAX_DISTINCT = 20

_HARNESS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # harness/, above worker/


class WarningLog:
    """Distinct warnings by (category, text), in the order first seen, with a count each."""

    def __init__(self):
        self._seen: dict = {}
        self.dropped = 0

    def add(self, message, category, filename, lineno, file=None, line=None) -> None:
        """A ``warnings.showwarning`` replacement: record, never print or raise."""
        text = str(message).strip()
        key = (category.__name__, text)
        entry = self._seen.get(key)
        if entry is not None:
            entry["count"] += 1
        elif len(self._seen) >= MAX_DISTINCT:
            self.dropped += 1
        else:
            self._seen[key] = {"category": category.__name__, "message": text[:500],
                               "filename": str(filename), "lineno": int(lineno or 0), "count": 1}

    def __bool__(self) -> bool:
        return bool(self._seen)

    def rows(self, case_files=()) -> list:
        """JSON-able: category, message, where (file:line), origin and count. Origin is `case`
        (raised in one of ``case_files``), `harness`, or `framework` (anything else: the
        framework or a library it calls)."""
        out = []
        for e in self._seen.values():
            name = e["filename"]
            origin = ("case" if name in case_files
                      else "harness" if os.path.abspath(name).startswith(_HARNESS_DIR + os.sep) else "framework")
            where = name.split("site-packages" + os.sep)[-1]
            out.append({"category": e["category"], "message": e["message"], "where": f"{where}:{e['lineno']}",
                        "origin": origin, "count": e["count"]})
        if self.dropped:
            out.append({"category": "", "message": f"{self.dropped} more warning(s) not kept", "where": "",
                        "origin": "", "count": self.dropped})
        return out


@contextlib.contextmanager
def capture():
    """Record every warning raised in the block (none is raised as an error or printed); the
    caller's filters and ``showwarning`` are restored on exit. Not thread-safe (the warnings
    module's state is global): a worker runs one task at a time."""
    log = WarningLog()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = log.add
        yield log


def case_files(case) -> set:
    """The source files of a case's own functions: a warning raised there is the case's."""
    files = set()
    for fn in [case.make, case.loss, *(case.native or {}).values()]:
        code = getattr(fn, "__code__", None)
        if code is not None:
            files.add(code.co_filename)
    return files


__all__ = ["MAX_DISTINCT", "WarningLog", "capture", "case_files"]
