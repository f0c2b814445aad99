"""`harness compare`: each planted change between two synthetic runs is found, and nothing else."""
import json
from pathlib import Path

import numpy as np
import pytest

from harness.render import diff_report, run_diff
from harness.store import runs
from tests.helpers import harness, planted_runs

DATA = Path(__file__).parent / "data" / "golden"


def _write(folder: Path, records, run_id):
    folder.mkdir(parents=True)
    meta = json.loads((DATA / "run.json").read_text())
    meta["run_id"] = run_id
    (folder / "run.json").write_text(json.dumps(meta))
    with open(folder / "results.jsonl", "w") as fh:
        for r in records:
            fh.write(json.dumps(dict(r, run_id=run_id)) + "\n")


@pytest.fixture
def two_runs(tmp_path):
    # planted: one timing 50% slower, one pairwise error grown, one fd verdict flipped (tests.helpers)
    old, new = planted_runs()
    new = [r for r in new if r["case"] != "op_relu"]                               # planted: a removed case
    new += [dict(r, case="op_relu_v2") for r in old if r["case"] == "op_relu"]     # planted: a new case
    _write(tmp_path / "old", old, "old-run")
    _write(tmp_path / "new", new, "new-run")
    return tmp_path / "old", tmp_path / "new"


def test_compare_finds_each_planted_change_and_nothing_else(two_runs):
    old, new = (runs.load(p) for p in two_runs)
    d = run_diff.compare_runs(old, new)
    assert [(o["case"], o["check"], o["framework"], o["verdict"], n["verdict"]) for o, n in d.flipped] == [
        ("op_max_ties", "fd", "jax", "pass", "diverge")]
    assert [(n["case"], n["check"], n["dtype"], n["param"]) for _o, n, _c, _a in d.moved] == [
        ("linear_mse", "pairwise", "float32", "weight")]
    assert d.cases_added == ["op_relu_v2"] and d.cases_removed == ["op_relu"]
    assert [(e["new"]["case"], e["new"]["framework"], e["new"]["dtype"], e["new"]["param"]) for e in d.slower] == [
        ("linear_mse", "torch", "float32", "forward+backward")]
    assert d.slower[0]["ratio"] == pytest.approx(1.5) and d.slower[0]["p"] < 1e-4
    assert not d.faster and not d.checks_added and not d.checks_removed and not d.gradients
    assert d.gradients_compared is None          # results only: no arrays to compare
    text = diff_report.render(d)
    for needle in ("op_max_ties", "pass → **diverge**", "Errors that moved beyond tolerance (1)", "`op_relu_v2`",
                   "Removed (1): `op_relu`", "### Slower (1)", "×1.50 (+50%)"):
        assert needle in text, needle


def test_compare_exit_codes_follow_fail_on(two_runs, tmp_path):
    old, new = two_runs
    proc = harness("compare", old, new, "--out", tmp_path / "run_diff.md")
    assert proc.returncode == 1 and "**Fails**" in proc.stdout
    assert (tmp_path / "run_diff.md").read_text() == proc.stdout
    assert harness("compare", old, new, "--fail-on", "none").returncode == 0
    assert harness("compare", old, new, "--fail-on", "slowdown=60%").returncode == 0
    assert harness("compare", old, new, "--fail-on", "slowdown=10%").returncode == 1
    assert harness("compare", old, new, "--fail-on", "removed").returncode == 1
    proc = harness("compare", old, new, "--fail-on", "speed")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def test_a_run_compared_with_itself_changes_nothing(two_runs):
    old, _ = two_runs
    proc = harness("compare", old, old, "--fail-on", "divergence,change,slowdown=0%,removed")
    assert proc.returncode == 0, proc.stdout
    assert "No change" in proc.stdout


def test_timing_noise_alone_is_not_a_change():
    rng = np.random.default_rng(0)
    a = list(1e-3 * (1 + 0.05 * rng.standard_normal(15)))
    b = list(1e-3 * (1 + 0.05 * rng.standard_normal(15)))
    assert run_diff.mann_whitney_p(a, b) > 0.01
    assert run_diff.mann_whitney_p(a, [x * 2 for x in a]) < 1e-4


def test_mann_whitney_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    for shift in (0.0, 0.3, 1.0):
        a, b = rng.normal(size=12), rng.normal(loc=shift, size=17)
        ref = stats.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic").pvalue
        assert run_diff.mann_whitney_p(a, b) == pytest.approx(ref, rel=1e-6)
