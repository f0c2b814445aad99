"""A user's own ops in the fuzzer: `harness fuzz --extra-ops FILE.py`.

Authors of custom ops and custom gradients fuzz them beside the built-in opset: FILE defines
``FUZZ_OPS``, a list of plain dicts (so the file, and the repro scripts that import it, need no
harness import)::

    FUZZ_OPS = [{"name": "my_square",                  # a name no built-in op has
                 "numpy": lambda x: x * x,             # the float64 forward: shapes and validity
                 "torch": my_square_torch,             # each framework's own op (custom gradient and all)
                 "jax": my_square_jax,
                 "tensorflow": my_square_tf,
                 "slots": ("x",),                      # optional: argument kinds (harness/fuzz/generate.py)
                 "smooth": True, "domain": "any", "weight": 1.0}]

Import each framework inside the functions that use it: the fuzzer's own process reads the file
(for the numpy forward) and must not load every framework; each worker calls only its own.
A framework the dict has no entry for cannot run programs with the op (an error record says so).
Generated programs name the op like any other; ExtendedOps routes it to the user's function for the
framework an ops namespace belongs to (or to ``numpy`` for the fuzzer's own float64 forward).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from adapters.base import Unsupported
from harness.errors import UsageError

REQUIRED = ("name", "numpy")


def load(path) -> dict:
    """name -> op dict of FILE's FUZZ_OPS; UsageError (one line) for a file that is not such."""
    path = Path(path).resolve()
    if not path.is_file():
        raise UsageError(f"--extra-ops {path}: no such file")
    spec = importlib.util.spec_from_file_location(f"fuzz_extra_ops_{abs(hash(str(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - any failure of the user's file is one line
        raise UsageError(f"--extra-ops {path}: importing it failed: {type(exc).__name__}: {exc}") from None
    ops = getattr(module, "FUZZ_OPS", None)
    if not isinstance(ops, (list, tuple)) or not all(isinstance(o, dict) for o in ops):
        raise UsageError(f"--extra-ops {path}: define FUZZ_OPS, a list of dicts (see harness/fuzz/extra_ops.py)")
    out = {}
    for op in ops:
        missing = [k for k in REQUIRED if k not in op]
        if missing:
            raise UsageError(f"--extra-ops {path}: an op lacks {', '.join(missing)}")
        out[op["name"]] = op
    return out


class ExtendedOps:
    """``base`` (an adapter's ops, or the fuzzer's numpy ops) with the user's ops added: ``kind`` is
    the key of the user's dicts to call (a framework's name, or "numpy")."""

    def __init__(self, base, extras: dict, kind: str | None = None):
        self._base, self._extras = base, extras
        self._kind = kind or getattr(base, "framework", None)
        self.framework = getattr(base, "framework", kind)

    def __getattr__(self, name):
        op = self._extras.get(name)
        if op is None:
            return getattr(self._base, name)
        if self._kind not in op:
            raise Unsupported(f"extra op '{name}' has no {self._kind} implementation")
        return op[self._kind]


__all__ = ["ExtendedOps", "REQUIRED", "load"]
