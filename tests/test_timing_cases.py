"""The cases sized for timing (cases/timing_models.py, tag `timing`): selected by their tag, big
enough that kernels rather than dispatch dominate a call, and in agreement across frameworks like
every built-in case (cases/expected_divergences.toml declares none for them)."""
import warnings

import numpy as np
import pytest

from cases import expected
from harness.define.loader import builtin_cases, select
from harness.judge import coverage
from harness.run.inprocess import adapter, installed, run_case
from harness.worker import observe
from harness.worker.timing import TIMING_TAG, blocked_autorange

TIMING_CASES = [c for c in builtin_cases() if TIMING_TAG in c.tags]
INSTALLED = frozenset(installed())


def test_the_timing_tag_selects_the_timing_cases():
    assert [c.name for c in select(TIMING_TAG)] == ["timing_mlp", "timing_convnet", "timing_attention"]
    assert all("default" not in c.tags and "quick" not in c.tags for c in TIMING_CASES)   # the default run stays short


def test_a_timing_case_keeps_kernels_busy_not_dispatch():
    """Each takes many times a dispatch-bound case's time per forward+backward (torch eager, the
    same process and moment, so a loaded machine slows both alike)."""
    if "torch" not in INSTALLED:
        pytest.skip("torch not installed")
    a = adapter("torch")

    def median(case):
        problem = observe.Problem(a, case, "float32", seed=0)
        call = a.grad_fn(problem.f, False)
        return blocked_autorange(lambda: call(*problem.xs), a.sync, min_run_time=0.1).median

    dispatch = median(next(c for c in builtin_cases() if c.name == "linear_mse"))
    for case in TIMING_CASES:
        # timing_mlp measured 9.4x during a full suite run on 2 cores: 5x leaves room for a loaded machine
        took = median(case)
        assert took > 5 * dispatch, (case.name, took, dispatch)


@pytest.mark.parametrize("case", TIMING_CASES, ids=[c.name for c in TIMING_CASES])
def test_a_timing_case_agrees_across_frameworks(case):
    if not INSTALLED:
        pytest.skip("no framework installed")
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        records = run_case(case, dtypes=("float64", "float32"), observations=rows)
    entries = [e for e in expected.load() if e.case == case.name]
    assert entries == [], "a case for timing must agree everywhere: no expected divergence"
    bad = [f"{r['check']} {r['framework']} {r.get('other_framework') or ''} {r['dtype']} {r['param']}: "
           f"{r['verdict']} {r.get('max_rel_err')} {r.get('cause')} {r.get('message') or ''}"
           for r in records if r["verdict"] != "pass"]
    assert not bad, "\n".join(bad)
    assert coverage.gaps(records, rows, {case.name: case}) == []
    assert coverage.extras(records, rows, {case.name: case}) == []
    ran = {r["framework"] for r in records}
    assert ran == set(case.frameworks(INSTALLED))
    assert {r["framework"] for r in records if r["check"] == "fd"} == ran
    if len(ran) > 1:
        assert len({(r["framework"], r["other_framework"]) for r in records if r["check"] == "pairwise"}) == \
            len(ran) * (len(ran) - 1) // 2
    assert np.isfinite([r["max_rel_err"] for r in records if r["check"] == "pairwise"]).all()
