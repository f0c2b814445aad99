"""Shared fixtures. Framework tests skip cleanly when that framework is not installed.

Adapters are exercised in-process here (the harness itself only loads them in workers); the
adapter's setup enables float64 and leaves threads and precision at the framework defaults.
"""
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from adapters import FRAMEWORKS, load  # noqa: E402

ALL_FRAMEWORKS = tuple(FRAMEWORKS)
_LOADED = {}


def get_adapter(name):
    info = FRAMEWORKS[name]
    if not info.installed():
        pytest.skip(f"{name} is not installed")
    if name not in _LOADED:
        adapter = load(name)
        adapter.setup("cpu", threads=0, precision="default")
        _LOADED[name] = adapter
    return _LOADED[name]


@pytest.fixture(params=ALL_FRAMEWORKS)
def adapter(request):
    return get_adapter(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
