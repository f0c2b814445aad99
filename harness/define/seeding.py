"""Seeding: every random draw of a task depends on the run's seed and the case's name only.

Planning (which runs a case's make() to estimate its cost), the worker process and the
in-process runner all draw from here, so they build the same point, in any task order.
Framework-free: a framework's own generators are the adapters' business.
"""
from __future__ import annotations

import contextlib
import random
import zlib

import numpy as np


def case_rng(seed: int, case_name: str, purpose: str = "make") -> np.random.Generator:
    """The same parameters, inputs and directions in every framework and every run."""
    return np.random.default_rng([seed, zlib.crc32(case_name.encode()), zlib.crc32(purpose.encode())])


def seed_global_rngs(seed: int, case_name: str) -> None:
    """Cases draw randomness from make's rng; should one reach for numpy's or Python's global
    generator anyway, it too depends on the seed (and the case) only, not on the task order."""
    value = zlib.crc32(f"{seed}/{case_name}".encode())
    np.random.seed(value)
    random.seed(value)


@contextlib.contextmanager
def global_rngs_seeded(seed: int, case_name: str):
    """``seed_global_rngs`` for the block, the previous generator states restored on exit: a
    task sees the same global draws in a worker and in a host process (a user's test suite),
    and the host's own sequence is not reseeded behind its back."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    seed_global_rngs(seed, case_name)
    try:
        yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


__all__ = ["case_rng", "global_rngs_seeded", "seed_global_rngs"]
