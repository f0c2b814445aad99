"""One task's observation as the judge sees it: the row's fields as attributes, its arrays
loaded on demand from a run's arrays/ folder or from memory."""
from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from harness.judge.tolerance import gradient_scale
from harness.vocab import task_key


class Observation:
    """One task's answer as the parent sees it, with its arrays loaded on demand.

    ``arrays``: where the arrays that the row's ``arrays`` names are: a folder of .npz files (a
    run's arrays/, read without unpickling), or a mapping from that name to the arrays in memory
    (an in-process run, which writes no file)."""

    def __init__(self, row: dict, arrays):
        self.row = row
        self._source = arrays
        self._arrays = None

    def __getattr__(self, key):
        try:
            return self.row[key]
        except KeyError:
            raise AttributeError(key) from None

    @property
    def ok(self) -> bool:
        return self.row.get("status") == "ok"

    @property
    def key(self) -> tuple:
        return task_key(self.row)

    def arrays(self, prefix: str) -> dict:
        if self._arrays is None:
            name = self.row.get("arrays")
            if not name:
                self._arrays = {}
            elif isinstance(self._source, Mapping):
                self._arrays = dict(self._source[name])
            else:
                self._arrays = dict(np.load(Path(self._source) / name, allow_pickle=False))
        return {k.split("/", 1)[1]: v for k, v in self._arrays.items() if k.startswith(prefix + "/")}

    @functools.cached_property
    def grads(self) -> dict:
        return self.arrays("grad")

    @functools.cached_property
    def grad_scale(self) -> float:
        return gradient_scale(self.grads)

    @property
    def reduced_precision(self) -> bool:
        return bool((self.row.get("policy") or {}).get("reduced_precision_float32")) and self.dtype == "float32"


__all__ = ["Observation"]
