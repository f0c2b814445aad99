"""The completeness invariant (harness.judge.coverage): every check a run's observations imply has a
record; one that cannot be made is an `error` or `skipped` record with the reason, never dropped."""
import numpy as np
import pytest

from harness import Case
from harness.define.loader import builtin_cases
from harness.judge import coverage
from harness.judge import own_checks, verdicts
from harness.run.inprocess import installed, run_case

NOT_RECORDED = "planned check not recorded"
#: the library cases the op suite (test_case_library) and the model suite (test_models) do not run
BASIC = [c for c in builtin_cases() if c.name in ("linear_mse", "mlp_tanh", "mlp_wide", "softmax_xent")]


def _rows(tmp_path, fw, grads, *, status="ok", value=1.0, dtype="float64", reason=""):
    fname = f"{fw}-{dtype}.npz"
    np.savez(tmp_path / fname, **{f"grad/{k}": v for k, v in grads.items()})
    row = {"case": "c", "framework": fw, "device": "cpu", "dtype": dtype, "mode": "eager", "precision": "default",
           "status": status, "version": "1", "policy": {}, "params": {k: list(np.shape(v)) for k, v in grads.items()},
           "task": {"fd": False, "fd_mode": "auto", "timing": None}}
    if status == "ok":
        row.update(arrays=fname, value=value, nondeterminism=0.0,
                   jvp={"tangent": 1.0, "expected": 1.0, "scale": 1.0})
    else:
        row.update(reason=reason)
    return row


def _only(records, **fields):
    return [r for r in records if all(r.get(k) == v for k, v in fields.items())]


def test_gradients_of_different_shapes_are_an_error_not_a_silent_pass(tmp_path):
    rows = [_rows(tmp_path, "jax", {"a": np.array(1.0)}), _rows(tmp_path, "torch", {"a": np.array([0.0])})]
    (rec,) = _only(verdicts.build_records(rows, {}, tmp_path), check="pairwise")
    assert rec["verdict"] == "error" and "shapes () (jax float64 eager) vs (1,) (torch float64 eager)" in rec["message"]


def test_a_parameter_missing_on_one_side_is_an_error(tmp_path):
    rows = [_rows(tmp_path, "jax", {"a": np.ones(2), "b": np.ones(2)}), _rows(tmp_path, "torch", {"a": np.ones(2)})]
    recs = _only(verdicts.build_records(rows, {}, tmp_path), check="pairwise")
    assert [(r["param"], r["verdict"]) for r in recs] == [("a", "pass"), ("b", "error")]
    assert "torch float64 eager has no gradient for it" in recs[1]["message"]


def test_a_comparison_with_a_failed_task_is_recorded_with_its_reason(tmp_path):
    rows = [_rows(tmp_path, "jax", {"a": np.ones(2)}),
            _rows(tmp_path, "torch", {}, status="error", reason="RuntimeError: boom"),
            _rows(tmp_path, "jax", {"a": np.ones(2)}, dtype="float32"),
            _rows(tmp_path, "torch", {}, status="error", reason="RuntimeError: boom", dtype="float32")]
    records = verdicts.build_records(rows, {}, tmp_path)
    skipped = _only(records, verdict="skipped")
    assert {(r["check"], r["dtype"]) for r in skipped} == {(c, d) for c in ("pairwise", "forward")
                                                           for d in ("float64", "float32")}
    assert all("torch float64" in r["message"] or "torch float32" in r["message"] for r in skipped)
    assert all("RuntimeError: boom" in r["message"] for r in skipped)
    assert not [r for r in records if NOT_RECORDED in (r.get("message") or "")]


def test_a_check_dropped_by_the_judge_becomes_an_error_record(tmp_path, monkeypatch):
    rows = [_rows(tmp_path, "jax", {"a": np.ones(2)}), _rows(tmp_path, "torch", {"a": np.ones(2)})]
    assert not [r for r in verdicts.build_records(rows, {}, tmp_path) if r["verdict"] != "pass"]
    monkeypatch.setattr(own_checks, "_jvp", lambda o, tol: [])
    gaps = [r for r in verdicts.build_records(rows, {}, tmp_path) if r["verdict"] != "pass"]
    assert [(r["check"], r["framework"], r["verdict"]) for r in gaps] == [("jvp", "jax", "error"), ("jvp", "torch", "error")]
    assert all(NOT_RECORDED in r["message"] for r in gaps)


def _scalar_make(rng):
    return {"a": np.array(0.0), "b": np.array([0.5])}, {}


def test_a_scalar_parameter_at_a_kink_is_compared_across_frameworks():
    """abs'(0): torch and TF give 0, JAX 1 -- the pairwise checks of the 0-d parameter must say so
    (they were dropped when torch returned its gradient as shape (1,)); the 0-d parameter meets a
    1-element one without a shape error."""
    frameworks = [fw for fw in ("torch", "jax") if fw in installed()]
    if len(frameworks) < 2:
        pytest.skip("needs torch and jax")
    case = Case("scalar_kink", make=_scalar_make, loss=lambda ops, p, i: ops.sum(ops.add(ops.abs(p["a"]), p["b"])))
    records = run_case(case, frameworks=frameworks, dtypes=("float64",))
    pair = {r["param"]: r for r in _only(records, check="pairwise")}
    assert set(pair) == {"a", "b"}
    assert pair["a"]["verdict"] == "diverge" and pair["a"]["cause"] == "nondiff-convention"
    assert pair["b"]["verdict"] == "pass"
    assert not _only(records, check="run")


@pytest.mark.parametrize("case", BASIC, ids=[c.name for c in BASIC])
def test_the_records_of_a_library_case_cover_exactly_its_checks(case):
    """Over every framework, float64 + float32: no gap, and no record the observations do not
    imply (the op and model suites assert the same for the rest of the library)."""
    rows = []
    records = run_case(case, observations=rows)
    assert not [r for r in records if NOT_RECORDED in (r.get("message") or "")]
    assert coverage.gaps(records, rows, {case.name: case}) == []
    assert coverage.extras(records, rows, {case.name: case}) == []
    checks = {r["check"] for r in records}
    assert {"determinism", "jvp", "fd", "reference", "pairwise", "forward"} <= checks


def test_harness_report_flags_a_check_missing_from_the_results(tmp_path):
    import json

    from tests.helpers import harness

    run = tmp_path / "run"
    proc = harness("run", "--cases", "linear_mse", "--frameworks", "torch", "--dtypes", "float64", "--timing", "off",
                   "--quiet", "--out", run)
    assert proc.returncode in (0, 1), proc.stderr
    results = run / "results.jsonl"
    lines = results.read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["check"] != "jvp"]
    assert len(kept) == len(lines) - 1
    results.write_text("\n".join(kept) + "\n")
    proc = harness("report", run)
    assert proc.returncode == 0, proc.stderr
    assert "1 check(s) the observations imply have no record" in proc.stderr
    assert NOT_RECORDED in (run / "report.md").read_text()
